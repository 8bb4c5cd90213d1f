"""Behavior policies: zero mass outside the safe set, exact draws, bad input refused."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ssq_ros.learning.behavior import ContinuousSafeBehavior, DiscreteSafeBehavior


def test_discrete_distribution_is_zero_outside_allowed_and_proportional_inside():
    mu = DiscreteSafeBehavior(4, exploration_weights=[1.0, 2.0, 3.0, 4.0])
    probs = mu.distribution(np.array([True, False, True, True]),
                            preference=np.array([1.0, 5.0, 2.0, 0.5]))
    assert probs[1] == 0.0
    np.testing.assert_allclose(probs, np.array([1.0, 0.0, 6.0, 2.0]) / 9.0)


def test_discrete_distribution_batches_rows_independently():
    mu = DiscreteSafeBehavior(3)
    probs = mu.distribution(np.array([[True, True, True], [False, True, False]]))
    np.testing.assert_allclose(probs, [[1 / 3, 1 / 3, 1 / 3], [0.0, 1.0, 0.0]])


def test_discrete_sample_never_returns_forbidden_action_and_matches_frequencies():
    mu = DiscreteSafeBehavior(5)
    probs = mu.distribution(np.array([False, True, False, True, False]),
                            preference=np.array([1.0, 1.0, 1.0, 3.0, 1.0]))
    rng = np.random.default_rng(0)
    draws = np.array([mu.sample(probs, rng) for _ in range(4000)])
    assert set(np.unique(draws)) == {1, 3}
    assert abs(np.mean(draws == 3) - 0.75) < 0.03


@pytest.mark.parametrize('allowed, preference, message', [
    (np.zeros(3, dtype=bool), None, 'no allowed action'),
    (np.array([True, False, True]), np.array([0.0, 1.0, 0.0]), 'no allowed action'),
    (np.ones(4, dtype=bool), None, 'shape'),
    (np.ones(3), None, 'boolean'),
    (np.ones(3, dtype=bool), np.array([1.0, np.nan, 1.0]), 'finite'),
    (np.ones(3, dtype=bool), np.array([1.0, -1.0, 1.0]), 'non-negative'),
    (np.ones(3, dtype=bool), np.ones(2), 'preference has shape'),
])
def test_discrete_distribution_rejects_bad_input(allowed, preference, message):
    with pytest.raises(ValueError, match=message):
        DiscreteSafeBehavior(3).distribution(allowed, preference)


@pytest.mark.parametrize('args', [(0,), (2.5,), (True,), (3, [1.0, 1.0]), (2, [1.0, np.inf]),
                                  (2, [0.0, 0.0]), (2, [-1.0, 1.0])])
def test_discrete_constructor_rejects_bad_parameters(args):
    with pytest.raises(ValueError):
        DiscreteSafeBehavior(*args)


@pytest.mark.parametrize('probs', [[0.5, 0.6], [np.nan, 1.0], [1.5, -0.5], [1.0]])
def test_discrete_sample_rejects_malformed_probabilities(probs):
    with pytest.raises(ValueError, match='probs'):
        DiscreteSafeBehavior(2).sample(np.array(probs), np.random.default_rng(0))


def half_plane_is_safe(batch: np.ndarray) -> np.ndarray:
    """Safe when the first coordinate is negative: about half of the Gaussian's mass."""
    return batch[:, 0] < 0.0


def make_continuous(num_samples: int = 16, max_attempts: int = 10) -> ContinuousSafeBehavior:
    return ContinuousSafeBehavior(low=[-1.0, -1.0], high=[1.0, 1.0], sigma=0.5,
                                  num_samples=num_samples, max_attempts=max_attempts)


def test_continuous_samples_all_pass_is_safe_and_stay_in_bounds():
    mu = make_continuous()
    rng = np.random.default_rng(1)
    for _ in range(50):
        samples = mu.support_samples(np.array([0.0, 0.9]), half_plane_is_safe, rng,
                                     fallback=np.array([-0.5, 0.0]))
        assert samples.shape == (16, 2)
        assert np.all(half_plane_is_safe(samples))
        assert np.all(samples >= -1.0) and np.all(samples <= 1.0)
        action = mu.sample(samples, rng)
        assert any(np.array_equal(action, row) for row in samples)


def test_continuous_fills_with_fallback_when_nothing_passes():
    mu = make_continuous(num_samples=8, max_attempts=3)
    calls = []

    def nothing_is_safe(batch):
        calls.append(batch.shape)
        return np.zeros(batch.shape[0], dtype=bool)

    fallback = np.array([0.0, 0.0])
    samples = mu.support_samples(np.array([0.3, 0.3]), nothing_is_safe,
                                 np.random.default_rng(2), fallback)
    assert calls == [(8, 2)] * 3
    assert mu.fallback_rows == 8
    np.testing.assert_array_equal(samples, np.zeros((8, 2)))


def test_continuous_partial_fill_redraws_accepted_samples_never_the_fallback():
    mu = make_continuous(num_samples=64, max_attempts=1)
    fallback = np.array([-1.0, 0.0])
    rng = np.random.default_rng(3)
    accepted = []

    def half_plane_recorded(batch):
        verdict = half_plane_is_safe(batch)
        accepted.extend(map(tuple, batch[verdict]))
        return verdict

    # The nominal sits far on the unsafe side: most samples are rejected, some are accepted.
    samples = mu.support_samples(np.array([0.6, 0.0]), half_plane_recorded, rng, fallback)
    assert 0 < len(accepted) < 64 and mu.fallback_rows == 0
    assert samples.shape == (64, 2) and np.all(half_plane_is_safe(samples))
    # Every row is one of the accepted actions, and every accepted action is kept.
    assert {tuple(row) for row in samples} == set(accepted)


@pytest.mark.parametrize('nominal, fallback, is_safe, message', [
    ([0.0, np.nan], [0.0, 0.0], half_plane_is_safe, 'nominal'),
    ([0.0, 0.0, 0.0], [0.0, 0.0], half_plane_is_safe, 'nominal'),
    ([0.0, 0.0], [0.0, 2.0], half_plane_is_safe, 'outside'),
    ([0.0, 0.0], [0.0, np.inf], half_plane_is_safe, 'fallback'),
    ([0.0, 0.0], [0.0, 0.0], lambda b: np.ones(3, dtype=bool), 'is_safe'),
    ([0.0, 0.0], [0.0, 0.0], lambda b: np.ones(b.shape[0]), 'is_safe'),
])
def test_continuous_rejects_bad_input(nominal, fallback, is_safe, message):
    with pytest.raises(ValueError, match=message):
        make_continuous().support_samples(np.array(nominal), is_safe,
                                          np.random.default_rng(0), np.array(fallback))


@pytest.mark.parametrize('kwargs', [
    dict(low=[0.0], high=[-1.0], sigma=0.1, num_samples=4, max_attempts=2),
    dict(low=[0.0], high=[1.0], sigma=0.0, num_samples=4, max_attempts=2),
    dict(low=[0.0], high=[1.0], sigma=[0.1, 0.1], num_samples=4, max_attempts=2),
    dict(low=[0.0], high=[1.0], sigma=0.1, num_samples=0, max_attempts=2),
    dict(low=[0.0], high=[1.0], sigma=0.1, num_samples=4, max_attempts=0),
    dict(low=[np.nan], high=[1.0], sigma=0.1, num_samples=4, max_attempts=2),
])
def test_continuous_constructor_rejects_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        ContinuousSafeBehavior(**kwargs)


def test_continuous_sample_rejects_wrong_shape():
    with pytest.raises(ValueError, match='samples'):
        make_continuous().sample(np.zeros((4, 3)), np.random.default_rng(0))


@settings(max_examples=200, deadline=None)
@given(allowed=arrays(bool, 6), preference=arrays(np.float64, 6, elements=st.floats(0, 10)),
       seed=st.integers(0, 2**32 - 1))
def test_discrete_behavior_never_puts_mass_outside_the_allowed_set(allowed, preference, seed):
    mu = DiscreteSafeBehavior(6)
    if not np.any(allowed & (preference > 0)):
        with pytest.raises(ValueError, match='no allowed action'):
            mu.distribution(allowed, preference)
        return
    probs = mu.distribution(allowed, preference)
    assert np.all(probs[~allowed] == 0.0) and probs.sum() == pytest.approx(1.0)
    assert allowed[mu.sample(probs, np.random.default_rng(seed))]
