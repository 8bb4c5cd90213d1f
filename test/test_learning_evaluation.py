"""Evaluation metrics against hand computations."""
import itertools
import math

import numpy as np
import pytest
import torch

from ssq_ros.learning.critic import masked_log
from ssq_ros.learning.evaluation import (
    UnsafeVisitCounter,
    discounted_returns_to_go,
    soft_returns_to_go,
    value_calibration_bias,
    value_calibration_error,
)
from ssq_ros.learning.extraction import induced_policy


def test_returns_to_go_by_hand():
    returns = discounted_returns_to_go([1.0, 0.0, 2.0], gamma=0.5)
    np.testing.assert_allclose(returns, [1.0 + 0.25 * 2.0, 0.5 * 2.0, 2.0])
    assert discounted_returns_to_go([], 0.9).size == 0


def test_soft_return_by_hand():
    """G_t = r_t + sum_{k>t} gamma^(k-t) (r_k - c_k): a_t is given, later states pay c_k."""
    returns = soft_returns_to_go([1.0, 2.0, 3.0], [0.5, 0.25, 1.0], gamma=0.5)
    # G_2 = 3; G_1 = 2 + 0.5 (3 - 1) = 3; G_0 = 1 + 0.5 (2 - 0.25) + 0.25 (3 - 1) = 2.375
    np.testing.assert_allclose(returns, [2.375, 3.0, 3.0])
    np.testing.assert_allclose(soft_returns_to_go([1.0, 2.0], [0.0, 0.0], 0.9),
                               discounted_returns_to_go([1.0, 2.0], 0.9))
    with pytest.raises(ValueError, match='differ'):
        soft_returns_to_go([1.0, 2.0], [0.0], 0.9)


def test_soft_return_of_the_induced_policy_averages_to_the_targets_fixed_point():
    """A 3-step episode whose state is the step (actions change only the reward), mu over 3
    actions with one masked. Q by backward induction of the critic's target
    y = r + gamma (1 - d) alpha log E_mu exp(Q'/alpha); the soft return of pi ∝ mu exp(Q/alpha),
    averaged over every trajectory with its probability, is Q(s_0, a_0) exactly."""
    alpha, gamma = 0.7, 0.9
    r = np.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0], [2.0, -0.5, 1.5]])
    mu = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.6, 0.0, 0.4]], dtype=torch.float64)
    q = np.zeros_like(r)
    v_next = 0.0
    for t in (2, 1, 0):  # terminal after step 2
        q[t] = r[t] + gamma * v_next
        v_next = alpha * torch.logsumexp(torch.as_tensor(q[t]) / alpha + masked_log(mu[t]),
                                         dim=-1).item()
    pi, kl = induced_policy(torch.as_tensor(q), masked_log(mu), alpha)
    pi, kl = pi.numpy(), kl.numpy()
    for a0 in (0, 1):
        expected = 0.0
        for a1, a2 in itertools.product(range(3), repeat=2):
            weight = pi[1, a1] * pi[2, a2]
            if weight == 0:
                continue
            g = soft_returns_to_go([r[0, a0], r[1, a1], r[2, a2]], alpha * kl, gamma)
            expected += weight * g[0]
        assert expected == pytest.approx(q[0, a0], rel=1e-12)
        # The plain return of the same policy misses the KL it pays.
        plain = sum(pi[1, a1] * pi[2, a2] * (r[0, a0] + gamma * r[1, a1] + gamma ** 2 * r[2, a2])
                    for a1, a2 in itertools.product(range(3), repeat=2))
        assert plain > q[0, a0] + 0.01
    assert math.isfinite(kl.sum())


def test_value_calibration_bias_is_signed_mean_difference():
    assert value_calibration_bias([1.0, -3.0], [2.0, -2.0]) == pytest.approx(-1.0)
    assert value_calibration_bias([3.0, 0.0], [1.0, 0.0]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        value_calibration_bias([], [])


def test_value_calibration_error_is_relative_mean_absolute_error():
    assert value_calibration_error([1.0, -3.0], [2.0, -2.0]) == pytest.approx(1.0 / 2.0)
    assert value_calibration_error([5.0, 5.0], [5.0, 5.0]) == 0.0


@pytest.mark.parametrize('q, g', [([1.0], [1.0, 2.0]), ([np.nan], [1.0]), ([1.0], [0.0]),
                                  ([], [])])
def test_value_calibration_error_rejects_bad_input(q, g):
    with pytest.raises(ValueError):
        value_calibration_error(q, g)


def test_returns_to_go_reject_bad_input():
    with pytest.raises(ValueError, match='finite'):
        discounted_returns_to_go([1.0, np.nan], 0.9)
    with pytest.raises(ValueError, match='gamma'):
        discounted_returns_to_go([1.0], 1.5)


def test_unsafe_visit_counter_counts_verdicts():
    counter = UnsafeVisitCounter()
    counter.record(False)
    counter.record(np.array([True, False, True]))
    assert (counter.count, counter.steps) == (2, 4)
    with pytest.raises(ValueError, match='boolean'):
        counter.record(np.array([1, 0]))
