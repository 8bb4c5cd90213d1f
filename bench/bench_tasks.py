"""The task suite's baselines: on every task of config/tasks/, held-out success of mu executed
greedily and sampled (goal preference 2.0 and 0.0) and of the scripted oracle
(ssq_ros.control.oracle), each on the same held-out episodes (`evaluate_heldout`).

    .venv/bin/python -m bench.bench_tasks [--episodes 100] [--tasks wall ushape] [--plot]
                                          [--plot-only] [--out JSON]

Prints a progress line per (task, executor) and writes bench/results/task_baselines.json with
the code's git commit and each task's config hash; `--plot` draws each task's zones, goal box
and one oracle path to docs/img/tasks.png. The criterion of issue 14 for a hard task: greedy
and sampled mu (goal preference 2.0) at most 30 %, the oracle at least 95 % (docs/tasks.md).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from ssq_ros.paths import config_path
from ssq_ros.training.config import TrainConfig, load_run_config
from ssq_ros.training.evaluate import (
    behavior_actor,
    evaluate_heldout,
    greedy_behavior_actor,
    heldout_episode_seed,
    oracle_actor,
)
from ssq_ros.training.problem import build_problem
from ssq_ros.training.provenance import provenance

RESULTS = Path(__file__).resolve().parent / 'results'
PLOT = Path(__file__).resolve().parents[1] / 'docs' / 'img' / 'tasks.png'
TASKS = ('easy', 'wall', 'ushape', 'window', 'costly')
GOAL_PREFERENCES = (2.0, 0.0)
# The discounted return is not reported here; gamma only matters for calibration.
GAMMA = 0.98


def task_config(name: str) -> TrainConfig:
    return load_run_config(config_path(f'tasks/{name}.yaml'))


def with_goal_preference(config: TrainConfig, preference: float) -> TrainConfig:
    """The task's config with mu as the suite's bar measures it: a goal preference and none
    of the task's exploration prior (persistence), whatever mu the task's learner starts from."""
    behavior = dataclasses.replace(config.sim.behavior, goal_preference=preference,
                                   persistence=0.0)
    return dataclasses.replace(config, sim=dataclasses.replace(config.sim, behavior=behavior))


def measure(config: TrainConfig, executor: str, episodes: int) -> dict:
    """success rate, mean return, mean steps and unsafe states of one executor."""
    problem = build_problem(config)
    act = {'greedy': greedy_behavior_actor, 'sampled': behavior_actor,
           'oracle': oracle_actor}[executor](problem)
    started = time.monotonic()
    stats = evaluate_heldout(problem, act, episodes, GAMMA)
    return {'success_rate': stats.success_rate, 'return': stats.mean_return,
            'mean_steps': stats.steps / stats.episodes, 'unsafe': stats.unsafe,
            'episodes': stats.episodes, 'wall_s': round(time.monotonic() - started, 1)}


def task_row(name: str, episodes: int) -> dict:
    config = task_config(name)
    problem = build_problem(config)
    task = problem.env.task
    row = {'task': name, 'max_steps': task.config.max_steps,
           'goal_pool': len(task.goal_pool()), 'heldout_goals': len(task.goals('heldout')),
           'config_sha256': provenance(config)['config_sha256'], 'executors': {}}
    runs = [(f'{kind}_mu_gp{preference:g}', with_goal_preference(config, preference), kind)
            for preference in GOAL_PREFERENCES for kind in ('greedy', 'sampled')]
    runs.append(('oracle', config, 'oracle'))
    for label, run_config, kind in runs:
        result = measure(run_config, kind, episodes)
        row['executors'][label] = result
        print(f'{name:8s} {label:18s} success {result["success_rate"]:6.1%}  return '
              f'{result["return"]:8.1f}  steps {result["mean_steps"]:6.1f}  unsafe '
              f'{result["unsafe"]}  ({result["wall_s"]:.0f} s)', flush=True)
    return row


def oracle_path(name: str, index: int = 0) -> tuple[np.ndarray, np.ndarray, TrainConfig]:
    """Hand positions of the oracle on held-out episode `index` of a task, and its goal."""
    config = task_config(name)
    problem = build_problem(config)
    act = oracle_actor(problem)
    rng = np.random.default_rng(0)
    obs, _ = problem.env.reset(seed=heldout_episode_seed(index))
    path = [problem.env.sim.ee_position().copy()]
    while True:
        obs, _, terminated, truncated, _ = problem.env.step(act(obs, rng).action)
        path.append(problem.env.sim.ee_position().copy())
        if terminated or truncated:
            return np.array(path), problem.env.goal.copy(), config


def plot_tasks(names: list[str], out: Path) -> None:
    """Side (x-z) and top (x-y) views of every task: zones (red), costly regions (orange),
    goal box, one oracle path."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle, Rectangle

    from ssq_ros.config import resolve_config_file
    from ssq_ros.safety.safe_set import load_safe_set_config

    fig, axes = plt.subplots(2, len(names), figsize=(4 * len(names), 7), squeeze=False)
    for column, name in enumerate(names):
        path, goal, config = oracle_path(name)
        zones = load_safe_set_config(resolve_config_file(config.safe_set))
        task = config.sim.task
        for row, (a, b, label) in enumerate(((0, 2, 'z'), (0, 1, 'y'))):
            ax = axes[row, column]
            for box in zones.keep_out_boxes:
                ax.add_patch(Rectangle((box.center[a] - box.half_extents[a],
                                        box.center[b] - box.half_extents[b]),
                                       2 * box.half_extents[a], 2 * box.half_extents[b],
                                       color='tab:red', alpha=0.35))
            for sphere in zones.keep_out_spheres:
                ax.add_patch(Circle((sphere.center[a], sphere.center[b]), sphere.radius,
                                    color='tab:red', alpha=0.35))
            for box in task.costly_boxes:  # allowed, at a cost
                ax.add_patch(Rectangle((box.center[a] - box.half_extents[a],
                                        box.center[b] - box.half_extents[b]),
                                       2 * box.half_extents[a], 2 * box.half_extents[b],
                                       color='tab:orange', alpha=0.3, hatch='//'))
            ax.add_patch(Rectangle((task.goal_lower[a], task.goal_lower[b]),
                                   task.goal_upper[a] - task.goal_lower[a],
                                   task.goal_upper[b] - task.goal_lower[b], fill=False,
                                   ls='--', color='tab:green'))
            ax.plot(path[:, a], path[:, b], color='tab:blue', lw=1.5, label='oracle')
            ax.plot(*path[0, [a, b]], 'o', color='tab:blue')
            ax.plot(goal[a], goal[b], '*', color='tab:green', ms=12, label='goal')
            ax.set_xlim(-0.1, 1.0)
            ax.set_ylim(0.0, 1.0) if label == 'z' else ax.set_ylim(-0.7, 0.7)
            ax.set_aspect('equal')
            ax.set_xlabel('x [m]')
            ax.set_ylabel(f'{label} [m]')
            ax.set_title(f'{name}: {"side" if label == "z" else "top"} view')
    axes[0, 0].legend(loc='upper left', fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    print(f'wrote {out}')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--episodes', type=int, default=100)
    parser.add_argument('--tasks', nargs='+', default=list(TASKS), choices=TASKS)
    parser.add_argument('--plot', action='store_true', help=f'draw the tasks to {PLOT}')
    parser.add_argument('--plot-only', action='store_true',
                        help='draw the tasks, measure nothing')
    parser.add_argument('--out', type=Path, default=RESULTS / 'task_baselines.json')
    args = parser.parse_args(argv)
    if args.plot or args.plot_only:
        plot_tasks(args.tasks, PLOT)
    if args.plot_only:
        return 0
    rows = [task_row(name, args.episodes) for name in args.tasks]
    result = {'command': f'python -m bench.bench_tasks --episodes {args.episodes} --tasks '
                         + ' '.join(args.tasks), 'episodes': args.episodes, 'rows': rows}
    result.update(provenance())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + '\n')
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
