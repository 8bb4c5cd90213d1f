"""ssq-gridworld: SSQ against epsilon-greedy Q-learning on the cliff walk, scored exactly.

    ssq-gridworld --seeds 3 --out runs/gridworld.json [--config my.yaml] [--slip 0.2]

Writes the JSON summary, prints a table and draws the first seed's policy and values to a PNG
next to the JSON. The config file holds GridworldConfig fields (unknown keys are errors).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ssq_ros.config import ConfigError, load, to_dict, validate
from ssq_ros.gridworld.env import cliff_walk
from ssq_ros.gridworld.experiment import GridworldConfig, run_seed, summarize
from ssq_ros.gridworld.plot import plot_gridworld
from ssq_ros.storage import atomic_write
from ssq_ros.training.provenance import provenance


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='ssq-gridworld', description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', type=int, default=3, help='number of seeds (0, 1, ...)')
    parser.add_argument('--out', type=Path, default=Path('runs/gridworld.json'),
                        help='JSON summary; the PNG is written next to it')
    parser.add_argument('--config', type=Path, help='YAML file of GridworldConfig fields')
    parser.add_argument('--slip', type=float, help='override the config\'s slip probability')
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f'--seeds must be at least 1, got {args.seeds}')
    return args


def format_table(summary: dict) -> str:
    optimal = summary['optimal_safe_return']
    lines = [f'optimal safe return {optimal:.3f}   behavior (mu) return '
             f'{summary["behavior_return"]:.3f}',
             f'{"method":<14}{"unsafe train":>13}{"unsafe eval":>12}{"return":>10}'
             f'{"/ optimal":>10}{"value err":>11}{"Q calib err":>13}']
    for name, row in summary['methods'].items():
        value_error = f'{row["value_error"]:.2%}' if 'value_error' in row else '-'
        lines.append(f'{name:<14}{row["unsafe_visits_train"]:>13}{row["unsafe_visits_eval"]:>12}'
                     f'{row["eval_return"]:>10.3f}{optimal / row["eval_return"]:>10.1%}'
                     f'{value_error:>11}{row["calibration_error"]:>13.2%}')
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load(GridworldConfig, args.config) if args.config else GridworldConfig()
        if args.slip is not None:
            config = dataclasses.replace(config, slip=args.slip)
            validate(config, '--slip')
    except ConfigError as exc:
        print(f'ssq-gridworld: {exc}', file=sys.stderr)
        return 2
    torch.set_num_threads(1)  # tiny networks: threads cost more than they give
    started = time.monotonic()
    results = []
    for seed in tqdm(range(args.seeds), desc='seeds', unit='seed'):
        results.append(run_seed(config, seed))
    summary = summarize(results)
    summary['config'] = to_dict(config)
    summary['wall_time_s'] = round(time.monotonic() - started, 2)
    summary.update(provenance(config))
    atomic_write(args.out, lambda f: f.write(json.dumps(summary, indent=2).encode()))
    png = plot_gridworld(cliff_walk(config.rows, config.cols, config.slip),
                         results[0].ssq_policy, results[0].ssq_values,
                         f'SSQ on the cliff walk (slip {config.slip}), seed 0',
                         args.out.with_suffix('.png'))
    print(format_table(summary))
    print(f'wrote {args.out} and {png} in {summary["wall_time_s"]:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
