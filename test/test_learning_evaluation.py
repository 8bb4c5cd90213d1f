"""Evaluation metrics against hand computations."""
import numpy as np
import pytest

from ssq_ros.learning.evaluation import (
    UnsafeVisitCounter,
    discounted_returns_to_go,
    value_calibration_error,
)


def test_returns_to_go_by_hand():
    returns = discounted_returns_to_go([1.0, 0.0, 2.0], gamma=0.5)
    np.testing.assert_allclose(returns, [1.0 + 0.25 * 2.0, 0.5 * 2.0, 2.0])
    assert discounted_returns_to_go([], 0.9).size == 0


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
