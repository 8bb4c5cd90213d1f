"""bench_speed's own parts on the SSQ learners (the peers' timings need the bench extra)."""
import numpy as np

from bench.bench_speed import latency, random_transitions, rate, ssq_learner
from bench.peers.ssq import ssq_config
from ssq_ros.training.problem import build_problem


def test_random_transitions_fill_a_learner_that_trains_and_is_timed():
    rng = np.random.default_rng(0)
    for kind in ('discrete', 'continuous'):
        config = ssq_config(kind, 0, 1000)
        problem = build_problem(config)
        data = random_transitions(problem, 300, rng)
        learner = ssq_learner(problem, config, data)
        assert len(learner.replay) == 300
        if problem.discrete:  # mu's support: a probability vector with hold always allowed
            assert np.allclose(data['next_support'].sum(axis=1), 1.0)
            assert np.all(data['next_support'][:, 0] > 0)
        updates_per_s = rate(learner.train, 3)
        assert np.isfinite(updates_per_s) and updates_per_s > 0
        assert learner.updates == 23  # 20 warm-up updates, then the 3 timed


def test_latency_reports_ordered_percentiles():
    result = latency(lambda: sum(range(100)), 50)
    assert 0 < result['p50_us'] <= result['p99_us']
