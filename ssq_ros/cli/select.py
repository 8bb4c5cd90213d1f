"""ssq-select: choose a finished run's deployed policy among its kept exports, on validation
episodes.

    ssq-select RUN_FOLDER [--from 0.667] [--first 0] [--episodes 100] [--greedy] [--average]

The run must have kept its exports (schedule.keep_policies: true). Each export made at or
after --from of the run's steps runs held-out episodes first..first+episodes-1 behind the
shielded executor (sampled, or --greedy); the best is copied to RUN_FOLDER/policy_selected.pt
and every score written to RUN_FOLDER/selection.json (ssq_ros/training/select.py). Deploy it
with the deploy graphs' policy_file:=policy_selected.pt; measure it on other episodes than these.
With --average no choice is made: the candidates' geometric mean (the induced policy of their
mean critic) goes to RUN_FOLDER/policy_averaged.pt and its score to averaging.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ssq_ros.config import ConfigError
from ssq_ros.training.select import (
    AVERAGE_RECORD,
    AVERAGED,
    RECORD,
    SELECTED,
    Candidate,
    average_candidates,
    candidates,
    select_policy,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='ssq-select', description=__doc__.splitlines()[0])
    parser.add_argument('run', type=Path, help='a finished ssq-train run folder')
    parser.add_argument('--from', dest='from_share', type=float, default=2 / 3,
                        help='candidates: the exports made at or after this share of the '
                             "run's steps (default 2/3)")
    parser.add_argument('--first', type=int, default=0, help='first validation episode')
    parser.add_argument('--episodes', type=int, default=100, help='validation episodes')
    parser.add_argument('--greedy', action='store_true',
                        help='score the greedy executor (default: sampled, as the '
                             'policy_executor deploys it with its parameter greedy: false)')
    parser.add_argument('--average', action='store_true',
                        help="deploy the candidates' geometric mean instead of the best one")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        if args.average:
            record = average_candidates(args.run, from_share=args.from_share,
                                        first=args.first, episodes=args.episodes,
                                        greedy=args.greedy)
            score = record['score']
            print(f"the geometric mean of {len(record['averaged'])} exports: "
                  f"{score['successes']}/{score['episodes']} on episodes {args.first}-"
                  f'{args.first + args.episodes - 1} in {time.monotonic() - started:.0f} s: '
                  f'{args.run / AVERAGED}; its score in {args.run / AVERAGE_RECORD}')
            return 0
        total = len(candidates(args.run, args.from_share))
        done = []

        def report(candidate: Candidate) -> None:
            done.append(candidate)
            elapsed = time.monotonic() - started
            print(f'[{len(done)}/{total}] step {candidate.step}: {candidate.successes}/'
                  f'{candidate.episodes} reached, mean return {candidate.mean_return:.1f} '
                  f'({elapsed / len(done):.0f} s per export, ETA '
                  f'{elapsed / len(done) * (total - len(done)):.0f} s)', flush=True)

        record = select_policy(args.run, from_share=args.from_share, first=args.first,
                               episodes=args.episodes, greedy=args.greedy, report=report)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f'ssq-select: {exc}', file=sys.stderr)
        return 2
    best = record['selected']
    print(f"selected the export of step {best['step']} ({best['successes']}/{best['episodes']}"
          f' on episodes {args.first}-{args.first + args.episodes - 1}): '
          f'{args.run / SELECTED}; scores in {args.run / RECORD}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
