"""Statistics for results tables: what a number over few seeds and episodes can claim.

Success over held-out episodes is a binomial count; a table of (seed, episode) outcomes per
method is summarised the way rliable recommends (Agarwal et al., 2021, "Deep RL at the edge of
the statistical precipice"): the interquartile mean over runs with a stratified-bootstrap 95 %
interval (seeds resampled within each task), and the probability that one method beats another
on a run drawn at random. Written here with numpy only (rliable's pins do not fit ours).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ['iqm', 'probability_of_improvement', 'stratified_bootstrap_interval',
           'wilson_interval']

Z95 = 1.959963984540054
"""the standard normal quantile of 0.975"""


def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95 % by default): unlike the normal
    approximation it stays inside [0, 1] and is not empty at 0 or n successes."""
    if trials <= 0:
        raise ValueError(f'trials must be positive, got {trials}')
    if not 0 <= successes <= trials:
        raise ValueError(f'successes must be in [0, {trials}], got {successes}')
    p = successes / trials
    denominator = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    # at 0 or n successes the bound is exactly 0 or 1 (rounding would leave 1 - 1e-16)
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


def iqm(scores: Sequence[float] | np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50 % of the scores. Each sorted score counts
    by how much of its 1/n share of the mass lies within the middle half, so a count not
    divisible by 4 is trimmed exactly (5 scores: weights 0, .75, 1, .75, 0)."""
    values = np.sort(np.asarray(scores, dtype=float).ravel())
    n = values.size
    if n == 0:
        raise ValueError('iqm of no scores')
    if not np.all(np.isfinite(values)):
        raise ValueError('iqm of non-finite scores')
    # Score i covers [i/n, (i+1)/n] of the sorted mass; keep the part within [0.25, 0.75].
    edges = np.arange(n + 1) / n
    weights = np.clip(np.minimum(edges[1:], 0.75) - np.maximum(edges[:-1], 0.25), 0.0, None)
    return float(weights @ values / weights.sum())


def stratified_bootstrap_interval(scores_by_task: Sequence[Sequence[float]],
                                  statistic=iqm, samples: int = 2000, level: float = 0.95,
                                  seed: int = 0) -> tuple[float, float, float]:
    """(statistic of all runs, lower, upper): runs resampled with replacement within each task
    (stratum), the statistic taken over the pooled resample, the percentile interval."""
    strata = [np.asarray(s, dtype=float).ravel() for s in scores_by_task]
    if not strata or any(s.size == 0 for s in strata):
        raise ValueError('every task needs at least one run')
    if not 0.0 < level < 1.0:
        raise ValueError(f'level must be in (0, 1), got {level}')
    rng = np.random.default_rng(seed)
    point = statistic(np.concatenate(strata))
    values = np.empty(samples)
    for k in range(samples):
        values[k] = statistic(np.concatenate([s[rng.integers(0, s.size, s.size)]
                                              for s in strata]))
    tail = (1.0 - level) / 2
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(point), float(low), float(high)


def probability_of_improvement(x_by_task: Sequence[Sequence[float]],
                               y_by_task: Sequence[Sequence[float]]) -> float:
    """P(X > Y) averaged over tasks, ties counting one half: the chance that a run of method X
    scores above a run of method Y on the same task (the Mann-Whitney U statistic / (m n))."""
    if len(x_by_task) != len(y_by_task) or not x_by_task:
        raise ValueError('both methods need runs on the same, non-empty list of tasks')
    per_task = []
    for x, y in zip(x_by_task, y_by_task, strict=True):
        x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
        if x.size == 0 or y.size == 0:
            raise ValueError('every task needs at least one run of each method')
        greater = (x[:, None] > y[None, :]).mean()
        ties = (x[:, None] == y[None, :]).mean()
        per_task.append(greater + 0.5 * ties)
    return float(np.mean(per_task))
