"""bench_speed's own parts on the SSQ learners (the peers' timings need the bench extra)."""
import numpy as np

from bench.bench_speed import latency, random_transitions, rates, ssq_learner
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
        calls = []
        measured = rates({'ssq': learner.train, 'other': calls.append}, 3, rounds=2)
        assert len(measured['ssq']) == 2 and all(np.isfinite(measured['ssq']))
        assert min(measured['ssq']) > 0
        assert learner.updates == 26  # 20 warm-up updates, then 2 rounds of the 3 timed
        assert calls == [20, 3, 3]  # every learner warmed up, then timed in turn


def test_latency_reports_ordered_percentiles():
    result = latency(lambda: sum(range(100)), 50)
    assert 0 < result['p50_us'] <= result['p99_us']
