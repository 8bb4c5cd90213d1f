"""ssq-train: the safe behavior collects in MuJoCo while the KL-regularized learner trains online.

    ssq-train --config config/train_sim.yaml [--seed S] [--steps N] [--out runs/NAME]

Starting it again with the same --out resumes from the last checkpoint (also after a kill).
The run folder layout is described in ssq_ros/training/run.py; `ssq-report` reads it. Budgets
the config leaves unset (final extraction, evaluation episodes) follow --steps
(`ScheduleConfig.resolved`, docs/training.md).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ssq_ros.config import ConfigError
from ssq_ros.learning.critic import CheckpointError
from ssq_ros.training.config import load_train_config, resolve_config_file, with_overrides
from ssq_ros.training.plots import summary_rows
from ssq_ros.training.run import KEPT_POLICIES
from ssq_ros.training.trainer import Trainer, default_out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='ssq-train', description=__doc__.splitlines()[0])
    parser.add_argument('--config', default='train_sim.yaml',
                        help='training YAML: a path, or a file name in the package config/')
    parser.add_argument('--seed', type=int, help='override schedule.seed')
    parser.add_argument('--steps', type=int, help='override schedule.steps (the budgets the '
                        'config leaves unset follow it)')
    parser.add_argument('--out', type=Path, help='run folder (default runs/<config>-seed<S>)')
    parser.add_argument('--no-progress', action='store_true',
                        help='no progress bar and no progress lines')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config_file = resolve_config_file(args.config)
        config = with_overrides(load_train_config(config_file), seed=args.seed,
                                steps=args.steps)
        out = args.out or default_out(config_file, config.schedule.seed)
        Trainer(config, out, progress=not args.no_progress).run()
    except (ConfigError, CheckpointError) as exc:
        print(f'ssq-train: {exc}', file=sys.stderr)
        return 2
    width = max(len(name) for name, _ in summary_rows(out))
    for name, value in summary_rows(out):
        print(f'{name:<{width}}  {value}')
    print(f'run folder: {out}')
    if config.schedule.keep_policies and config.schedule.average_exports_from >= 1.0:
        print(f'every export is kept in {out / KEPT_POLICIES}: `ssq-select {out} --average` '
              'deploys the mean of the later ones (docs/training.md)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
