"""The critic's exact induced policy as an actor of the held-out evaluation, on the arm."""
from pathlib import Path

import numpy as np
import pytest

from ssq_ros.config import ConfigError, parse, to_dict
from ssq_ros.control.safe_behavior import Decision
from ssq_ros.training.config import TrainConfig, load_run_config, with_overrides
from ssq_ros.training.evaluate import induced_actor, induced_choice
from ssq_ros.training.learner import LearnerConfig, OnlineLearner
from ssq_ros.training.problem import build_problem

TINY = Path(__file__).parent / 'data' / 'train_sim_tiny.yaml'


@pytest.fixture(scope='module')
def problem():
    return build_problem(load_run_config(TINY))


def sharp_learner(spaces, seed: int = 0) -> OnlineLearner:
    """An untrained critic (Q of order 0.1) at alpha 0.02: pi ∝ mu exp(Q/alpha) is far from mu."""
    data = to_dict(load_run_config(TINY).learner)
    data['critic']['alpha'] = 0.02
    return OnlineLearner(spaces, parse(LearnerConfig, data, 'test'), seed=seed)


def state_with_masked_primitives(problem) -> tuple[np.ndarray, np.ndarray]:
    """Walk mu from a training start until the support check refuses some primitive."""
    rng = np.random.default_rng(0)
    obs, _ = problem.env.reset(seed=2)
    for _ in range(200):
        decision = problem.behavior(rng)
        if np.any(decision.probs == 0):
            return obs, decision.probs
        obs, *_ = problem.env.step(decision.action)
    raise AssertionError('mu never met a refused primitive')


def test_induced_actor_draws_pi_inside_mus_support(problem):
    obs, mu = state_with_masked_primitives(problem)
    learner = sharp_learner(problem.spaces)
    pi, kl = learner.induced_policy(obs, mu)
    assert np.all(pi[mu == 0] == 0) and pi.sum() == pytest.approx(1.0)
    assert np.abs(pi - mu).max() > 0.1 and kl > 0.05  # a test that tells pi from mu
    act = induced_actor(problem, learner)
    rng = np.random.default_rng(1)
    draws = 2000
    choices = [act(obs, rng) for _ in range(draws)]
    counts = np.bincount([c.action for c in choices], minlength=mu.size)
    assert counts[mu == 0].sum() == 0  # never an action mu does not allow
    # Frequencies match pi within 4 standard errors (and a floor for tiny probabilities).
    frequency = counts / draws
    tolerance = 4 * np.sqrt(pi * (1 - pi) / draws) + 2e-3
    np.testing.assert_array_less(np.abs(frequency - pi), tolerance)
    alpha = learner.critic.config.alpha
    assert all(c.kl_cost == pytest.approx(alpha * kl) and not c.fallback for c in choices)


def test_continuous_induced_policy_weights_mus_samples_by_softmax_q():
    data = to_dict(load_run_config(TINY))
    data['action_kind'] = 'continuous'
    problem = build_problem(parse(type(load_run_config(TINY)), data, 'test'))
    learner = sharp_learner(problem.spaces)
    obs, _ = problem.env.reset(seed=2)
    samples = problem.behavior(np.random.default_rng(0)).samples
    pi, kl = learner.induced_policy(obs, samples)
    q = learner.q_values(np.repeat(obs[None], len(samples), 0), samples)
    alpha = learner.critic.config.alpha
    weights = np.exp((q - q.max()) / alpha)
    np.testing.assert_allclose(pi, weights / weights.sum(), rtol=1e-5, atol=1e-7)
    # KL to mu, uniform over the K rows: sum pi log(K pi).
    positive = pi > 0
    assert kl == pytest.approx(float(np.sum(pi[positive] * np.log(len(pi) * pi[positive]))),
                               rel=1e-5, abs=1e-7)
    act = induced_actor(problem, learner)
    rng = np.random.default_rng(3)
    is_safe = problem.is_safe_here()
    for _ in range(20):  # every executed action passes the support check at this state
        choice = act(obs, rng)
        assert is_safe(np.asarray(choice.action)[None])[0]


def test_collection_temperature_reweights_mus_support_and_keeps_the_critics_kl_weight(problem):
    """schedule.collection_alpha: the collecting policy is mu exp(Q/t) at its own temperature t,
    still exactly 0 where mu is; the KL cost stays weighed by the critic's alpha."""
    obs, mu = state_with_masked_primitives(problem)
    learner = sharp_learner(problem.spaces)
    q = learner.q_values(np.repeat(obs[None], mu.size, 0), np.arange(mu.size))
    alpha = learner.critic.config.alpha
    for temperature in (alpha, 0.1, 1.0):
        pi, _ = learner.induced_policy(obs, mu, temperature)
        logits = np.where(mu > 0, np.log(np.where(mu > 0, mu, 1.0)) + q / temperature, -np.inf)
        expected = np.exp(logits - logits.max())
        np.testing.assert_allclose(pi, expected / expected.sum(), rtol=1e-5, atol=1e-9)
        assert np.all(pi[mu == 0] == 0)
    sharp, _ = learner.induced_policy(obs, mu)
    soft, kl_soft = learner.induced_policy(obs, mu, 1.0)
    assert np.abs(soft - mu).max() < np.abs(sharp - mu).max()  # a hotter pi is closer to mu
    choice = induced_choice(problem, learner, obs, Decision(0, np.zeros(3), probs=mu),
                            np.random.default_rng(0), alpha=1.0)
    assert mu[choice.action] > 0 and choice.kl_cost == pytest.approx(alpha * kl_soft)


def test_collection_alpha_without_induced_collection_is_refused():
    data = to_dict(load_run_config(TINY))
    data['schedule']['collection_alpha'] = 0.1
    data['schedule']['induced_collection'] = 0.0
    with pytest.raises(ConfigError, match='collection_alpha'):
        with_overrides(parse(TrainConfig, data, 'test'))
    data['schedule']['induced_collection'] = 1.0
    assert with_overrides(parse(TrainConfig, data, 'test')).schedule.collection_alpha == 0.1
