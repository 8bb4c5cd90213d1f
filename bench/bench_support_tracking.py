"""The support check's promise along a policy's states: minimum safe-set margin at every
physics step for mu and for the boundary-hugging driver, without and with the tracking
allowance. Prints a table and writes bench/results/support_tracking.json.

    .venv/bin/python bench/bench_support_tracking.py [--steps 400] [--seeds 3]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from ssq_ros.safety.support import SupportCheck
from ssq_ros.sim.boundary_driver import drive, hugging_chooser
from ssq_ros.sim.env import ReachAvoidSetup, make_setup
from ssq_ros.sim.simulator import ArmSimulator
from ssq_ros.training.config import load_run_config
from ssq_ros.training.provenance import provenance

RESULTS = Path(__file__).resolve().parent / 'results' / 'support_tracking.json'
EPISODE_STEPS = 60


def with_allowance(setup: ReachAvoidSetup, allowance: float) -> ReachAvoidSetup:
    config = dataclasses.replace(setup.support.config, tracking_allowance=allowance)
    support = SupportCheck(setup.safe_set, config, setup.config.physics.control_period)
    return dataclasses.replace(setup, support=support)


def mu_chooser(setup: ReachAvoidSetup, seed: int):
    controller = setup.behavior_controller(discrete=True)
    rng = np.random.default_rng(seed)
    return lambda q, qdot, goal: controller.act(q, qdot, rng, goal).command


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--steps', type=int, default=400, help='decisions per run')
    parser.add_argument('--seeds', type=int, default=3, help='runs per driver and setting')
    args = parser.parse_args()
    base = make_setup()
    physics = base.config.physics
    substeps = int(round(physics.control_period / physics.timestep))
    # One physics step per simulator call, so every physics state is measured.
    fine = dataclasses.replace(physics, control_period=physics.timestep, referee_stride=1)
    drivers = {'mu': None, 'goal_greedy': 0.0, 'boundary_hugging': 20.0}
    settings = {'no_allowance': 0.0, 'configured': base.support.config.tracking_allowance}
    rows = []
    total, done, start = len(drivers) * len(settings) * args.seeds, 0, time.time()
    for setting, allowance in settings.items():
        setup = with_allowance(base, allowance)
        simulator = ArmSimulator(setup.robot, setup.scene, fine)
        for driver, weight in drivers.items():
            for seed in range(args.seeds):
                choose = mu_chooser(setup, seed) if weight is None else \
                    hugging_chooser(setup, weight)
                run = drive(setup, simulator, args.steps, seed, EPISODE_STEPS, choose, substeps)
                rows.append({'setting': setting, 'tracking_allowance': allowance,
                             'driver': driver, 'seed': seed, **dataclasses.asdict(run)})
                done += 1
                rate = (time.time() - start) / done
                print(f'[{done}/{total}] {setting} {driver} seed {seed}: min margin '
                      f'{run.min_margin * 1e3:+.3f} mm ({run.min_margin_constraint}), physics '
                      f'steps outside S {run.states_outside}, referee unsafe '
                      f'{run.referee_unsafe}, hold refused {run.hold_refused}; ETA '
                      f'{rate * (total - done):.0f} s', flush=True)
    print('\nsetting       driver            min margin [mm]  physics steps outside S')
    for setting in settings:
        for driver in drivers:
            chosen = [r for r in rows if r['setting'] == setting and r['driver'] == driver]
            print(f'{setting:13s} {driver:17s} {min(r["min_margin"] for r in chosen) * 1e3:+10.3f}'
                  f'  {sum(r["states_outside"] for r in chosen):8d}')
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    # make_setup() above builds the package's default experiment: its hash goes with the numbers.
    RESULTS.write_text(json.dumps({**provenance(load_run_config('')), 'steps': args.steps,
                                   'seeds': args.seeds,
                                   'episode_steps': EPISODE_STEPS, 'runs': rows}, indent=1))
    print(f'wrote {RESULTS}')


if __name__ == '__main__':
    main()
