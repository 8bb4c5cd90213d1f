"""A behavior known only through its data: mu-hat fitted by behavior cloning on logged (s, a).

Discrete actions: a classifier; continuous actions: a state-conditioned diagonal Gaussian. It plays
the role of `DiscreteSafeBehavior.distribution` / `ContinuousSafeBehavior.support_samples` when
the behavior that produced the data cannot be queried.

Risk: the support of mu-hat is an *estimate*. A softmax never assigns exactly zero, and a Gaussian
puts mass everywhere, so mu-hat leaks outside the true support and the safety argument (pi << mu)
no longer holds by construction. Mitigations here: `min_prob` zeroes small discrete
probabilities, the caller's `allowed` mask / `is_safe` predicate is intersected with mu-hat
whenever one exists. Without them, treat a cloned behavior as unsafe to execute.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ssq_ros.config import parse, spec, to_dict
from ssq_ros.learning.behavior import ContinuousSafeBehavior
from ssq_ros.learning.extraction import GaussianPolicy
from ssq_ros.learning.networks import mlp, seeded_init


@dataclass
class CloningConfig:
    """How mu-hat is fitted."""

    hidden_sizes: tuple[int, ...] = spec((64, 64), low=1, high=4096,
                                         doc='hidden layer widths of the cloning network')
    lr: float = spec(1e-3, low=1e-7, high=1.0, doc='Adam learning rate')
    steps: int = spec(2000, low=1, high=10_000_000, doc='gradient steps of `fit`')
    batch_size: int = spec(256, low=1, high=65536, doc='(s, a) pairs per step')
    min_prob: float = spec(0.0, low=0.0, high=0.5,
                           doc='discrete: probabilities below this are set to zero (limits '
                               'leakage outside the true support)')


class ClonedBehavior:
    """mu-hat: build with n_actions (classifier) or action_dim plus low/high (Gaussian)."""

    def __init__(self, obs_dim: int, config: CloningConfig, *, n_actions: int | None = None,
                 action_dim: int | None = None, low=None, high=None, seed: int = 0):
        if (n_actions is None) == (action_dim is None):
            raise ValueError('give exactly one of n_actions (discrete) or action_dim '
                             '(continuous)')
        self.config = parse(CloningConfig, to_dict(config), 'CloningConfig')
        self.obs_dim, self.n_actions, self.action_dim = obs_dim, n_actions, action_dim
        self.is_discrete = n_actions is not None
        if not self.is_discrete:
            self.low = np.asarray(low, dtype=float)
            self.high = np.asarray(high, dtype=float)
            if self.low.shape != (action_dim,) or self.high.shape != (action_dim,):
                raise ValueError(f'low and high must have shape ({action_dim},)')
        with seeded_init(seed):
            if self.is_discrete:
                self.net = mlp(obs_dim, self.config.hidden_sizes, n_actions)
            else:  # the same state-conditioned Gaussian that extraction fits
                self.net = GaussianPolicy(obs_dim, action_dim, self.config.hidden_sizes)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.config.lr)

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log mu-hat(a|s): discrete actions (B,) int64 or continuous (B, d) -> (B,)."""
        if self.is_discrete:
            return torch.log_softmax(self.net(obs), dim=-1).gather(
                -1, actions.view(-1, 1)).squeeze(-1)
        return self.net.log_prob(obs, actions)

    def fit(self, obs: np.ndarray, actions: np.ndarray, rng: np.random.Generator) -> float:
        """Maximum likelihood on logged pairs; returns the mean loss of the last 10% of steps."""
        obs_t = torch.as_tensor(np.asarray(obs), dtype=torch.float32)
        dtype = torch.int64 if self.is_discrete else torch.float32
        actions_t = torch.as_tensor(np.asarray(actions), dtype=dtype)
        if obs_t.ndim != 2 or obs_t.shape[1] != self.obs_dim or len(actions_t) != len(obs_t):
            raise ValueError(f'obs must be (N, {self.obs_dim}) with N actions, got '
                             f'{tuple(obs_t.shape)} and {tuple(actions_t.shape)}')
        if not (torch.isfinite(obs_t).all() and torch.isfinite(actions_t.float()).all()):
            raise ValueError('obs and actions must be finite')
        tail = []
        for step in range(self.config.steps):
            index = torch.as_tensor(rng.integers(len(obs_t), size=self.config.batch_size))
            loss = -self.log_prob(obs_t[index], actions_t[index]).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if step >= 0.9 * self.config.steps:
                tail.append(loss.item())
        return float(np.mean(tail))

    @torch.no_grad()
    def distribution(self, obs: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
        """Discrete mu-hat(.|s) for obs (B, obs_dim): (B, n), small probabilities zeroed and,
        when a safety mask is known, restricted to it."""
        if not self.is_discrete:
            raise ValueError('distribution() is for discrete actions; use support_samples()')
        probs = torch.softmax(self.net(torch.as_tensor(obs, dtype=torch.float32)), dim=-1)
        probs = probs.double().numpy()
        probs[probs < self.config.min_prob] = 0.0
        if allowed is not None:
            probs = np.where(np.asarray(allowed, dtype=bool), probs, 0.0)
        total = probs.sum(axis=-1, keepdims=True)
        if np.any(total <= 0):
            raise ValueError('cloned behavior has no mass on any allowed action here')
        return probs / total

    @torch.no_grad()
    def support_samples(self, obs: np.ndarray, rng: np.random.Generator, num_samples: int,
                        is_safe: Callable[[np.ndarray], np.ndarray] | None = None,
                        fallback: np.ndarray | None = None, max_attempts: int = 10
                        ) -> np.ndarray:
        """K continuous actions of mu-hat at one state, (K, d). With `is_safe` (and the safe
        `fallback`) they are rejection-sampled exactly like ContinuousSafeBehavior."""
        if self.is_discrete:
            raise ValueError('support_samples() is for continuous actions; use distribution()')
        dist = self.net.distribution(torch.as_tensor(obs, dtype=torch.float32)[None])
        mean = np.clip(dist.loc[0].double().numpy(), self.low, self.high)
        std = dist.scale[0].double().numpy()
        sampler = ContinuousSafeBehavior(self.low, self.high, std, num_samples, max_attempts)
        if is_safe is None:
            def accept_all(batch: np.ndarray) -> np.ndarray:
                return np.ones(batch.shape[0], dtype=bool)
            return sampler.support_samples(mean, accept_all, rng, mean)
        if fallback is None:
            raise ValueError('is_safe needs the caller\'s safe fallback action')
        return sampler.support_samples(mean, is_safe, rng, fallback)


