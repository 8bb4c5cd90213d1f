"""Equal work (issue 15): seconds per environment step of whole training runs, SSQ against the
peers that train behind the same support shield, on one task of the suite, in rounds.

    .venv/bin/python -m bench.bench_iteration [--task wall] [--steps 5000] [--rounds 2]
        [--pairs discrete continuous]

In every round each method trains from scratch for --steps env steps, one after the other,
one torch thread each; a slow spell of the shared machine then hits a round's methods alike,
and the ratios are taken within a round. What one env step of each costs:
- ssq_discrete: ssq-train on config/tasks/<task>.yaml: mu's support check, the env step, the
  critic update (8-step targets), the induced policy's export (its executor: no extraction);
- dqn: bench_tasks_peers' DQN at its tuned point: mu's support check (its action mask), the
  env step, SB3 DQN's update;
- ssq_continuous: the same ssq-train in the continuous version of the task: K samples of mu
  checked per step, the critic update over K samples at s', the policy extraction amortised;
- sac: bench_tasks_peers' SAC behind mu's support: the support check of its proposal (and
  mu's samples for the fallback), the env step, SAC's twin critics, actor and entropy
  coefficient updates.
SSQ's time is its run's wall time minus its evaluations' (metrics.json wall_time_eval_s); the
peers' is SB3's learn(). Writes bench/results/iteration.json and prints the table.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench import bench_tasks_peers
from bench.peers.common import machine_info
from bench.peers.ssq import train_ssq
from ssq_ros.training.config import with_overrides
from ssq_ros.training.problem import build_problem

RESULTS = Path(__file__).resolve().parent / 'results' / 'iteration.json'
METHODS = ('ssq_discrete', 'dqn', 'ssq_continuous', 'sac')
# (SSQ, the peer it is set against): the same action set, the same shield
PAIRS = {'discrete': ('ssq_discrete', 'dqn'), 'continuous': ('ssq_continuous', 'sac')}


def time_ssq(config, folder: Path) -> dict:
    metrics = train_ssq(config, folder, progress=False)
    return {'train_s': metrics['wall_time_s'] - metrics['wall_time_eval_s'],
            'updates': metrics['updates'], 'unsafe_states_train': metrics['unsafe_states_train']}


def time_peer(method: str, task: str, point: str, steps: int, seed: int) -> dict:
    settings = bench_tasks_peers.peer_settings(method, task, point, steps)
    problem = build_problem(bench_tasks_peers.peer_config(method, task))
    _, training = bench_tasks_peers.train_peer(method, problem, seed, steps, settings, method)
    return {'train_s': training['wall_time_train_s'], 'updates': training['updates'],
            'unsafe_states_train': training['unsafe_states_train']}


def one_round(task: str, steps: int, seed: int, points: dict, scratch: Path,
              methods: tuple[str, ...] = METHODS) -> dict:
    """Every method of `methods` once, in that order; seconds of training per env step."""
    out = {}
    for method in methods:
        started = time.monotonic()
        if method.startswith('ssq'):
            config = (bench_tasks_peers.task_config(task) if method == 'ssq_discrete'
                      else bench_tasks_peers.continuous_task_config(task))
            timing = time_ssq(with_overrides(config, seed=seed, steps=steps), scratch / method)
        else:
            timing = time_peer(method, task, points[method], steps, seed)
        out[method] = {**timing, 'seconds_per_env_step': timing['train_s'] / steps,
                       'whole_call_s': time.monotonic() - started}
        print(f'  {method:15} {1e3 * out[method]["seconds_per_env_step"]:7.2f} ms per env '
              f'step ({timing["updates"]} updates, {timing["train_s"]:.0f} s)', flush=True)
    return out


def summarise(rounds: list[dict]) -> dict:
    """Median per method over rounds; each measured pair's ratio (SSQ / peer), median over
    rounds."""
    per_step = {m: float(np.median([r[m]['seconds_per_env_step'] for r in rounds]))
                for m in METHODS if m in rounds[0]}
    ratios = {}
    for ssq, peer in [pair for pair in PAIRS.values() if set(pair) <= set(rounds[0])]:
        within = [r[ssq]['seconds_per_env_step'] / r[peer]['seconds_per_env_step']
                  for r in rounds]
        ratios[f'{ssq}/{peer}'] = {'median': float(np.median(within)),
                                   'range': [float(min(within)), float(max(within))]}
    return {'seconds_per_env_step': per_step, 'ratios': ratios}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--task', choices=bench_tasks_peers.TUNED, default='wall')
    parser.add_argument('--steps', type=int, default=5000)
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--dqn-point', default='mu_n8_e140',
                        choices=sorted(bench_tasks_peers.GRID),
                        help="the DQN grid's point (default: the tuned best)")
    parser.add_argument('--sac-point', default='uniform_n1_e140',
                        choices=sorted(bench_tasks_peers.SAC_GRID),
                        help="the SAC grid's point (default: the tuned best)")
    parser.add_argument('--pairs', nargs='+', choices=sorted(PAIRS), default=sorted(PAIRS),
                        help='discrete: SSQ against the masked DQN; continuous: against SAC')
    parser.add_argument('--out', type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    methods = tuple(m for m in METHODS if any(m in PAIRS[p] for p in args.pairs))
    if args.rounds < 1:
        parser.error('--rounds must be at least 1')
    learning_starts = bench_tasks_peers.task_config(args.task).schedule.learning_starts
    if args.steps <= learning_starts:
        parser.error(f'--steps must exceed the warm-up ({learning_starts}): nothing would '
                     'be learned')
    torch.set_num_threads(1)
    points = {'dqn': args.dqn_point, 'sac': args.sac_point}
    rounds, started = [], time.monotonic()
    with tempfile.TemporaryDirectory(prefix='ssq_iteration_') as scratch:
        for k in range(args.rounds):
            print(f'round {k + 1}/{args.rounds}', flush=True)
            rounds.append(one_round(args.task, args.steps, args.seed, points, Path(scratch),
                                    methods))
            elapsed = time.monotonic() - started
            print(f'[{k + 1}/{args.rounds} rounds, {elapsed / 60:.1f} min, ETA '
                  f'{elapsed / (k + 1) * (args.rounds - k - 1) / 60:.1f} min]', flush=True)
    result = {'command': ' '.join(['.venv/bin/python -m bench.bench_iteration']
                                  + (sys.argv[1:] if argv is None else argv)),
              'task': args.task, 'steps': args.steps, 'seed': args.seed, 'points': points,
              'machine': machine_info(torch_threads=1), 'rounds': rounds,
              **summarise(rounds)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + '\n')
    for method, value in result['seconds_per_env_step'].items():
        print(f'{method:15} {1e3 * value:7.2f} ms per env step (median over rounds)')
    for pair, ratio in result['ratios'].items():
        print(f'{pair:22} {ratio["median"]:.2f}x (rounds {ratio["range"][0]:.2f}-'
              f'{ratio["range"][1]:.2f}x)')
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
