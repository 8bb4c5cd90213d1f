"""bench/stats.py: the intervals and summaries the results tables quote."""
import numpy as np
import pytest

from bench.stats import (
    iqm,
    probability_of_improvement,
    stratified_bootstrap_interval,
    wilson_interval,
)


def test_wilson_interval_matches_hand_values_and_stays_in_the_unit_interval():
    # 27/30: the 74-97 % quoted for one seed of 30 episodes (issue 15)
    low, high = wilson_interval(27, 30)
    assert low == pytest.approx(0.7438, abs=1e-4) and high == pytest.approx(0.9654, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and 0.25 < wilson_interval(0, 10)[1] < 0.35
    assert wilson_interval(10, 10)[1] == 1.0 and wilson_interval(10, 10)[0] > 0.65
    # more trials, narrower
    assert np.diff(wilson_interval(90, 100)) < np.diff(wilson_interval(9, 10))
    for bad in ((-1, 10), (11, 10), (0, 0)):
        with pytest.raises(ValueError):
            wilson_interval(*bad)


def test_iqm_trims_a_quarter_at_each_end_exactly():
    assert iqm([1, 2, 3, 4]) == pytest.approx(2.5)
    assert iqm([0, 0, 0, 0, 100, 100, 100, 100]) == pytest.approx(50.0)
    # 5 scores: weights 0, .75, 1, .75, 0 -> the outliers do not count at all
    assert iqm([-1000, 1, 2, 3, 1000]) == pytest.approx(2.0)
    assert iqm([7.0]) == 7.0
    with pytest.raises(ValueError):
        iqm([])
    with pytest.raises(ValueError):
        iqm([1.0, np.nan])


def test_stratified_bootstrap_resamples_within_tasks():
    same = [[0.5] * 5, [0.5] * 5]
    assert stratified_bootstrap_interval(same) == (0.5, 0.5, 0.5)
    spread = [[0.0, 0.2, 0.4, 0.6, 0.8], [0.9, 1.0, 1.0, 0.8, 0.9]]
    point, low, high = stratified_bootstrap_interval(spread, samples=500)
    assert low < point < high and 0.0 <= low and high <= 1.0
    # a stratum keeps its size: one task of a single run always contributes that run
    point, low, high = stratified_bootstrap_interval([[1.0], [0.0, 0.0, 0.0]],
                                                     statistic=np.mean, samples=200)
    assert point == low == high == 0.25
    with pytest.raises(ValueError):
        stratified_bootstrap_interval([[1.0], []])


def test_probability_of_improvement_counts_ties_as_half():
    assert probability_of_improvement([[1, 1]], [[0, 0]]) == 1.0
    assert probability_of_improvement([[0.5]], [[0.5]]) == 0.5
    # averaged over tasks: wins one, loses the other
    assert probability_of_improvement([[1], [0]], [[0], [1]]) == 0.5
    assert probability_of_improvement([[0.9, 0.7]], [[0.8]]) == 0.5
    with pytest.raises(ValueError):
        probability_of_improvement([[1]], [[1], [2]])
