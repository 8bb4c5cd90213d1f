"""Exact dynamic programming on the gridworld: the answers the learners are checked against.

Terminal states have value 0, matching the learner's (1 - done) in its target.
"""
from __future__ import annotations

import numpy as np
import torch

from ssq_ros.gridworld.env import GridWorld
from ssq_ros.learning.critic import soft_value_discrete


def _backup(world: GridWorld, values: np.ndarray, gamma: float) -> np.ndarray:
    return world.expected_rewards() + gamma * world.transitions @ np.where(world.terminal, 0.0,
                                                                           values)


def _iterate(world: GridWorld, gamma: float, value_of_q, tol: float,
             max_iterations: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f'gamma must be in [0, 1), got {gamma}')
    values = np.zeros(world.n_states)
    for _ in range(max_iterations):
        q = _backup(world, values, gamma)
        new_values = np.where(world.terminal, 0.0, value_of_q(q))
        if np.max(np.abs(new_values - values)) < tol:
            return _backup(world, new_values, gamma), new_values
        values = new_values
    raise RuntimeError(f'value iteration did not converge to {tol} in {max_iterations} sweeps')


def soft_value_iteration(world: GridWorld, mu: np.ndarray, alpha: float, gamma: float,
                         tol: float = 1e-10, max_iterations: int = 100_000
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Fixed point of the KL-regularized operator: (Q*_alpha (S, A), V*_alpha (S,))."""
    mu_t = torch.as_tensor(mu, dtype=torch.float64)

    def soft_value(q: np.ndarray) -> np.ndarray:
        return soft_value_discrete(torch.as_tensor(q), mu_t, alpha).numpy()

    return _iterate(world, gamma, soft_value, tol, max_iterations)


def support_optimal_value_iteration(world: GridWorld, allowed: np.ndarray, gamma: float,
                                    tol: float = 1e-10, max_iterations: int = 100_000
                                    ) -> tuple[np.ndarray, np.ndarray]:
    """Optimal values over policies restricted to the allowed actions (mu's support)."""
    def best_allowed(q: np.ndarray) -> np.ndarray:
        return np.where(allowed, q, -np.inf).max(axis=1)

    return _iterate(world, gamma, best_allowed, tol, max_iterations)


def policy_evaluation(world: GridWorld, policy: np.ndarray, gamma: float) -> np.ndarray:
    """Exact V^pi (S,) of a stochastic policy (S, A) by one linear solve."""
    if policy.shape != (world.n_states, world.n_actions):
        raise ValueError(f'policy must be ({world.n_states}, {world.n_actions}), '
                         f'got {policy.shape}')
    live = ~world.terminal
    p_pi = np.einsum('sa,sat->st', policy, world.transitions)[np.ix_(live, live)]
    r_pi = np.einsum('sa,sa->s', policy, world.expected_rewards())[live]
    values = np.zeros(world.n_states)
    values[live] = np.linalg.solve(np.eye(live.sum()) - gamma * p_pi, r_pi)
    return values
