"""Choose a run's deployed policy among its kept exports (schedule.keep_policies), on
validation episodes.

Late in a run the held-out success can swing by 20-35 points between two exports 10 000 steps
apart (the costly task, docs/results.md), so the last export is one draw among good and weak
networks. The candidates are the exports made at or after `from_share` of schedule.steps; each
runs the same held-out episodes behind the ShieldedExecutor, sampled or greedy as it will be
deployed. Most successes wins; ties go to the higher mean return, then to the later export.
The winner's success on the episodes it was chosen on is biased upwards (the best of several
draws): its worth is measured on other episodes (bench/bench_tasks_test.py --policy).

`average_candidates` instead deploys all of them at once: the normalised geometric mean of the
candidates' policies (`ssq_ros.deploy.export.average_policies`; for induced policies, the
induced policy of the mean critic), scored on the same episodes for the record only.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ssq_ros.deploy.executor import ShieldedExecutor
from ssq_ros.deploy.export import ExportedPolicy, average_policies, load_exported_policy
from ssq_ros.storage import atomic_write
from ssq_ros.training.config import TrainConfig
from ssq_ros.training.evaluate import EvalStats, evaluate_heldout, executor_actor
from ssq_ros.training.problem import ArmProblem, build_problem
from ssq_ros.training.provenance import provenance
from ssq_ros.training.run import KEPT_POLICIES, exports_from, read_run_config

SELECTED = 'policy_selected.pt'
RECORD = 'selection.json'
AVERAGED = 'policy_averaged.pt'
AVERAGE_RECORD = 'averaging.json'


@dataclass
class Candidate:
    """One kept export and its validation score."""

    step: int
    file: str
    successes: int = 0
    episodes: int = 0
    mean_return: float = float('nan')

    def key(self) -> tuple:
        return (self.successes, self.mean_return, self.step)


def candidates(folder: Path, from_share: float) -> list[tuple[int, Path]]:
    """The kept exports made at or after from_share of the run's schedule.steps."""
    return exports_from(folder, from_share, read_run_config(folder).schedule.steps)


def _check_episodes(first: int, episodes: int) -> None:
    if episodes < 1 or first < 0:
        raise ValueError(f'episodes must be >= 1 and first >= 0, got {episodes}, {first}')


def score(problem: ArmProblem, config: TrainConfig, policy: ExportedPolicy, where: str, *,
          first: int, episodes: int, greedy: bool) -> EvalStats:
    """`policy` behind the shielded executor on held-out episodes first..first+episodes-1; the
    executor's draws start from the run's seed for every policy scored (a fair comparison)."""
    # the run's torch threads (1 by default): more only contend with the simulator and the
    # support check, as in training
    torch.set_num_threads(config.schedule.torch_threads)
    executor = ShieldedExecutor(greedy=greedy, seed=config.schedule.seed)
    executor.set_policy(policy)
    stats = evaluate_heldout(problem, executor_actor(problem, executor), episodes,
                             config.learner.critic.gamma, first=first)
    if stats.unsafe:  # the executor acts inside mu's support: this would be a bug
        raise AssertionError(f'{where}: {stats.unsafe} unsafe states in validation')
    return stats


def _record(folder: Path, name: str, record: dict) -> dict:
    atomic_write(folder / name, lambda f: f.write(json.dumps(record, indent=1).encode()))
    return record


def select_policy(folder: str | Path, *, from_share: float = 2 / 3, first: int = 0,
                  episodes: int = 100, greedy: bool = False,
                  report: Callable[[Candidate], None] | None = None) -> dict:
    """Score the candidates on held-out episodes first..first+episodes-1, copy the best to
    policy_selected.pt and write selection.json; returns that record. `report(candidate)`
    after each one is scored."""
    folder = Path(folder)
    _check_episodes(first, episodes)
    config = read_run_config(folder)
    problem = build_problem(config)
    scored = []
    for step, path in candidates(folder, from_share):
        stats = score(problem, config, load_exported_policy(path), str(path), first=first,
                      episodes=episodes, greedy=greedy)
        candidate = Candidate(step, path.name, stats.successes, stats.episodes,
                              float(np.mean(stats.returns)))
        scored.append(candidate)
        if report is not None:
            report(candidate)
    best = max(scored, key=Candidate.key)
    data = (folder / KEPT_POLICIES / best.file).read_bytes()
    atomic_write(folder / SELECTED, lambda f: f.write(data))
    return _record(folder, RECORD, {
        'selected': asdict(best), 'candidates': [asdict(c) for c in scored],
        'first_episode': first, 'episodes': episodes, 'greedy': greedy,
        'from_share': from_share, **provenance()})


def average_candidates(folder: str | Path, *, from_share: float = 2 / 3, first: int = 0,
                       episodes: int = 100, greedy: bool = False) -> dict:
    """Write the candidates' geometric mean to policy_averaged.pt and its score on held-out
    episodes first..first+episodes-1 to averaging.json; returns that record."""
    folder = Path(folder)
    _check_episodes(first, episodes)
    config = read_run_config(folder)
    chosen = candidates(folder, from_share)
    data = average_policies([load_exported_policy(path) for _, path in chosen])
    stats = score(build_problem(config), config, load_exported_policy(data), AVERAGED,
                  first=first, episodes=episodes, greedy=greedy)
    atomic_write(folder / AVERAGED, lambda f: f.write(data))
    return _record(folder, AVERAGE_RECORD, {
        'averaged': [path.name for _, path in chosen],
        'score': {'successes': stats.successes, 'episodes': stats.episodes,
                  'mean_return': float(np.mean(stats.returns))},
        'first_episode': first, 'episodes': episodes, 'greedy': greedy,
        'from_share': from_share, **provenance()})
