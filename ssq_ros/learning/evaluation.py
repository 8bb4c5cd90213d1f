"""Evaluation metrics: unsafe visits, discounted and soft returns-to-go, value calibration."""
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


def soft_returns_to_go(rewards, kl_costs, gamma: float) -> np.ndarray:
    """The soft return the KL-regularized Q predicts, from (s_t, a_t) of one episode:

        G_t = r_t + sum_{k>t} gamma^(k-t) (r_k - alpha KL(pi(.|s_k) || mu(.|s_k)))

    `kl_costs[k]` = alpha KL(pi(.|s_k) || mu(.|s_k)) of the policy that chose a_k. Why this form:
    the target's fixed point is Q(s, a) = r + gamma E[V(s')] with V(s') = E_pi Q(s', .) -
    alpha KL(pi || mu) for pi ∝ mu exp(Q/alpha); unrolled along pi's trajectory, a_t is given (no
    KL at s_t) and every later state charges its KL. It is H_t + kl_costs[t] with H the
    discounted return of r - kl_costs; with kl_costs = 0 (mu itself) it is the plain return.
    """
    rewards = np.asarray(rewards, dtype=float)
    kl_costs = np.asarray(kl_costs, dtype=float)
    if kl_costs.shape != rewards.shape:
        raise ValueError(f'kl_costs {kl_costs.shape} and rewards {rewards.shape} differ')
    return discounted_returns_to_go(rewards - kl_costs, gamma) + kl_costs


def _pairs(q_predicted, returns) -> tuple[np.ndarray, np.ndarray]:
    q_predicted = np.asarray(q_predicted, dtype=float)
    returns = np.asarray(returns, dtype=float)
    if q_predicted.shape != returns.shape or q_predicted.size == 0:
        raise ValueError(f'shapes differ or are empty: {q_predicted.shape} vs {returns.shape}')
    if not (np.all(np.isfinite(q_predicted)) and np.all(np.isfinite(returns))):
        raise ValueError('values and returns must be finite')
    return q_predicted, returns


def value_calibration_bias(q_predicted, returns) -> float:
    """mean (Q - G) in return units: > 0 when Q over-estimates the returns it predicts."""
    q_predicted, returns = _pairs(q_predicted, returns)
    return float(np.mean(q_predicted - returns))


def value_calibration_error(q_predicted, returns) -> float:
    """mean |Q - G| / mean |G| of Q(s_t, a_t) against observed Monte-Carlo returns G_t."""
    q_predicted, returns = _pairs(q_predicted, returns)
    scale = np.mean(np.abs(returns))
    if scale == 0.0:
        raise ValueError('returns are all zero: relative error undefined')
    return float(np.mean(np.abs(q_predicted - returns)) / scale)
