"""The shield's envelope against a servo that is not its model: mu alone and a trained policy
behind the shield, on held-out episodes, through a matrix of actuation latency x servo lag x
state noise (physics options, docs/safety.md "When the servo is not the model"). The referee
judges every 2 ms physics state (`--mismatch` adds an unmodelled payload and rotor inertia).
Writes bench/results/servo_envelope.json and prints a table.

    .venv/bin/python bench/bench_servo_envelope.py [--run runs/arms/ssq_arm/train]
        [--episodes 2] [--workers 2] [--subset] [--train-steps 3000]

--run names a run folder of ssq-train (config.yaml and policy.pt); the bench runs mu and the
policy on that run's experiment. Without policy.pt there, it trains one first (`ssq-train
--steps --train-steps --out RUN`). Both controllers decide on the measured state (the env's
joint_state), the support check keeps its ideal model (no latency, no lag, no noise).
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import subprocess
import sys
import time
from collections import Counter
from multiprocessing import get_context
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / 'results' / 'servo_envelope.json'
DEFAULT_RUN = Path('runs/arms/ssq_arm/train')
LATENCIES = (0.0, 0.008, 0.02, 0.05)
LAGS = (0.0, 0.02, 0.05)
NOISES = (0.0, 0.003, 0.01)
STRESS_LATENCIES = (0.1, 0.2)
STRESS_LAGS = (0.1, 0.2)
STRESS_NOISES = (0.03,)
# Plant mismatch (--mismatch): an unmodelled payload [kg] and the true rotor inertia's multiple.
PAYLOADS = (1.0, 3.0, 5.0)
ARMATURE_SCALES = (5.0, 20.0)
IDEAL_CELL = (0.0, 0.0, 0.0, 0.0, 1.0)
CONTROLLERS = ('mu', 'policy')
_SETUPS: dict = {}  # per worker process: (run folder, payload, armature) -> ReachAvoidSetup


class CountingReferee:
    """The env's referee, counting every state it judges (every physics step here), and
    keeping each true state for the safe set S of the support check (judged in batches)."""

    def __init__(self, referee, scene):
        self.referee = referee
        self.scene = scene
        self.q: list[np.ndarray] = []
        self.qdot: list[np.ndarray] = []
        self.states = 0
        self.unsafe = 0
        self.by_constraint: Counter = Counter()
        self.min_margin = math.inf
        self.min_constraint = ''

    def judge(self, data):
        verdict = self.referee.judge(data)
        self.states += 1
        self.q.append(data.qpos[self.scene.qpos_index].copy())
        self.qdot.append(data.qvel[self.scene.dof_index].copy())
        if verdict.unsafe:
            self.unsafe += 1
            self.by_constraint[verdict.constraint] += 1
        if verdict.min_margin < self.min_margin:
            self.min_margin, self.min_constraint = verdict.min_margin, verdict.constraint
        return verdict

    def safe_set_margins(self, safe_set, chunk: int = 2000) -> dict:
        """S (the sphere model with its clearances, what the support check certifies) at every
        judged state: states outside, the lowest margin and its constraint, the lowest per
        constraint kind."""
        q, qdot = np.array(self.q), np.array(self.qdot)
        lowest = np.full(len(safe_set.names), np.inf)
        outside = 0
        for start in range(0, len(q), chunk):
            margins = safe_set.margins(q[start:start + chunk], qdot[start:start + chunk])
            lowest = np.minimum(lowest, margins.min(axis=0))
            outside += int((margins.min(axis=1) < 0).sum())
        worst = int(np.argmin(lowest))
        kinds: dict[str, float] = {}
        for name, value in zip(safe_set.names, lowest, strict=True):
            kind = name.split(':')[0]
            kinds[kind] = min(kinds.get(kind, np.inf), float(value))
        return {'states_outside_S': outside, 'min_S_margin': float(lowest[worst]),
                'min_S_constraint': safe_set.names[worst], 'min_S_margin_by_kind': kinds}


def cells(subset: bool, stress: bool) -> list[tuple[float, float, float]]:
    full = list(itertools.product(LATENCIES, LAGS, NOISES))
    if subset:
        # each axis alone, and the corners of latency x lag x noise
        axes = {c for c in full if sum(v > 0 for v in c) <= 1}
        corners = {(a, b, c) for a in (0.02, 0.05) for b in (0.05,) for c in (0.0, 0.01)}
        full = sorted(axes | corners)
    if stress:  # beyond the matrix, each axis alone, to find where the shield gives way
        full += [(a, 0.0, 0.0) for a in STRESS_LATENCIES] + \
            [(0.0, b, 0.0) for b in STRESS_LAGS] + [(0.0, 0.0, c) for c in STRESS_NOISES]
    return full


def tracking_config(bounds: tuple[float, float] | None):
    """hardware_interface's tracking check as config/hardware.yaml sets it (enabled, default
    bounds), or with other (position, velocity) bounds."""
    from ssq_ros.safety.tracking import TrackingConfig
    config = dataclasses.replace(TrackingConfig(), enabled=True)
    if bounds is not None:
        config = dataclasses.replace(config, position_bound=bounds[0], velocity_bound=bounds[1])
    return config


def run_cell(job: tuple) -> dict:
    """One controller in one cell: `episodes` held-out episodes, every physics state judged.

    job = (run, controller, cell, episodes, told[, tracking_stop[, (position_bound,
    velocity_bound)]]). With `tracking_stop`, the
    run-time tracking check of hardware_interface (`TrackingMonitor`, config/hardware.yaml's
    bounds, the support check's latency and lag as its model) watches the measured states and
    the commands, and from its first fault on the arm is sent hold until the episode ends, as
    TRACKING_FAULT_STOP does on a robot."""
    run, controller, cell, episodes, told, *rest = job
    tracking_stop = bool(rest and rest[0])
    # the tracking bounds (position rad, velocity rad/s); None: config/hardware.yaml's
    bounds = rest[1] if len(rest) > 1 and rest[1] is not None else None
    # (latency, lag, noise) or with (payload, armature scale) too; the rest ideal
    latency, lag, noise, payload, armature_scale = tuple(cell) + IDEAL_CELL[len(cell):]
    import torch

    from ssq_ros.deploy.executor import ShieldedExecutor
    from ssq_ros.deploy.export import load_exported_policy
    from ssq_ros.safety.support import SupportCheck
    from ssq_ros.safety.tracking import TrackingMonitor
    from ssq_ros.training.config import load_train_config, resolve_budgets
    from ssq_ros.training.evaluate import (
        Choice,
        behavior_actor,
        evaluate_heldout,
        executor_actor,
    )
    from ssq_ros.training.problem import build_problem
    torch.set_num_threads(1)
    config = resolve_budgets(load_train_config(Path(run) / 'config.yaml'))
    physics = dataclasses.replace(config.sim.physics, referee_stride=1,
                                  actuation_latency=latency, tracking_time_constant=lag,
                                  state_noise=noise, payload_mass=payload,
                                  armature_scale=armature_scale)
    config = dataclasses.replace(config, sim=dataclasses.replace(config.sim, physics=physics))
    # The scene holds the plant (payload body, armature); the servo options act in the stepping.
    scene_key = (run, payload, armature_scale)
    if scene_key not in _SETUPS:
        _SETUPS[scene_key] = build_problem(config).setup
    setup = dataclasses.replace(_SETUPS[scene_key], config=config.sim)
    if told:  # the support check's model is told the servo's latency and lag
        support = dataclasses.replace(setup.support.config, actuation_latency=latency,
                                      tracking_time_constant=lag)
        setup = dataclasses.replace(setup, support=SupportCheck(setup.safe_set, support,
                                                                physics.control_period))
    problem = build_problem(config, setup)
    assert problem.env.sim.physics == physics
    referee = CountingReferee(problem.env.sim.referee, problem.setup.scene)
    problem.env.sim.referee = referee
    if controller == 'mu':
        act = behavior_actor(problem)
    else:
        policy = load_exported_policy(Path(run) / 'policy.pt')
        act = executor_actor(problem, ShieldedExecutor(policy))
    hold_refused = [0]
    inner = act
    support = problem.setup.support
    monitor = TrackingMonitor(problem.setup.robot.joint_names, support.rate,
                              support.config.actuation_latency,
                              support.config.tracking_time_constant,
                              tracking_config(bounds))
    # Faults are counted (an episode's first) with or without tracking_stop; only with it do
    # they stop the arm.
    tracking = {'faults': 0, 'first_fault': '', 'stopped_steps': 0, 'faulted': False}

    def counted(obs, rng):
        env = problem.env
        q, qdot = env.joint_state()
        hold_refused[0] += not support.hold_is_safe(q, qdot, env.in_flight.commands)
        if env.steps == 0:  # a new episode: the arm rests at its start, the latch is reset
            tracking['faulted'] = False
            monitor.reset()
        if not tracking['faulted']:
            fault = monitor.measured(env.sim.measured_stamp, q, qdot)
            if fault is not None:
                tracking['faulted'] = True
                tracking['faults'] += 1
                tracking['first_fault'] = tracking['first_fault'] or str(fault)
        if tracking_stop and tracking['faulted']:
            tracking['stopped_steps'] += 1
            return Choice(problem.stop_action())
        choice = inner(obs, rng)
        monitor.sent(env.sim.time, env.command_for(choice.action))
        return choice

    started = time.monotonic()
    stats = evaluate_heldout(problem, counted, episodes, config.learner.critic.gamma)
    return {'controller': controller, 'support_told': told, 'actuation_latency': latency,
            'tracking_time_constant': lag, 'state_noise': noise, 'payload_mass': payload,
            'armature_scale': armature_scale, 'episodes': episodes,
            'control_steps': stats.steps, 'successes': stats.successes,
            'physics_states_judged': referee.states, 'unsafe_states': referee.unsafe,
            'unsafe_control_periods': stats.unsafe,
            'unsafe_by_constraint': dict(referee.by_constraint),
            'min_margin': referee.min_margin, 'min_margin_constraint': referee.min_constraint,
            'hold_refused': hold_refused[0], 'behavior_fallbacks': stats.behavior_fallbacks,
            'tracking_stop': tracking_stop, 'tracking_faults': tracking['faults'],
            'tracking_bounds': [monitor.config.position_bound, monitor.config.velocity_bound],
            'tracking_first_fault': tracking['first_fault'],
            'tracking_stopped_steps': tracking['stopped_steps'],
            'tracking_worst_position': float(monitor.worst_position.max()),
            'tracking_worst_velocity': float(monitor.worst_velocity.max()),
            'statuses': stats.statuses.as_dict(),
            **referee.safe_set_margins(problem.setup.safe_set),
            'wall_s': round(time.monotonic() - started, 1)}


def ensure_policy(run: Path, steps: int) -> None:
    if (run / 'policy.pt').is_file() and (run / 'config.yaml').is_file():
        return
    print(f'no policy in {run}: training one, ssq-train --steps {steps}', flush=True)
    subprocess.run([str(Path(sys.executable).parent / 'ssq-train'), '--steps', str(steps),
                    '--out', str(run)], check=True)


def table(rows: list[dict]) -> str:
    lines = ['| latency ms | lag ms | noise rad | payload kg | armature x | controller | steps | '
             'physics states | referee unsafe states | min referee margin | states outside S | '
             'min S margin [mm, mrad] | hold refused | tracking faults | reached |',
             '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        unsafe = r['unsafe_states']
        where = ', '.join(f'{k} {v}' for k, v in sorted(r['unsafe_by_constraint'].items()))
        lines.append(
            f"| {r['actuation_latency'] * 1e3:g} | {r['tracking_time_constant'] * 1e3:g} | "
            f"{r['state_noise']:g} | {r.get('payload_mass', 0.0):g} | "
            f"{r.get('armature_scale', 1.0):g} | {r['controller']} | {r['control_steps']} | "
            f"{r['physics_states_judged']} | {'**0**' if unsafe == 0 else f'{unsafe} ({where})'}"
            f" | {r['min_margin'] * 1e3:+.1f} mm ({r['min_margin_constraint']}) | "
            f"{r['states_outside_S']} | {r['min_S_margin'] * 1e3:+.2f} ({r['min_S_constraint']})"
            f" | {r['hold_refused']} | {r.get('tracking_faults', '-')} | "
            f"{r['successes']}/{r['episodes']} |")
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--run', type=Path, default=DEFAULT_RUN,
                        help='ssq-train run folder (config.yaml, policy.pt)')
    parser.add_argument('--episodes', type=int, default=2,
                        help='held-out episodes per controller and cell')
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--subset', action='store_true',
                        help='each axis alone and the corners instead of the full product')
    parser.add_argument('--no-stress', action='store_true',
                        help='leave out the cells beyond the matrix (latency 100, 200 ms; '
                             'lag 100, 200 ms; noise 0.03 rad)')
    parser.add_argument('--tell-support', action='store_true',
                        help="set the support check's actuation_latency and "
                             "tracking_time_constant to the servo's (default: the ideal model)")
    parser.add_argument('--tracking-stop', action='store_true',
                        help="hardware_interface's tracking check stops the arm at its first "
                             'fault in an episode (TRACKING_FAULT_STOP)')
    parser.add_argument('--tracking-bounds', default='',
                        help='position_rad,velocity_rad_s of the tracking check (default: '
                             "config/hardware.yaml's)")
    parser.add_argument('--mismatch', action='store_true',
                        help='add the plant-mismatch cells: payload 1, 3, 5 kg and armature '
                             'x5, x20, each alone')
    parser.add_argument('--cells', default='',
                        help='only these cells: "latency_ms,lag_ms,noise_rad[,payload_kg'
                             '[,armature_scale]];..."')
    parser.add_argument('--train-steps', type=int, default=3000,
                        help='ssq-train budget when --run has no policy yet')
    parser.add_argument('--out', type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    ensure_policy(args.run, args.train_steps)
    grid = cells(args.subset, not args.no_stress)
    if args.mismatch:
        grid += [(0.0, 0.0, 0.0, m, 1.0) for m in PAYLOADS] + \
            [(0.0, 0.0, 0.0, 0.0, a) for a in ARMATURE_SCALES]
    if args.cells:
        grid = []
        for item in args.cells.split(';'):
            values = [float(v) for v in item.split(',')]
            grid.append((values[0] / 1e3, values[1] / 1e3, *values[2:]))
    # the heaviest cells first, so the pool's tail is short
    bounds = tuple(float(v) for v in args.tracking_bounds.split(',')) \
        if args.tracking_bounds else None
    jobs = [(str(args.run), c, cell, args.episodes, args.tell_support, args.tracking_stop,
             bounds)
            for cell in sorted(grid, key=lambda c: -sum(c)) for c in CONTROLLERS]
    rows, started = [], time.monotonic()
    print(f'{len(grid)} cells x {len(CONTROLLERS)} controllers, {args.episodes} held-out '
          f'episodes each, {args.workers} workers', flush=True)
    with get_context('spawn').Pool(args.workers) as pool:
        for row in pool.imap_unordered(run_cell, jobs):
            rows.append(row)
            elapsed = time.monotonic() - started
            eta = elapsed / len(rows) * (len(jobs) - len(rows))
            print(f"[{len(rows)}/{len(jobs)}] latency {row['actuation_latency'] * 1e3:g} ms, "
                  f"lag {row['tracking_time_constant'] * 1e3:g} ms, noise "
                  f"{row['state_noise']:g} rad, payload {row['payload_mass']:g} kg, armature "
                  f"x{row['armature_scale']:g}, {row['controller']}: unsafe "
                  f"{row['unsafe_states']} of {row['physics_states_judged']} states, min "
                  f"{row['min_margin'] * 1e3:+.1f} mm ({row['min_margin_constraint']}), "
                  f"outside S {row['states_outside_S']}, min S "
                  f"{row['min_S_margin'] * 1e3:+.2f} mm; tracking faults "
                  f"{row['tracking_faults']}/{row['episodes']}; "
                  f"elapsed {elapsed:.0f} s, ETA {eta:.0f} s", flush=True)
    rows.sort(key=lambda r: (r['actuation_latency'], r['tracking_time_constant'],
                             r['state_noise'], r['payload_mass'], r['armature_scale'],
                             r['controller']))
    from ssq_ros.training.config import load_train_config, resolve_budgets
    from ssq_ros.training.provenance import provenance
    config = resolve_budgets(load_train_config(args.run / 'config.yaml'))
    result = {**provenance(config), 'run': str(args.run), 'episodes': args.episodes,
              'workers': args.workers, 'subset': args.subset,
              'support_told': args.tell_support, 'tracking_stop': args.tracking_stop,
              'wall_s': round(time.monotonic() - started, 1), 'rows': rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=float) + '\n')
    print(table(rows))
    print(f'wrote {args.out} in {result["wall_s"]:.0f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
