"""Evaluation metrics: unsafe visits, discounted returns-to-go, value calibration."""
from __future__ import annotations

import numpy as np


class UnsafeVisitCounter:
    """Counts every step whose state was judged unsafe (the project's zero-visit claim)."""

    def __init__(self) -> None:
        self.count = 0
        self.steps = 0

    def record(self, unsafe) -> None:
        """Record one verdict or an array of them."""
        verdicts = np.asarray(unsafe)
        if verdicts.dtype != bool:
            raise ValueError(f'unsafe verdicts must be booleans, got dtype {verdicts.dtype}')
        self.count += int(verdicts.sum())
        self.steps += int(verdicts.size)


def discounted_returns_to_go(rewards, gamma: float) -> np.ndarray:
    """G_t = r_t + gamma G_{t+1} within one episode (G after the last step taken as 0)."""
    rewards = np.asarray(rewards, dtype=float)
    if rewards.ndim != 1 or not np.all(np.isfinite(rewards)):
        raise ValueError('rewards must be a finite 1-D array')
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f'gamma must be in [0, 1], got {gamma}')
    returns = np.empty_like(rewards)
    running = 0.0
    for t in range(rewards.size - 1, -1, -1):
        running = rewards[t] + gamma * running
        returns[t] = running
    return returns


def value_calibration_error(q_predicted, returns) -> float:
    """mean |Q - G| / mean |G| of Q(s_t, a_t) against observed Monte-Carlo returns G_t."""
    q_predicted = np.asarray(q_predicted, dtype=float)
    returns = np.asarray(returns, dtype=float)
    if q_predicted.shape != returns.shape or q_predicted.size == 0:
        raise ValueError(f'shapes differ or are empty: {q_predicted.shape} vs {returns.shape}')
    if not (np.all(np.isfinite(q_predicted)) and np.all(np.isfinite(returns))):
        raise ValueError('values and returns must be finite')
    scale = np.mean(np.abs(returns))
    if scale == 0.0:
        raise ValueError('returns are all zero: relative error undefined')
    return float(np.mean(np.abs(q_predicted - returns)) / scale)
