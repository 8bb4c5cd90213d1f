"""Speed of hardware_interface's whole-safe-set check per command, against its control period.

    .venv/bin/python -m bench.bench_safe_set_filter [--robot ROBOT_YAML] [--repeats N]

The states and commands are a foreign script's (damped least squares toward the fixture centre)
run through the CommandGate in MuJoCo, so they include commands passed unchanged (far from the
zones) and refused ones (scaled down or braked at the boundary). Each pair is timed `repeats`
times in one process, one thread; prints p50/p99 per kind and writes
bench/results/safe_set_filter.json with whether 100 Hz (10 ms) and 500 Hz (2 ms) arms fit.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from bench.peers.common import machine_info
from ssq_ros.safety.command_filter import CommandGate, CommandLimitsConfig, JointLimits
from ssq_ros.safety.safe_set_filter import SafeSetFilter
from ssq_ros.safety.support import SupportCheck
from ssq_ros.sim.env import make_setup
from ssq_ros.sim.simulator import ArmSimulator

RESULTS = Path(__file__).resolve().parent / 'results' / 'safe_set_filter.json'
CONTROL_RATE, ACTUATION_DELAY = 100.0, 0.01  # config/hardware.yaml's defaults


def scripted_pairs(setup, steps: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(q, qdot, command) met by the gate while a script steers the hand into the fixture."""
    period = setup.config.physics.control_period
    support = SupportCheck(setup.safe_set, setup.support.config, period)
    limits = JointLimits.from_robot(setup.robot, CommandLimitsConfig(velocity_scale=1.0))
    gate = CommandGate(limits, period, 1.0, 1.0, safe_set_filter=SafeSetFilter(support))
    sim = ArmSimulator(setup.robot, setup.scene, setup.config.physics)
    sim.reset(setup.robot.home)
    kin = setup.safe_set.kinematics
    fixture = next(z for z in setup.safe_set.config.keep_out_boxes if z.name == 'fixture')
    pairs = []
    for k in range(steps):
        q, qdot = sim.q, sim.qdot
        error = np.array(fixture.center) - kin.ee_position(q)
        jac = kin.ee_jacobian(q)[:3]
        command = jac.T @ np.linalg.solve(jac @ jac.T + 1e-4 * np.eye(3),
                                          0.2 * error / np.linalg.norm(error))
        pairs.append((q, qdot, command))
        gate.update_state(q, k * period, qdot)
        gate.submit(command, k * period)
        sim.step(gate.step(k * period).velocity)
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--robot', default=None, help='robot yaml (default config/robot.yaml)')
    parser.add_argument('--steps', type=int, default=300, help='control periods of the script')
    parser.add_argument('--repeats', type=int, default=5, help='timings per (state, command)')
    parser.add_argument('--out', type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    setup = make_setup(robot=args.robot)
    period = 1.0 / CONTROL_RATE
    shield = SafeSetFilter(SupportCheck(setup.safe_set, setup.support.config,
                                        SafeSetFilter.check_period(period, ACTUATION_DELAY)))
    pairs = scripted_pairs(setup, args.steps)
    times: dict[str, list[float]] = {'passed': [], 'scaled': [], 'braked': []}
    rest = np.zeros(setup.robot.dof)
    for q, qdot, command in pairs:
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = shield.filter(q, qdot, command, rest, ACTUATION_DELAY)
            elapsed = time.perf_counter() - start
            kind = 'passed' if result.scale == 1.0 else 'braked' if result.scale == 0 else \
                'scaled'
            times[kind].append(elapsed * 1e3)
    every = [t for values in times.values() for t in values]
    summary = {kind: {'count': len(v), 'p50_ms': float(np.percentile(v, 50)),
                      'p99_ms': float(np.percentile(v, 99))}
               for kind, v in times.items() if v}
    summary['all'] = {'count': len(every), 'p50_ms': float(np.percentile(every, 50)),
                      'p99_ms': float(np.percentile(every, 99))}
    p99 = summary['all']['p99_ms']
    record = {'command': '.venv/bin/python -m bench.bench_safe_set_filter',
              'machine': machine_info(1), 'robot': args.robot or 'config/robot.yaml',
              'spheres': len(setup.robot.sphere_names),
              'constraints': len(setup.safe_set.names),
              'control_rate_hz': CONTROL_RATE, 'actuation_delay_s': ACTUATION_DELAY,
              'timings': summary,
              'fits_100_hz': p99 < 10.0, 'fits_500_hz': p99 < 2.0}
    print(f'{"kind":8s} {"count":>6s} {"p50 ms":>8s} {"p99 ms":>8s}')
    for kind, row in summary.items():
        print(f'{kind:8s} {row["count"]:6d} {row["p50_ms"]:8.3f} {row["p99_ms"]:8.3f}')
    print(f'p99 {p99:.3f} ms: 100 Hz (10 ms) {"fits" if p99 < 10 else "does NOT fit"}, '
          f'500 Hz (2 ms) {"fits" if p99 < 2 else "does NOT fit"}; '
          f'load average {os.getloadavg()[0]:.2f}')
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + '\n')
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
