"""How a costly-task run's deployed policy fails, episode by episode, beside the oracle (issue
14: is the learner or the task's reward at fault when the policy crosses the tray?).

    .venv/bin/python -m bench.bench_costly_paths runs/suite/costly-*-150000-s1 \\
        [--first 0 --episodes 30]

For each finished run folder (its exported policy behind the shielded executor, greedy, as
deployed) and the scripted oracle on the same held-out episodes (validation by default: 0-29,
what the runs' own final evaluation used): per episode, whether and when the goal was reached,
the steps inside a costly box and the discounted return (the run's gamma: what the critic
estimates) and the undiscounted one. Prints, per run, the episodes that reached the goal
through a costly box with the oracle's clean detour beside them, and how many of those had
the lower return; writes bench/results/costly_paths.json (--out).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ssq_ros.deploy.executor import ShieldedExecutor
from ssq_ros.deploy.export import load_exported_policy
from ssq_ros.training.evaluate import evaluate_heldout, executor_actor, oracle_actor
from ssq_ros.training.problem import build_problem
from ssq_ros.training.provenance import provenance
from ssq_ros.training.run import read_run_config

RESULTS = Path(__file__).resolve().parent / 'results' / 'costly_paths.json'


def episodes_of(stats) -> list[dict]:
    """One row per held-out episode of an EvalStats, in order."""
    return [{'success': bool(s), 'reached': bool(h), 'length': n, 'costly_steps': c,
             'return': round(r, 3), 'discounted_return': round(g, 3)}
            for s, h, n, c, r, g in zip(stats.outcomes, stats.reached, stats.lengths,
                                        stats.costly_steps, stats.returns,
                                        stats.discounted_returns, strict=True)]


def compare_run(folder: Path, first: int, episodes: int) -> dict:
    """The run's greedy shielded policy and the oracle on the same held-out episodes."""
    config = read_run_config(folder)
    problem = build_problem(config)
    gamma = config.learner.critic.gamma
    executor = ShieldedExecutor(greedy=True, seed=config.schedule.seed)
    executor.set_policy(load_exported_policy(folder / 'policy.pt'))
    policy = evaluate_heldout(problem, executor_actor(problem, executor), episodes, gamma,
                              first=first)
    oracle = evaluate_heldout(problem, oracle_actor(problem), episodes, gamma, first=first)
    if policy.unsafe or oracle.unsafe:  # both act inside mu's support: this would be a bug
        raise AssertionError(f'{folder}: unsafe states ({policy.unsafe}, {oracle.unsafe})')
    mine, theirs = episodes_of(policy), episodes_of(oracle)
    through = [k for k, row in enumerate(mine) if row['reached'] and row['costly_steps']]
    return {'run_folder': str(folder), 'gamma': gamma, 'first_episode': first,
            'policy': mine, 'oracle': theirs, 'through_costly': through,
            'through_costly_lower_discounted': sum(
                mine[k]['discounted_return'] < theirs[k]['discounted_return'] for k in through),
            'through_costly_lower_return': sum(
                mine[k]['return'] < theirs[k]['return'] for k in through)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('runs', nargs='+', type=Path, help='finished run folders')
    parser.add_argument('--first', type=int, default=0)
    parser.add_argument('--episodes', type=int, default=30)
    parser.add_argument('--out', type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    for folder in args.runs:
        if not (folder / 'policy.pt').exists():
            parser.error(f'{folder}: no policy.pt (not a finished run folder)')
    torch.set_num_threads(1)
    made_by = provenance()  # the code that runs, whatever is committed meanwhile
    results = []
    for folder in args.runs:
        result = compare_run(folder, args.first, args.episodes)
        results.append(result)
        mine, theirs = result['policy'], result['oracle']
        print(f"{folder.name}: {sum(r['success'] for r in mine)}/{len(mine)} successes, "
              f"{len(result['through_costly'])} reached the goal through a costly box, of "
              f"those {result['through_costly_lower_discounted']} with a lower discounted "
              f"return than the oracle's clean detour "
              f"({result['through_costly_lower_return']} undiscounted)", flush=True)
        for k in result['through_costly']:
            print(f"  episode {args.first + k}: {mine[k]['length']} steps, "
                  f"{mine[k]['costly_steps']} in the box, return {mine[k]['return']:.1f} "
                  f"(discounted {mine[k]['discounted_return']:.1f}); oracle "
                  f"{theirs[k]['length']} steps, {theirs[k]['return']:.1f} "
                  f"({theirs[k]['discounted_return']:.1f})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({'machine': made_by, 'runs': results}, indent=1) + '\n')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
