"""ssq-report: plots and a summary table of an ssq-train run folder (finished or killed).

    ssq-report runs/NAME
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ssq_ros.training.plots import summary_rows, write_plots


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='ssq-report', description=__doc__.splitlines()[0])
    parser.add_argument('run', type=Path, help='run folder written by ssq-train')
    args = parser.parse_args(argv)
    try:
        plots = write_plots(args.run)
        rows = summary_rows(args.run)
    except (FileNotFoundError, ValueError) as exc:
        print(f'ssq-report: {exc}', file=sys.stderr)
        return 2
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f'{name:<{width}}  {value}')
    for path in plots:
        print(f'plot: {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
