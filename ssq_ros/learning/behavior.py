"""Behavior policies mu supported on a safe set: the only policies that ever act while learning.

Numpy only. The caller tells the behavior which actions are safe (a boolean mask for a discrete
action set, an `is_safe` predicate for continuous actions); mu puts exactly zero mass outside that
set, so every transition it produces stays inside the safe set (the method's Assumption A).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

# Probability vectors handed to `sample` must sum to one within this tolerance.
_SUM_TOLERANCE = 1e-6


class DiscreteSafeBehavior:
    """mu(a|s) ∝ weight[a] * preference[a] on the allowed actions, exactly 0 elsewhere.

    `exploration_weights` fixes a state-independent prior over the n actions (uniform if None);
    `preference` is an optional per-state reweighting (e.g. a nominal controller's bias).
    """

    def __init__(self, n_actions: int, exploration_weights: Sequence[float] | None = None):
        if isinstance(n_actions, bool) or not isinstance(n_actions, (int, np.integer)) \
                or n_actions < 1:
            raise ValueError(f'n_actions must be a positive integer, got {n_actions!r}')
        self.n_actions = int(n_actions)
        if exploration_weights is None:
            weights = np.ones(self.n_actions)
        else:
            weights = _nonnegative_vector(exploration_weights, self.n_actions,
                                          'exploration_weights')
            if not weights.any():
                raise ValueError('exploration_weights are all zero: mu could never act')
        self.weights = weights

    def distribution(self, allowed: np.ndarray, preference: np.ndarray | None = None
                     ) -> np.ndarray:
        """Probability vector(s) over the actions; `allowed` is (n,) or (B, n) booleans.

        Raises ValueError when no allowed action has positive mass or an input is malformed.
        """
        allowed = np.asarray(allowed)
        if allowed.dtype != bool:
            raise ValueError(f'allowed must be a boolean mask, got dtype {allowed.dtype}')
        if allowed.ndim not in (1, 2) or allowed.shape[-1] != self.n_actions:
            raise ValueError(f'allowed must have shape ({self.n_actions},) or '
                             f'(B, {self.n_actions}), got {allowed.shape}')
        mass = np.where(allowed, self.weights, 0.0)
        if preference is not None:
            preference = np.asarray(preference, dtype=float)
            if preference.shape != allowed.shape:
                raise ValueError(f'preference has shape {preference.shape}, '
                                 f'allowed has {allowed.shape}')
            if not np.all(np.isfinite(preference)) or np.any(preference < 0):
                raise ValueError('preference must be finite and non-negative')
            mass = mass * preference
        total = mass.sum(axis=-1, keepdims=True)
        if np.any(total <= 0):
            raise ValueError('no allowed action has positive probability: the safe set offers '
                             'mu no action here')
        return mass / total

    def sample(self, probs: np.ndarray, rng: np.random.Generator) -> int:
        """Draw one action index from a probability vector made by `distribution`."""
        probs = np.asarray(probs, dtype=float)
        if probs.shape != (self.n_actions,):
            raise ValueError(f'probs must have shape ({self.n_actions},), got {probs.shape}')
        return sample_index(probs, rng)


def sample_index(probs: np.ndarray, rng: np.random.Generator) -> int:
    """Draw an index from a probability vector; a zero-probability index is never returned."""
    probs = np.asarray(probs, dtype=float)
    if probs.ndim != 1 or not np.all(np.isfinite(probs)) or np.any(probs < 0) \
            or abs(probs.sum() - 1.0) > _SUM_TOLERANCE:
        raise ValueError('probs must be a finite non-negative vector summing to 1')
    # Inverse-CDF draw; the guard covers round-off at the top of the cumulative sum.
    cdf = np.cumsum(probs)
    index = int(np.searchsorted(cdf, rng.random() * cdf[-1], side='right'))
    if index >= probs.size or probs[index] == 0.0:
        index = int(np.flatnonzero(probs)[-1])
    return index


class ContinuousSafeBehavior:
    """mu(.|s): N(nominal, sigma) clipped to [low, high], rejection-sampled through `is_safe`.

    One call of `support_samples` draws K actions of mu at one state. Executing a uniformly chosen
    row is an exact draw from mu, and the K rows drawn at s' are the Monte-Carlo support the
    learner's target averages over.

    The fallback rule (the same as the discrete behavior's): every row is an action `is_safe`
    accepted, unless it accepted none. When `max_attempts` batches of K give fewer than K
    accepted actions, the missing rows are redrawn uniformly, with replacement, from the
    accepted ones, so mu stays the Gaussian truncated to the accepted set (a uniformly chosen row
    is still an exact draw from it) however hard the accepted actions were to find. Only when
    none was accepted are all K rows the caller's `fallback` action (e.g. hold), which the caller
    guarantees to be safe; `fallback_rows` is then K (else 0). Until 2026-12 the missing rows
    were the fallback even when some were accepted, which put a hold atom into mu whose weight
    depended on `max_attempts`.
    """

    def __init__(self, low, high, sigma, num_samples: int, max_attempts: int):
        self.low = _finite_vector(low, None, 'low')
        dim = self.low.size
        self.high = _finite_vector(high, dim, 'high')
        if np.any(self.high < self.low):
            raise ValueError(f'high must be >= low elementwise (low={self.low}, '
                             f'high={self.high})')
        if np.ndim(sigma) == 0:
            sigma = np.full(dim, sigma, dtype=float)
        self.sigma = _finite_vector(sigma, dim, 'sigma')
        if np.any(self.sigma <= 0):
            raise ValueError(f'sigma must be positive, got {self.sigma}')
        for name, value in (('num_samples', num_samples), ('max_attempts', max_attempts)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f'{name} must be a positive integer, got {value!r}')
        self.num_samples = int(num_samples)
        self.max_attempts = int(max_attempts)
        self.dim = dim
        self.fallback_rows = 0

    def support_samples(self, nominal: np.ndarray, is_safe: Callable[[np.ndarray], np.ndarray],
                        rng: np.random.Generator, fallback: np.ndarray) -> np.ndarray:
        """K safe actions of mu at one state, shape (K, d)."""
        nominal = _finite_vector(nominal, self.dim, 'nominal')
        fallback = _finite_vector(fallback, self.dim, 'fallback')
        if np.any(fallback < self.low) or np.any(fallback > self.high):
            raise ValueError(f'fallback {fallback} lies outside [low, high]')
        K = self.num_samples
        kept: list[np.ndarray] = []
        count = 0
        for _ in range(self.max_attempts):
            batch = rng.normal(nominal, self.sigma, size=(K, self.dim))
            batch = np.clip(batch, self.low, self.high)
            safe = np.asarray(is_safe(batch))
            if safe.shape != (K,) or safe.dtype != bool:
                raise ValueError(f'is_safe must return a boolean array of shape ({K},), got '
                                 f'{safe.dtype} {safe.shape}')
            kept.append(batch[safe])
            count += int(safe.sum())
            if count >= K:
                break
        samples = np.concatenate(kept, axis=0)[:K]
        found = samples.shape[0]
        self.fallback_rows = 0 if found else K
        if not found:
            return np.tile(fallback, (K, 1))
        if found < K:
            samples = np.concatenate([samples, samples[rng.integers(found, size=K - found)]])
        return samples

    def sample(self, samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One of the K rows, uniformly: an exact draw from mu at the state they were made at."""
        samples = np.asarray(samples, dtype=float)
        if samples.ndim != 2 or samples.shape[1] != self.dim or samples.shape[0] < 1:
            raise ValueError(f'samples must have shape (K, {self.dim}), got {samples.shape}')
        return samples[int(rng.integers(samples.shape[0]))].copy()


def _finite_vector(value, size: int | None, name: str) -> np.ndarray:
    vector = np.asarray(value, dtype=float)
    if vector.ndim != 1 or (size is not None and vector.size != size) or vector.size == 0:
        expected = f'({size},)' if size is not None else 'a non-empty vector'
        raise ValueError(f'{name} must have shape {expected}, got {vector.shape}')
    if not np.all(np.isfinite(vector)):
        raise ValueError(f'{name} contains NaN or inf: {vector}')
    return vector


def _nonnegative_vector(value, size: int, name: str) -> np.ndarray:
    vector = _finite_vector(value, size, name)
    if np.any(vector < 0):
        raise ValueError(f'{name} must be non-negative, got {vector}')
    return vector
