"""How many control steps the scripted oracle needs on the held-out episodes: is `task.max_steps`
long enough for the goals to be reachable at all at a given primitive speed?

    .venv/bin/python -m bench.bench_reach_time [--speeds 0.15 0.25 0.3] [--episodes 30]
                                               [--config tasks/wall.yaml]

The oracle (ssq_ros.control.oracle) plans the hand's way around the zones and takes, at each
step, the discrete primitive mu's support allows that follows the plan best (so it never leaves
S). It is not optimal, only a reference: a goal it reaches in N steps is reachable in N steps.
Prints a table and writes bench/results/reach_time.json (the numbers behind the sim defaults'
actions.speed and task.max_steps, ssq_ros/task/config.py; another --config writes
reach_time_<name>.json).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from ssq_ros.training.config import TrainConfig, load_run_config
from ssq_ros.training.evaluate import Actor, heldout_episode_seed, oracle_actor
from ssq_ros.training.problem import ArmProblem, build_problem
from ssq_ros.training.provenance import provenance

RESULTS = Path(__file__).resolve().parent / 'results'


def oracle_steps(problem: ArmProblem, act: Actor, seed: int, limit: int) -> int | None:
    """Control steps the oracle (`act`) needs to reach the goal of held-out episode `seed`, or
    None if it does not within `limit`."""
    rng = np.random.default_rng(seed)
    obs, _ = problem.env.reset(seed=seed)
    for step in range(1, limit + 1):
        obs, _, reached, _, _ = problem.env.step(act(obs, rng).action)
        if reached:
            return step
    return None


def with_speed(config: TrainConfig, speed: float) -> TrainConfig:
    actions = dataclasses.replace(config.sim.actions, speed=speed)
    return dataclasses.replace(config, sim=dataclasses.replace(config.sim, actions=actions))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--speeds', type=float, nargs='+', default=[0.15, 0.25, 0.3])
    parser.add_argument('--episodes', type=int, default=30)
    parser.add_argument('--config', default='', help="experiment yaml ('': train_sim.yaml)")
    parser.add_argument('--limit', type=int, default=600, help='steps tried per episode')
    args = parser.parse_args(argv)
    base = load_run_config(args.config)
    rows = []
    for speed in args.speeds:
        problem = build_problem(with_speed(base, speed))
        act = oracle_actor(problem)
        started = time.monotonic()
        steps = [oracle_steps(problem, act, heldout_episode_seed(i), args.limit)
                 for i in range(args.episodes)]
        reached = np.array([s for s in steps if s is not None])
        row = {'speed': speed, 'episodes': args.episodes, 'reached': int(reached.size),
               'median_steps': float(np.median(reached)) if reached.size else None,
               'max_steps_needed': int(reached.max()) if reached.size else None,
               'within': {str(n): int(np.sum(reached <= n)) for n in (140, 200, 250, 300)},
               'steps': steps, 'wall_s': time.monotonic() - started}
        rows.append(row)
        print(f'speed {speed:.2f} m/s: reached {row["reached"]}/{args.episodes}, median '
              f'{row["median_steps"]} steps; within 140/200/250/300 steps: '
              + '/'.join(str(row['within'][n]) for n in ('140', '200', '250', '300')),
              flush=True)
    command = 'python -m bench.bench_reach_time --speeds ' + ' '.join(map(str, args.speeds)) \
        + f' --episodes {args.episodes}' + (f' --config {args.config}' if args.config else '')
    result = {'command': command, 'task_max_steps': base.sim.task.max_steps, 'rows': rows}
    RESULTS.mkdir(exist_ok=True)
    result.update(provenance(base))
    name = 'reach_time.json' if not args.config else \
        f'reach_time_{Path(args.config).stem}.json'
    (RESULTS / name).write_text(json.dumps(result, indent=2) + '\n')
    print(f'wrote {RESULTS / name}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
