"""The task suite's test split: finished runs evaluated once on held-out episodes no run and no
choice has used (issue 14 and 15: "final numbers on a separate test split of at least 100
episodes, used once").

    .venv/bin/python -m bench.bench_tasks_test --variants n8_long_a03_e30 n8_long_e30 \\
        [--first 30 --episodes 100]

Each run's final evaluation used held-out episodes 0-29 (bench_tasks_train; the first 10 of
them chose the learner settings, 10-29 chose alpha). This evaluates, from each finished run
folder under runs/suite (its critic checkpoint and exported policy, read only), the induced
policy and the extracted policy (greedy and sampled, behind the shielded executor) on held-out
episodes first..first+episodes-1, and once per task the baselines that do not depend on the
run (greedy mu, sampled mu, the oracle). Episodes are new starts and goal draws; the goal
positions come from the same held-out half of each task's pool. Writes
bench/results/tasks_test.json (per run outcomes, per (task, variant) pooled success with
Wilson 95 % intervals, IQM across tasks with stratified-bootstrap intervals) and prints the
table; one progress line per evaluation with its rate. Where a task has costly boxes, each
learned executor's failures that still reached the goal, through a costly box, are counted
apart (`reached_costly`): a learner that gets there the wrong way, not one that gets lost.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from bench.bench_tasks_train import MARKER, VARIANTS
from bench.stats import stratified_bootstrap_interval, wilson_interval
from ssq_ros.deploy.executor import ShieldedExecutor
from ssq_ros.deploy.export import load_exported_policy
from ssq_ros.training.evaluate import (
    behavior_actor,
    evaluate_heldout,
    executor_actor,
    greedy_behavior_actor,
    induced_actor,
    oracle_actor,
)
from ssq_ros.training.problem import build_problem
from ssq_ros.training.provenance import provenance
from ssq_ros.training.run import read_run_config
from ssq_ros.training.trainer import load_run_learner

RESULTS = Path(__file__).resolve().parent / 'results' / 'tasks_test.json'
LEARNED = ('induced', 'policy_sampled', 'policy')
BASELINES = ('behavior_greedy', 'behavior', 'oracle')


def timed(label: str, problem, act, episodes: int, first: int, gamma: float):
    """`act`'s EvalStats on the episodes, with a progress line."""
    started = time.monotonic()
    stats = evaluate_heldout(problem, act, episodes, gamma, first=first)
    wall = time.monotonic() - started
    if stats.unsafe:  # every actor here acts inside mu's support: this would be a bug
        raise AssertionError(f'{label}: {stats.unsafe} unsafe states in the test split')
    costly = (f', {stats.reached_costly} more reached it through a costly box'
              if stats.reached_costly else '')
    print(f'{label}: {stats.successes}/{stats.episodes}{costly} in {wall:.0f} s '
          f'({stats.episodes / wall:.2f} episodes/s)', flush=True)
    return stats


def evaluate_run(folder: Path, episodes: int, first: int,
                 executors: tuple[str, ...] = LEARNED,
                 policy_file: str = 'policy.pt') -> tuple[dict, dict]:
    """The run's learned executors (those of `executors` it has) on the test episodes: each
    one's outcomes, and how many episodes it reached the goal through a costly box.
    `policy_file`: the exported policy the executors run (ssq-select's choice:
    policy_selected.pt)."""
    config = read_run_config(folder)
    learner = load_run_learner(config, folder)
    policy = load_exported_policy(folder / policy_file)
    problem = build_problem(config)
    gamma = config.learner.critic.gamma
    # A run that deploys the induced policy (discrete_policy: induced) has it in policy.pt:
    # its sampled executor is that policy, evaluating the induced actor again adds nothing.
    # The induced actor is the final critic's: it belongs with the final export only.
    actors = ({} if policy.kind == 'induced' or policy_file != 'policy.pt'
              else {'induced': induced_actor(problem, learner)})
    for name, greedy in (('policy_sampled', False), ('policy', True)):
        executor = ShieldedExecutor(greedy=greedy, seed=config.schedule.seed)
        executor.set_policy(policy)
        actors[name] = executor_actor(problem, executor)
    stats = {name: timed(f'{folder.name} {name}', problem, act, episodes, first, gamma)
             for name, act in actors.items() if name in executors}
    return ({name: [int(o) for o in s.outcomes] for name, s in stats.items()},
            {name: s.reached_costly for name, s in stats.items()})


def evaluate_baselines(folder: Path, episodes: int, first: int) -> dict[str, list[int]]:
    """Greedy mu, sampled mu and the oracle on the test episodes of `folder`'s task (they do
    not depend on the run's seed: one folder per task is enough)."""
    config = read_run_config(folder)
    problem = build_problem(config)
    gamma = config.learner.critic.gamma
    actors = {'behavior_greedy': greedy_behavior_actor(problem),
              'behavior': behavior_actor(problem), 'oracle': oracle_actor(problem)}
    return {name: [int(o) for o in timed(f'{folder.name} {name}', problem, act, episodes,
                                         first, gamma).outcomes]
            for name, act in actors.items()}


def learned_in(members: list[dict]) -> list[str]:
    """The learned executors every run of a group was evaluated with."""
    return [x for x in LEARNED if all(x in m['outcomes'] for m in members)]


def summarise(runs: list[dict], baselines: dict[str, dict]) -> tuple[list[dict], dict]:
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault((run['task'], run['variant'], run['steps']), []).append(run)
    summary = []
    for (task, variant, steps), members in sorted(groups.items()):
        entry: dict = {'task': task, 'variant': variant, 'steps': steps,
                       'seeds': sorted(m['seed'] for m in members)}
        columns = {x: [m['outcomes'][x] for m in members] for x in learned_in(members)}
        columns.update({x: [baselines[task][x]] for x in BASELINES})
        for executor, lists in columns.items():
            successes, trials = int(sum(map(sum, lists))), int(sum(map(len, lists)))
            entry[executor] = {'successes': successes, 'episodes': trials,
                               'rate': successes / trials,
                               'wilson95': wilson_interval(successes, trials),
                               'per_seed': [float(np.mean(x)) for x in lists]}
            costly = [m.get('reached_costly', {}).get(executor) for m in members]
            if executor in LEARNED and None not in costly:  # runs evaluated before: unknown
                entry[executor]['reached_costly'] = int(sum(costly))
        summary.append(entry)
    across: dict = {}
    for variant in sorted({e['variant'] for e in summary}):
        mine = [e for e in summary if e['variant'] == variant]
        if len(mine) < 2:
            continue
        across[variant] = {'tasks': [e['task'] for e in mine]}
        for executor in [x for x in LEARNED if all(x in e for e in mine)]:
            point, low, high = stratified_bootstrap_interval(
                [e[executor]['per_seed'] for e in mine])
            across[variant][executor] = {'iqm': point, 'bootstrap95': (low, high)}
    return summary, across


def format_table(summary: list[dict]) -> str:
    lines = []
    for e in summary:
        cells = ', '.join(f"{x} {e[x]['successes']}/{e[x]['episodes']} "
                          f"({100 * e[x]['wilson95'][0]:.0f}-{100 * e[x]['wilson95'][1]:.0f} %"
                          + (f"; {e[x]['reached_costly']} more through a costly box)"
                             if e[x].get('reached_costly') else ')')
                          for x in (*LEARNED, *BASELINES) if x in e)
        lines.append(f"{e['task']:7} {e['variant']:16} seeds {e['seeds']}: {cells}")
    return '\n'.join(lines)


def evaluate_folders(args: argparse.Namespace,
                     parser: argparse.ArgumentParser) -> tuple[list[dict], dict]:
    torch.set_num_threads(1)
    folders = []
    for marker in sorted(args.runs.glob(f'*/{MARKER}')):
        info = json.loads(marker.read_text())
        if (info['variant'] in args.variants and info['steps'] == args.steps
                and (args.tasks is None or info['task'] in args.tasks)
                and (marker.parent / 'metrics.json').exists()):
            folders.append((info, marker.parent))
    if not folders:
        parser.error(f'no finished run of {args.variants} at {args.steps} steps under '
                     f'{args.runs}')
    started = time.monotonic()
    baselines = {}
    if args.baselines_from:  # the same episodes: the baselines do not depend on the runs
        earlier = json.loads(args.baselines_from.read_text())
        if (earlier['first_episode'], earlier['episodes']) != (args.first, args.episodes):
            parser.error(f'--baselines-from {args.baselines_from} was made on other episodes')
        baselines = earlier['baselines']
    for info, folder in folders:
        if info['task'] not in baselines:
            baselines[info['task']] = evaluate_baselines(folder, args.episodes, args.first)
    runs = []
    for k, (info, folder) in enumerate(folders):
        # a run reached through a link is named by where it is
        outcomes, reached_costly = evaluate_run(folder, args.episodes, args.first,
                                                tuple(args.executors), args.policy)
        runs.append({**info, 'run_folder': os.path.relpath(folder.resolve()),
                     'policy_file': args.policy,
                     'outcomes': outcomes, 'reached_costly': reached_costly})
        elapsed = time.monotonic() - started
        print(f'[{k + 1}/{len(folders)} runs, {elapsed / 60:.1f} min, ETA '
              f'{elapsed / (k + 1) * (len(folders) - k - 1) / 60:.1f} min]', flush=True)
    return runs, baselines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--variants', nargs='+', default=[], choices=sorted(VARIANTS))
    parser.add_argument('--steps', type=int, default=10_000)
    parser.add_argument('--runs', type=Path, default=Path('runs/suite'))
    parser.add_argument('--first', type=int, default=30,
                        help='first held-out episode (the runs evaluated 0..29 themselves)')
    parser.add_argument('--episodes', type=int, default=100)
    parser.add_argument('--tasks', nargs='+', help='only these tasks (to split the work over '
                        'processes; --combine joins their outputs)')
    parser.add_argument('--combine', nargs='+', type=Path, metavar='JSON',
                        help='evaluate nothing: join these outputs of earlier invocations')
    parser.add_argument('--executors', nargs='+', default=list(LEARNED), choices=LEARNED,
                        help='the learned executors to evaluate (each costs one pass)')
    parser.add_argument('--policy', default='policy.pt', metavar='FILE',
                        help="the exported policy in each run folder the executors run "
                        "(policy_selected.pt: ssq-select's choice among the kept ones)")
    parser.add_argument('--baselines-from', type=Path, metavar='JSON',
                        help='take the baselines from an earlier output on the same episodes')
    parser.add_argument('--out', type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.first < 0 or args.episodes < 1:
        parser.error('--first must be >= 0 and --episodes >= 1')
    started = time.monotonic()
    # the code that evaluates, taken before the (long) evaluation: a commit made meanwhile
    # must not be named as its author
    machine = {**provenance(), 'cpus': os.cpu_count()}
    if args.combine:
        parts = [json.loads(path.read_text()) for path in args.combine]
        if len({(p['first_episode'], p['episodes']) for p in parts}) != 1:
            parser.error('--combine: the outputs were made on different test episodes')
        runs = [run for p in parts for run in p['runs']]
        baselines = {task: b for p in parts for task, b in p['baselines'].items()}
        args.first, args.episodes = parts[0]['first_episode'], parts[0]['episodes']
        # the code that evaluated is the parts': keep it, and the combiner's beside it
        made = {(p['machine']['code_commit'], p['machine']['code_dirty']) for p in parts}
        machine = ({**parts[0]['machine'], 'combined_by': machine} if len(made) == 1
                   else {**machine, 'parts': [p['machine'] for p in parts]})
        wall = sum(p['wall_time_s'] for p in parts)
    else:
        runs, baselines = evaluate_folders(args, parser)
        wall = time.monotonic() - started
    summary, across = summarise(runs, baselines)
    result = {'machine': machine,
              'first_episode': args.first, 'episodes': args.episodes,
              'summary': summary, 'across_tasks': across, 'baselines': baselines,
              'runs': runs, 'wall_time_s': wall}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + '\n')
    print(format_table(summary))
    for variant, entry in across.items():
        print(f'{variant}: IQM over (task, seed): ' + ', '.join(
            f"{x} {100 * entry[x]['iqm']:.0f} % ({100 * entry[x]['bootstrap95'][0]:.0f}-"
            f"{100 * entry[x]['bootstrap95'][1]:.0f})" for x in LEARNED if x in entry))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
