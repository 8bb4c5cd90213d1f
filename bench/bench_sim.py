"""Simulation and safety-layer throughput: env steps/s against raw mj_step, support-check cost,
FK/Jacobian cost. Prints a table and writes bench/results/sim.json.

    .venv/bin/python bench/bench_sim.py [--quick]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import mujoco
import numpy as np
import pinocchio as pin

from ssq_ros.sim.env import ReachAvoidEnv, make_setup
from ssq_ros.sim.scene import Scene
from ssq_ros.training.config import load_run_config
from ssq_ros.training.provenance import provenance

RESULTS = Path(__file__).resolve().parent / 'results' / 'sim.json'


def per_call(function: Callable[[], object], repeats: int) -> float:
    """Median seconds per call over 5 rounds of `repeats` calls."""
    function()
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeats):
            function()
        rounds.append((time.perf_counter() - start) / repeats)
    return float(np.median(rounds))


def raw_physics(scene: Scene, steps: int) -> float:
    """mj_step calls per second on the same model, with the arm moving under its servos."""
    data = mujoco.MjData(scene.model)
    data.ctrl[scene.actuator_index] = 0.2
    start = time.perf_counter()
    for _ in range(steps):
        mujoco.mj_step(scene.model, data)
    return steps / (time.perf_counter() - start)


def env_throughput(env: ReachAvoidEnv, steps: int) -> float:
    env.reset(seed=0)
    env.action_space.seed(0)
    start = time.perf_counter()
    for _ in range(steps):
        *_, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='fewer repeats (smoke run)')
    args = parser.parse_args()
    scale = 0.1 if args.quick else 1.0
    setup = make_setup()
    robot, kinematics, support = setup.robot, setup.safe_set.kinematics, setup.support
    rng = np.random.default_rng(0)
    results: dict = {'machine': platform.processor() or platform.machine(),
                     'control_period_s': setup.config.physics.control_period,
                     'physics_timestep_s': setup.config.physics.timestep}

    physics_steps = int(50_000 * scale)
    results['raw_mj_step_per_s'] = raw_physics(setup.scene, physics_steps)
    substeps = round(setup.config.physics.control_period / setup.config.physics.timestep)
    results['raw_physics_control_periods_per_s'] = results['raw_mj_step_per_s'] / substeps
    env_steps = int(2000 * scale)
    for discrete, stride in ((True, setup.config.physics.referee_stride), (True, 1),
                             (False, setup.config.physics.referee_stride)):
        env = ReachAvoidEnv(discrete, setup=setup)
        env.sim.physics = dataclasses.replace(env.sim.physics, referee_stride=stride)
        name = f'env_steps_per_s_{"discrete" if discrete else "continuous"}_stride{stride}'
        results[name] = env_throughput(env, env_steps)

    q = robot.home + rng.uniform(-0.3, 0.3, robot.dof)
    qdot = np.zeros(robot.dof)
    discrete_commands = setup.cartesian.discrete_commands(q)
    continuous_commands = setup.cartesian.to_joint(q, rng.uniform(-0.15, 0.15, (16, 3)))
    repeats = max(int(200 * scale), 5)
    results['support_check_us_discrete_13'] = 1e6 * per_call(
        lambda: support.is_safe(q, qdot, discrete_commands), repeats)
    results['support_check_us_continuous_16'] = 1e6 * per_call(
        lambda: support.is_safe(q, qdot, continuous_commands), repeats)
    samples = support.config.period_samples + support.config.braking_samples
    results['support_check_configurations_per_candidate'] = samples
    for batch in (1, 100, 1000):
        qs = robot.home + rng.uniform(-0.3, 0.3, (batch, robot.dof))
        results[f'fk_spheres_us_batch{batch}'] = 1e6 * per_call(
            lambda qs=qs: kinematics.sphere_positions(qs), repeats)
    results['ee_jacobian_us'] = 1e6 * per_call(lambda: kinematics.ee_jacobian(q), repeats * 5)
    data = robot.model.createData()
    results['pinocchio_frames_fk_us'] = 1e6 * per_call(
        lambda: pin.framesForwardKinematics(robot.model, data, q), repeats * 5)
    goal = np.array([0.6, 0.2, 0.3])
    for discrete in (True, False):
        controller = setup.behavior_controller(discrete)
        results[f'behavior_act_ms_{"discrete" if discrete else "continuous"}'] = 1e3 * per_call(
            lambda c=controller: c.act(q, qdot, rng, goal), max(repeats // 2, 5))

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    # make_setup() above builds the package's default experiment: its hash goes with the numbers.
    results.update(provenance(load_run_config('')))
    RESULTS.write_text(json.dumps(results, indent=2) + '\n')
    width = max(len(k) for k in results)
    for key, value in results.items():
        shown = f'{value:,.6g}' if isinstance(value, float) else value
        print(f'{key:<{width}}  {shown}')
    print(f'wrote {RESULTS}')


if __name__ == '__main__':
    main()
