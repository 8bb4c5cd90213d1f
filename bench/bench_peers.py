"""Safety and outcome on the reach-avoid task: ssq_ros against SB3 SAC and d3rlpy IQL/CQL.

    .venv/bin/python -m bench.bench_peers [--seeds 0 1] [--steps 30000] [--eval-episodes 30]

Every method gets the same env steps, episode seeds, batch size, network width and discount;
the referee in the simulator counts unsafe states during training and evaluation. Prints the
table and writes bench/results/peers.json (run folders under runs/bench_peers/). SSQ runs need only
ssq_ros; the peers need the `bench` extra and are left out, with a note, without it.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from bench.peers.common import evaluate, machine_info
from bench.peers.ssq import (
    split_episodes,
    ssq_config,
    ssq_curve,
    ssq_policy,
    ssq_transitions,
    train_ssq,
)
from ssq_ros.config import ConfigError, parse, spec, to_dict
from ssq_ros.sim.reach_avoid import TASK_REVISION
from ssq_ros.training.problem import build_problem

RESULTS = Path(__file__).resolve().parent / 'results' / 'peers.json'
METHODS = ('ssq_discrete', 'ssq_continuous', 'sac', 'sac_penalized', 'iql', 'cql',
           'discrete_cql')
LIBRARY = {'sac': 'stable_baselines3', 'sac_penalized': 'stable_baselines3', 'iql': 'd3rlpy',
           'cql': 'd3rlpy', 'discrete_cql': 'd3rlpy'}
# Offline methods learn from the replay of this SSQ run.
DATA_SOURCE = {'iql': 'ssq_continuous', 'cql': 'ssq_continuous', 'discrete_cql': 'ssq_discrete'}


@dataclass
class PeerBenchConfig:
    """The benchmark's budget; the learners' shared settings come from config/train_sim.yaml."""

    seeds: tuple[int, ...] = spec((0,), low=0, high=2**31 - 1,
                                  doc='training seeds; every method runs every seed')
    steps: int = spec(30_000, low=10, high=10_000_000,
                      doc='environment steps per online run (SSQ, SAC)')
    eval_episodes: int = spec(30, low=1, high=10_000,
                              doc='held-out episodes per evaluation (as is, and shielded)')
    penalty: float = spec(10.0, low=0.0, high=1e6,
                          doc='sac_penalized: reward subtracted per unsafe step')
    offline_updates: int = spec(0, low=0, high=10_000_000,
                                doc='gradient steps of IQL/CQL; 0 = as many as the SSQ run '
                                    'whose data they use made')
    methods: tuple[str, ...] = spec(METHODS, choices=METHODS, doc='methods to run')
    torch_threads: int = spec(1, low=1, high=256, doc='torch CPU threads for every method')


def parse_args(argv: list[str] | None) -> tuple[PeerBenchConfig, argparse.Namespace]:
    defaults = PeerBenchConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=list(defaults.seeds))
    parser.add_argument('--steps', type=int, default=defaults.steps)
    parser.add_argument('--eval-episodes', type=int, default=defaults.eval_episodes)
    parser.add_argument('--penalty', type=float, default=defaults.penalty)
    parser.add_argument('--offline-updates', type=int, default=defaults.offline_updates)
    parser.add_argument('--methods', nargs='+', default=list(defaults.methods))
    parser.add_argument('--torch-threads', type=int, default=defaults.torch_threads)
    parser.add_argument('--ssq-config', help='training YAML both SSQ runs start from (a path '
                        'or a config/ name); default: train_sim.yaml and '
                        'train_sim_continuous.yaml')
    parser.add_argument('--runs', type=Path, default=Path('runs') / 'bench_peers',
                        help='where the SSQ run folders go')
    parser.add_argument('--out', type=Path, default=RESULTS, help='results JSON')
    parser.add_argument('--no-progress', action='store_true')
    args = parser.parse_args(argv)
    values = {k: getattr(args, k) for k in ('seeds', 'steps', 'eval_episodes', 'penalty',
                                            'offline_updates', 'methods', 'torch_threads')}
    return parse(PeerBenchConfig, values, 'command line'), args


def available(method: str) -> bool:
    library = LIBRARY.get(method)
    return library is None or importlib.util.find_spec(library) is not None


def run_seed(cfg: PeerBenchConfig, seed: int, runs: Path, progress: bool,
             ssq_base: str | None = None) -> list[dict]:
    """Every selected method on one seed; one record per method."""
    records: list[dict] = []
    ssq_runs: dict[str, tuple] = {}
    wanted = set(cfg.methods)
    for source in {DATA_SOURCE[m] for m in wanted if m in DATA_SOURCE}:
        wanted.add(source)  # the offline peers need the SSQ run that collected their data
    eval_schedule = {'final_eval_episodes': cfg.eval_episodes,
                     'eval_episodes': min(cfg.eval_episodes, 20)}
    for method in ('ssq_discrete', 'ssq_continuous'):
        if method not in wanted:
            continue
        kind = method.split('_')[1]
        config = ssq_config(kind, seed, cfg.steps, eval_schedule, ssq_base)
        out = runs / f'{method}-seed{seed}'
        print(f'[seed {seed}] {method}: ssq-train -> {out}', flush=True)
        metrics = train_ssq(config, out, progress)
        ssq_runs[method] = (config, out, metrics)
        if method not in cfg.methods:
            continue
        problem = build_problem(config)
        policy = ssq_policy(out, method)
        records.append(_record(method, seed, kind, problem, policy, config, cfg, {
            'unsafe_states_train': metrics['unsafe_states_train'],
            'env_steps': metrics['env_steps'], 'updates': metrics['updates'],
            'min_margin_train': metrics['min_margin_train'],
            'wall_time_train_s': metrics['wall_time_s'],
            'success_rate_behavior': metrics['success_rate_behavior'],
            'curve': ssq_curve(out).as_dict()},
            calibration=metrics['value_calibration_error_policy'],
            extra={'trainer_metrics': metrics}))
    continuous = ssq_config('continuous', seed, cfg.steps, eval_schedule, ssq_base)
    critic = continuous.learner.critic
    hidden, gamma, batch = list(critic.hidden_sizes), critic.gamma, critic.batch_size
    for method in ('sac', 'sac_penalized'):
        if method not in cfg.methods:
            continue
        from bench.peers.sb3_sac import sac_hyperparameters, train_sac
        penalty = cfg.penalty if method == 'sac_penalized' else 0.0
        print(f'[seed {seed}] {method}: SB3 SAC, penalty {penalty}', flush=True)
        train_problem = build_problem(continuous)
        hyper = sac_hyperparameters(batch, hidden, gamma, continuous.schedule.learning_starts)
        policy, training = train_sac(train_problem.env, seed, cfg.steps, hyper, penalty,
                                     method, progress)
        problem = build_problem(continuous, train_problem.setup)
        records.append(_record(method, seed, 'continuous', problem, policy, continuous, cfg,
                               training, extra={'hyperparameters': hyper, 'penalty': penalty}))
    for method in ('iql', 'cql', 'discrete_cql'):
        if method not in cfg.methods:
            continue
        from bench.peers.d3rlpy_offline import (
            make_algorithm,
            make_dataset,
            offline_policy,
            train_offline,
        )
        config, out, metrics = ssq_runs[DATA_SOURCE[method]]
        problem = build_problem(config)
        discrete = problem.discrete
        rows = split_episodes(ssq_transitions(config, out))
        dataset = make_dataset(rows, discrete, problem.spaces.action_size)
        updates = cfg.offline_updates or metrics['updates']
        print(f'[seed {seed}] {method}: d3rlpy, {updates} updates on {len(rows["rewards"])} '
              f'rows of {DATA_SOURCE[method]}', flush=True)
        torch.manual_seed(seed)
        d3rlpy_seed(seed)
        actions = problem.env.actions
        algo = make_algorithm(method, batch, hidden, gamma,
                              None if discrete else actions.low,
                              None if discrete else actions.high)
        training = train_offline(algo, dataset, updates, method, progress)
        training.update({'unsafe_states_train': metrics['unsafe_states_train'],
                         'env_steps': metrics['env_steps'],
                         'min_margin_train': metrics['min_margin_train'],
                         'data_source': DATA_SOURCE[method],
                         'curve': ssq_curve(out).as_dict()})
        policy = offline_policy(algo, method, discrete, problem.spaces.action_size)
        records.append(_record(method, seed, 'discrete' if discrete else 'continuous', problem,
                               policy, config, cfg, training))
    return records


def d3rlpy_seed(seed: int) -> None:
    import d3rlpy
    d3rlpy.seed(seed)


def _record(method, seed, kind, problem, policy, train_config, cfg, training, calibration=None,
            extra=None) -> dict:
    """Evaluate `policy` as is and shielded; one JSON-ready record."""
    gamma = train_config.learner.critic.gamma
    tail = train_config.schedule.calibration_tail
    started = time.monotonic()
    as_is = evaluate(problem, policy, cfg.eval_episodes, False, gamma, tail)
    shielded = evaluate(problem, policy, cfg.eval_episodes, True, gamma)
    if calibration is None:
        calibration = as_is.pop('value_calibration_error', None)
    record = {'method': method, 'seed': seed, 'action_kind': kind, 'training': training,
              'eval_as_is': as_is, 'eval_shielded': shielded,
              'value_calibration_error': calibration,
              'eval_wall_time_s': time.monotonic() - started}
    record.update(extra or {})
    print(f'[seed {seed}] {method}: ' + row_text(summarise([record])[0]), flush=True)
    return record


def summarise(records: list[dict]) -> list[dict]:
    """One row per method: unsafe counts summed over seeds, the rest averaged."""
    rows = []
    for method in METHODS:
        mine = [r for r in records if r['method'] == method]
        if not mine:
            continue
        calibration = [r['value_calibration_error'] for r in mine
                       if r['value_calibration_error'] is not None]
        rows.append({
            'method': method, 'action_kind': mine[0]['action_kind'], 'seeds': len(mine),
            'unsafe_train': sum(r['training']['unsafe_states_train'] for r in mine),
            'env_steps_train': sum(r['training']['env_steps'] for r in mine),
            'success': _mean(r['eval_as_is']['success_rate'] for r in mine),
            'return': _mean(r['eval_as_is']['return'] for r in mine),
            'unsafe_eval': sum(r['eval_as_is']['unsafe_states'] for r in mine),
            'success_shielded': _mean(r['eval_shielded']['success_rate'] for r in mine),
            'return_shielded': _mean(r['eval_shielded']['return'] for r in mine),
            'unsafe_eval_shielded': sum(r['eval_shielded']['unsafe_states'] for r in mine),
            'shield_interventions': _mean(r['eval_shielded']['intervention_rate']
                                          for r in mine),
            'value_calibration_error': _mean(calibration) if calibration else None,
            'wall_time_train_s': _mean(r['training']['wall_time_train_s'] for r in mine),
        })
    return rows


def _mean(values) -> float:
    return float(np.mean(list(values)))


COLUMNS = (('method', '{}'), ('action_kind', '{}'), ('unsafe_train', '{}'),
           ('success', '{:.0%}'), ('return', '{:.1f}'), ('unsafe_eval', '{}'),
           ('success_shielded', '{:.0%}'), ('return_shielded', '{:.1f}'),
           ('unsafe_eval_shielded', '{}'), ('shield_interventions', '{:.1%}'),
           ('value_calibration_error', '{:.3f}'), ('wall_time_train_s', '{:.0f}'))


def row_text(row: dict) -> str:
    return '  '.join(f'{key}={fmt.format(row[key]) if row[key] is not None else "-"}'
                     for key, fmt in COLUMNS[2:])


def print_table(rows: list[dict]) -> None:
    cells = [[key for key, _ in COLUMNS]] + [
        [fmt.format(row[key]) if row[key] is not None else '-' for key, fmt in COLUMNS]
        for row in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    for line in cells:
        print('  '.join(c.rjust(w) for c, w in zip(line, widths, strict=True)))


def main(argv: list[str] | None = None) -> int:
    try:
        cfg, args = parse_args(argv)
    except ConfigError as exc:
        print(f'bench_peers: {exc}', file=sys.stderr)
        return 2
    torch.set_num_threads(cfg.torch_threads)
    skipped = [m for m in cfg.methods if not available(m)]
    if skipped:
        print(f'bench_peers: leaving out {", ".join(skipped)}: install the bench extra '
              "(pip install -e '.[bench]')", file=sys.stderr)
        cfg = parse(PeerBenchConfig, {**to_dict(cfg), 'methods': [m for m in cfg.methods
                                                                   if m not in skipped]})
    started = time.monotonic()
    records = [r for seed in cfg.seeds for r in run_seed(cfg, seed, args.runs,
                                                         not args.no_progress,
                                                         args.ssq_config)]
    rows = summarise(records)
    versions = {name: version(name) for name in ('torch', 'mujoco', 'gymnasium',
                                                 'stable-baselines3', 'd3rlpy')
                if importlib.util.find_spec(name.replace('-', '_')) is not None}
    command = ['.venv/bin/python -m bench.bench_peers'] + (sys.argv[1:] if argv is None
                                                           else argv)
    # The task every method ran on; make_benchmarks_doc flags a table made on another one.
    task = to_dict(ssq_config('discrete', cfg.seeds[0], cfg.steps, None, args.ssq_config).sim)
    result = {'command': ' '.join(command),
              'config': to_dict(cfg), 'task': task, 'task_revision': TASK_REVISION,
              'skipped': skipped,
              'machine': machine_info(cfg.torch_threads), 'versions': versions,
              'total_wall_time_s': time.monotonic() - started, 'table': rows,
              'runs': records}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + '\n')
    print_table(rows)
    print(f'wrote {args.out} ({result["total_wall_time_s"]:.0f} s)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
