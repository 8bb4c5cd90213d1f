"""ssq-train's goals over seeds: zero unsafe states, policy vs behavior, calibration, time.

    .venv/bin/python -m bench.bench_train [--config train_sim.yaml] [--seeds 0 1 2]
                                          [--steps N] [--out runs/bench]

Runs one seed at a time (the machine is shared; timings are per seed, with the load average
recorded next to them), resuming any seed whose run folder already holds a checkpoint. Prints a
table and writes bench/results/train.json (train_continuous.json for
train_sim_continuous.yaml, train_<config>.json for another config), with the code's git commit
and the hash of the resolved base config (each seed's own is in its row).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from ssq_ros.config import to_dict
from ssq_ros.training.config import (
    load_train_config,
    resolve_budgets,
    resolve_config_file,
    with_overrides,
)
from ssq_ros.training.provenance import provenance
from ssq_ros.training.trainer import Trainer

RESULTS = Path(__file__).resolve().parent / 'results'
GOALS = {'unsafe_states_train': 0, 'unsafe_states_eval': 0, 'success_rate_policy': 0.9,
         'value_calibration_error': 0.1, 'wall_time_s': 20 * 60}
COLUMNS = ('seed', 'unsafe_states_train', 'unsafe_states_eval', 'success_rate_behavior',
           'success_rate_policy', 'return_behavior', 'return_policy', 'value_calibration_error',
           'value_calibration_error_policy', 'env_steps', 'updates', 'wall_time_s')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default='train_sim.yaml')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--steps', type=int, help='override schedule.steps')
    parser.add_argument('--out', type=Path, default=Path('runs/bench'))
    args = parser.parse_args(argv)
    config_file = resolve_config_file(args.config)
    base = load_train_config(config_file)
    rows = []
    for seed in args.seeds:
        config = with_overrides(base, seed=seed, steps=args.steps)
        folder = args.out / f'{config_file.stem}-seed{seed}'
        load_before = os.getloadavg()[0]
        started = time.monotonic()
        metrics = Trainer(config, folder).run()
        rows.append({'seed': seed, **metrics, 'bench_wall_s': time.monotonic() - started,
                     'load_average_1min': [load_before, os.getloadavg()[0]],
                     'run_folder': str(folder)})
        print(format_row(rows[-1]), flush=True)
    summary = summarize(rows)
    resolved = resolve_budgets(with_overrides(base, steps=args.steps))
    result = {
        'command': ' '.join(['python -m bench.bench_train', '--config', args.config, '--seeds',
                             *map(str, args.seeds)] + ([f'--steps {args.steps}']
                                                       if args.steps else [])),
        'config': to_dict(resolved),
        **provenance(resolved),
        'machine': {'cpu_count': os.cpu_count(), 'python': platform.python_version(),
                    'processor': platform.processor() or platform.machine()},
        'goals': GOALS, 'summary': summary, 'seeds': rows,
    }
    variant = config_file.stem.removeprefix('train_sim').lstrip('_')
    name = f'train_{variant}.json' if variant else 'train.json'
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / name).write_text(json.dumps(result, indent=2) + '\n')
    print('  '.join(f'{c:>10.10}' for c in COLUMNS))
    for row in rows:
        print(format_row(row))
    print(json.dumps(summary, indent=2))
    print(f'wrote {RESULTS / name}')
    return 0


def format_row(row: dict) -> str:
    return '  '.join(f'{row[c]:>10.4g}' if isinstance(row[c], float) else f'{row[c]:>10}'
                     for c in COLUMNS)


def summarize(rows: list[dict]) -> dict:
    """Mean/min/max of every column over seeds, and which goals every seed met."""
    summary = {}
    for column in COLUMNS[1:]:
        values = np.array([row[column] for row in rows], dtype=float)
        summary[column] = {'mean': float(np.mean(values)), 'min': float(np.min(values)),
                           'max': float(np.max(values))}
    met = {
        'zero_unsafe_train': all(r['unsafe_states_train'] == 0 for r in rows),
        'zero_unsafe_eval': all(r['unsafe_states_eval'] == 0 for r in rows),
        'policy_success_at_least_90pct': all(r['success_rate_policy'] >= 0.9 for r in rows),
        'policy_beats_behavior': all(r['success_rate_policy'] > r['success_rate_behavior']
                                     for r in rows),
        'calibration_error_at_most_10pct': all(r['value_calibration_error'] <= 0.1
                                               for r in rows),
        'under_20_min_per_seed': all(r['wall_time_s'] <= 20 * 60 for r in rows),
    }
    summary['goals_met'] = met
    return summary


if __name__ == '__main__':
    raise SystemExit(main())
