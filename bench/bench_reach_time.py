"""How many control steps a scripted detour needs on the held-out episodes: is `task.max_steps`
long enough for the goals to be reachable at all at a given primitive speed?

    .venv/bin/python -m bench.bench_reach_time [--speeds 0.15 0.25 0.3] [--episodes 30]

The detour lifts the hand above the zones (`--lift-height`), crosses to above the goal and
descends, each leg with the discrete primitive the support check allows that points closest to
the way-point (so it never leaves S). It is not optimal, only a reference: a goal it reaches in
N steps is reachable in N steps. Prints a table and writes bench/results/reach_time.json (the
numbers behind the sim defaults' actions.speed and task.max_steps, ssq_ros/task/config.py).
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ssq_ros.sim.env import ReachAvoidEnv, make_setup
from ssq_ros.training.config import load_run_config
from ssq_ros.training.evaluate import heldout_episode_seed
from ssq_ros.training.provenance import provenance

RESULTS = Path(__file__).resolve().parent / 'results'
WAYPOINT_RADIUS = 0.03  # m: a way-point counts as passed this close
HOLD_SCORE = -0.5       # hold is chosen only when every motion points away from the way-point
SLOW_NEAR = 0.02        # m: within this of a way-point the slow primitives are preferred
SLOW_BONUS = 0.5


def detour_steps(env: ReachAvoidEnv, seed: int, lift_height: float, limit: int) -> int | None:
    """Control steps the scripted detour needs to reach the goal of held-out episode `seed`,
    or None if it does not within `limit`."""
    env.reset(seed=seed)
    setup = env.setup
    controller = setup.behavior_controller(discrete=True)
    directions = setup.cartesian.directions
    norms = np.maximum(np.linalg.norm(directions, axis=1), 1e-9)
    slow = np.linalg.norm(directions, axis=1) < setup.config.actions.speed - 1e-9
    start, goal = env.sim.ee_position().copy(), env.goal.copy()
    waypoints = [np.array([start[0], start[1], max(lift_height, start[2])]),
                 np.array([goal[0], goal[1], max(lift_height, goal[2])]), goal]
    leg = 0
    for step in range(1, limit + 1):
        hand = env.sim.ee_position()
        while leg < len(waypoints) - 1 and \
                np.linalg.norm(waypoints[leg] - hand) < WAYPOINT_RADIUS:
            leg += 1
        offset = waypoints[leg] - hand
        distance = max(np.linalg.norm(offset), 1e-9)
        q, qdot = env.joint_state()
        allowed, _, _, _ = controller.discrete_support(q, qdot)
        score = directions @ offset / distance / norms
        score[setup.cartesian.hold_index] = HOLD_SCORE
        if distance < SLOW_NEAR:
            score = score + SLOW_BONUS * slow
        action = int(np.argmax(np.where(allowed, score, -np.inf)))
        _, _, reached, _, _ = env.step(action)
        if reached:
            return step
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--speeds', type=float, nargs='+', default=[0.15, 0.25, 0.3])
    parser.add_argument('--episodes', type=int, default=30)
    parser.add_argument('--lift-height', type=float, default=0.45,
                        help='m above the table: clears the fixture with the arm\'s spheres')
    parser.add_argument('--limit', type=int, default=600, help='steps tried per episode')
    args = parser.parse_args(argv)
    base = make_setup()
    rows = []
    for speed in args.speeds:
        config = replace(base.config, actions=replace(base.config.actions, speed=speed))
        setup = make_setup(config=config)
        env = ReachAvoidEnv(discrete=True, setup=setup)
        started = time.monotonic()
        steps = [detour_steps(env, heldout_episode_seed(i), args.lift_height, args.limit)
                 for i in range(args.episodes)]
        reached = np.array([s for s in steps if s is not None])
        row = {'speed': speed, 'episodes': args.episodes, 'reached': int(reached.size),
               'median_steps': float(np.median(reached)) if reached.size else None,
               'max_steps_needed': int(reached.max()) if reached.size else None,
               'within': {str(n): int(np.sum(reached <= n)) for n in (200, 250, 300)},
               'steps': steps, 'wall_s': time.monotonic() - started}
        rows.append(row)
        print(f'speed {speed:.2f} m/s: reached {row["reached"]}/{args.episodes}, median '
              f'{row["median_steps"]} steps; within 200/250/300 steps: '
              f'{row["within"]["200"]}/{row["within"]["250"]}/{row["within"]["300"]}',
              flush=True)
    result = {'command': 'python -m bench.bench_reach_time --speeds '
                         + ' '.join(map(str, args.speeds)) + f' --episodes {args.episodes}',
              'task_max_steps': base.config.task.max_steps, 'lift_height': args.lift_height,
              'rows': rows}
    RESULTS.mkdir(exist_ok=True)
    # make_setup() above builds the package's default experiment: its hash goes with the numbers.
    result.update(provenance(load_run_config('')))
    (RESULTS / 'reach_time.json').write_text(json.dumps(result, indent=2) + '\n')
    print(f'wrote {RESULTS / "reach_time.json"}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
