"""Behavior cloning of mu: recovers a known behavior; its support is an estimate that leaks."""
import numpy as np
import pytest
import torch

from ssq_ros.config import ConfigError, parse
from ssq_ros.learning.cloned import ClonedBehavior, CloningConfig

# Tiny networks on a shared 2-core machine: a second torch thread only spins and contends
# (measured: 8x slower under load), so these tests run single-threaded.

CONFIG = dict(hidden_sizes=[32], lr=3e-3, steps=500, batch_size=256)


def discrete_data(rng, n=4000):
    """Two states; the true mu never takes action 2 in state 0 or action 0 in state 1."""
    mu = np.array([[0.5, 0.3, 0.0, 0.2], [0.0, 0.25, 0.25, 0.5]])
    states = rng.integers(2, size=n)
    actions = np.array([rng.choice(4, p=mu[s]) for s in states])
    return np.eye(2)[states], actions, mu


def test_discrete_clone_recovers_mu_but_leaks_until_thresholded():
    rng = np.random.default_rng(0)
    obs, actions, mu = discrete_data(rng)
    cloned = ClonedBehavior(2, parse(CloningConfig, CONFIG), n_actions=4, seed=0)
    cloned.fit(obs, actions, rng)
    probs = cloned.distribution(np.eye(2))
    np.testing.assert_allclose(probs, mu, atol=0.05)
    assert np.all(probs[mu == 0] > 0)  # a softmax is never exactly zero: the estimate leaks

    strict = ClonedBehavior(2, parse(CloningConfig, dict(CONFIG, min_prob=0.05)), n_actions=4,
                            seed=0)
    strict.fit(obs, actions, rng)
    strict_probs = strict.distribution(np.eye(2))
    assert np.all(strict_probs[mu == 0] == 0)
    np.testing.assert_allclose(strict_probs.sum(axis=1), 1.0)
    allowed = np.array([[True, False, False, True], [False, True, True, True]])
    masked = strict.distribution(np.eye(2), allowed)
    assert np.all(masked[~allowed] == 0)
    with pytest.raises(ValueError, match='no mass'):
        strict.distribution(np.eye(2)[:1], np.array([[False, False, True, False]]))


def test_continuous_clone_recovers_a_state_dependent_gaussian_and_filters_samples():
    rng = np.random.default_rng(1)
    obs = rng.uniform(-1, 1, size=(4000, 1))
    actions = np.clip(0.5 * obs + rng.normal(0, 0.1, size=obs.shape), -1, 1)
    cloned = ClonedBehavior(1, parse(CloningConfig, dict(CONFIG, steps=800)), action_dim=1,
                            low=[-1.0], high=[1.0], seed=0)
    cloned.fit(obs, actions, rng)
    samples = cloned.support_samples(np.array([0.8]), rng, num_samples=2000)
    assert abs(samples.mean() - 0.4) < 0.05 and abs(samples.std() - 0.1) < 0.03
    logp = cloned.log_prob(torch.tensor([[0.8]]), torch.tensor([[0.4]])).item()
    assert logp > np.log(1.0 / (0.2 * np.sqrt(2 * np.pi)))  # density peak of sigma 0.1 > 2

    def below_035(batch):
        return batch[:, 0] < 0.35

    safe = cloned.support_samples(np.array([0.8]), rng, 64, is_safe=below_035,
                                  fallback=np.array([0.0]))
    assert safe.shape == (64, 1) and np.all(below_035(safe))
    with pytest.raises(ValueError, match='fallback'):
        cloned.support_samples(np.array([0.8]), rng, 4, is_safe=below_035)


def test_cloning_rejects_bad_data_and_config():
    cloned = ClonedBehavior(2, parse(CloningConfig, CONFIG), n_actions=3)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match='obs'):
        cloned.fit(np.zeros((5, 3)), np.zeros(5, int), rng)
    with pytest.raises(ValueError, match='finite'):
        cloned.fit(np.full((5, 2), np.nan), np.zeros(5, int), rng)
    with pytest.raises(ConfigError, match='min_prob'):
        parse(CloningConfig, dict(min_prob=0.9))
    with pytest.raises(ValueError, match='exactly one'):
        ClonedBehavior(2, CloningConfig())
    with pytest.raises(ValueError, match='low and high'):
        ClonedBehavior(2, CloningConfig(), action_dim=2, low=[0.0], high=[1.0])
