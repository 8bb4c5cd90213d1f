"""Policy extraction: exact induced policy, weight clipping, fitted policies, the shield."""
import math

import numpy as np
import pytest
import torch

from ssq_ros.config import parse
from ssq_ros.learning.critic import (
    CriticConfig,
    KLCritic,
    masked_log,
    soft_value_discrete,
    soft_value_sampled,
)
from ssq_ros.learning.extraction import (
    ExtractionConfig,
    PolicyExtractor,
    advantage_weights,
    induced_policy,
    induced_policy_discrete,
    shield_action,
)
from ssq_ros.learning.replay import ReplayBuffer

# Tiny networks on a shared 2-core machine: a second torch thread only spins and contends
# (measured: 8x slower under load), so these tests run single-threaded.

ALPHA = 0.5


def test_induced_policy_is_masked_softmax():
    q = torch.tensor([[1.0, 50.0, 2.0, 0.0]], dtype=torch.float64)
    mu = torch.tensor([[0.5, 0.0, 0.25, 0.25]], dtype=torch.float64)
    pi = induced_policy_discrete(q, mu, ALPHA)[0].numpy()
    unnormalised = np.array([0.5 * math.exp(2.0), 0.0, 0.25 * math.exp(4.0), 0.25])
    np.testing.assert_allclose(pi, unnormalised / unnormalised.sum(), rtol=1e-12)
    assert pi[1] == 0.0


def test_induced_policy_kl_is_the_gap_between_expected_q_and_the_soft_value():
    """alpha KL(pi || mu) = E_pi Q - V for pi ∝ mu exp(Q/alpha) (the Gibbs variational
    identity), with the discrete mask and with mu's K samples (mu uniform over the rows)."""
    q = torch.tensor([[1.0, 50.0, 2.0, 0.0], [0.3, -1.0, 0.2, 0.9]], dtype=torch.float64)
    mu = torch.tensor([[0.5, 0.0, 0.25, 0.25], [0.1, 0.2, 0.3, 0.4]], dtype=torch.float64)
    pi, kl = induced_policy(q, masked_log(mu), ALPHA)
    expected = (pi * q).sum(-1) - soft_value_discrete(q, mu, ALPHA)
    np.testing.assert_allclose((ALPHA * kl).numpy(), expected.numpy(), rtol=1e-10)
    assert pi[0, 1] == 0.0 and torch.all(kl > 0)
    log_uniform = torch.full_like(q, -math.log(4))
    pi, kl = induced_policy(q, log_uniform, ALPHA)
    np.testing.assert_allclose(pi.numpy(), torch.softmax(q / ALPHA, dim=-1).numpy())
    expected = (pi * q).sum(-1) - soft_value_sampled(q, ALPHA)
    np.testing.assert_allclose((ALPHA * kl).numpy(), expected.numpy(), rtol=1e-10)
    _, kl_flat = induced_policy(torch.zeros(1, 4), log_uniform[:1].float(), ALPHA)
    assert kl_flat.item() == pytest.approx(0.0, abs=1e-7)  # Q flat: pi = mu


def test_advantage_weights_are_exp_advantage_clipped_at_max():
    q = torch.tensor([[0.0, 1.0, 3.0]])
    v = torch.tensor([1.0])
    weights = advantage_weights(q, v, alpha=1.0, max_weight=5.0)[0]
    torch.testing.assert_close(weights, torch.tensor([math.exp(-1.0), 1.0, 5.0]))
    assert advantage_weights(q, v, alpha=1.0, max_weight=100.0)[0, 2].item() == \
        pytest.approx(math.exp(2.0))


def fitted_bandit_critic(rng) -> tuple[KLCritic, torch.Tensor]:
    """Two states, four actions, terminal steps: Q converges to the reward table."""
    rewards = np.array([[0.0, 1.0, 5.0, 0.5], [1.0, 0.0, 0.0, 2.0]])
    mu = np.array([[0.25, 0.25, 0.0, 0.5], [0.5, 0.0, 0.25, 0.25]])
    buffer = ReplayBuffer.discrete(capacity=1024, obs_dim=2, n_actions=4)
    for _ in range(1024):
        state = int(rng.integers(2))
        action = int(rng.choice(4, p=mu[state]))
        buffer.add(np.eye(2)[state], action, rewards[state, action], np.eye(2)[state], True,
                   mu[state])
    config = parse(CriticConfig, dict(alpha=ALPHA, hidden_sizes=[32], lr=1e-2, batch_size=128))
    critic = KLCritic(2, config, n_actions=4, seed=0)
    for _ in range(400):
        critic.update(buffer.sample(128, rng))
    return critic, torch.as_tensor(mu, dtype=torch.float32)


@pytest.fixture(scope='module')
def bandit():
    return fitted_bandit_critic(np.random.default_rng(0))


@pytest.mark.parametrize('loss', ['forward_kl', 'reverse_kl'])
def test_discrete_extraction_matches_the_induced_policy_and_never_leaves_the_support(
        bandit, loss):
    critic, mu = bandit
    config = parse(ExtractionConfig, dict(loss=loss, hidden_sizes=[32], lr=1e-2,
                                          max_weight=1e6))
    extractor = PolicyExtractor(critic, config, seed=0)
    obs = torch.eye(2)
    for _ in range(300):
        stats = extractor.update(obs, mu)
    assert math.isfinite(stats['loss'])
    with torch.no_grad():
        pi = extractor.policy.log_probs(obs, mu).exp()
    target = induced_policy_discrete(critic.q_values(obs), mu, ALPHA)
    assert torch.all(pi[mu == 0] == 0.0)
    torch.testing.assert_close(pi, target, atol=0.03, rtol=0)
    rng = np.random.default_rng(1)
    actions = {extractor.policy.act(np.eye(2)[1], mu[1].numpy(), rng) for _ in range(200)}
    assert 1 not in actions  # mu(1 | s1) == 0


def test_clipping_limits_how_far_forward_kl_moves_from_mu(bandit):
    critic, mu = bandit
    probs = {}
    for max_weight in (1.0, 1e6):
        config = parse(ExtractionConfig, dict(hidden_sizes=[32], lr=1e-2,
                                              max_weight=max_weight))
        extractor = PolicyExtractor(critic, config, seed=0)
        for _ in range(300):
            extractor.update(torch.eye(2), mu)
        with torch.no_grad():
            probs[max_weight] = extractor.policy.log_probs(torch.eye(2), mu).exp()
    # State 1: the best allowed action is 3 (reward 2). Weights clipped at 1 cannot favour it
    # as strongly as the exact induced policy does.
    assert probs[1.0][1, 3] < probs[1e6][1, 3] - 0.1


@pytest.fixture(scope='module')
def continuous_critic():
    """One state; reward -(a - 0.3)^2 on a in [-1, 1]; terminal steps; mu uniform samples."""
    rng = np.random.default_rng(2)
    buffer = ReplayBuffer.continuous(capacity=1024, obs_dim=1, action_dim=1, num_samples=16)
    for _ in range(1024):
        action = rng.uniform(-1, 1, size=1)
        buffer.add([1.0], action, -float((action[0] - 0.3) ** 2) * 10, [1.0], True,
                   rng.uniform(-1, 1, size=(16, 1)))
    config = parse(CriticConfig, dict(alpha=0.1, hidden_sizes=[32, 32], lr=3e-3,
                                      batch_size=128))
    critic = KLCritic(1, config, action_dim=1, seed=0)
    for _ in range(600):
        critic.update(buffer.sample(128, rng))
    return critic, buffer


@pytest.mark.parametrize('settings', [dict(weighting='clipped'),
                                      dict(weighting='self_normalized'),
                                      dict(loss='reverse_kl')])
def test_continuous_extraction_moves_the_policy_to_the_best_supported_action(
        continuous_critic, settings):
    rng = np.random.default_rng(3)
    critic, buffer = continuous_critic
    config = parse(ExtractionConfig, dict(hidden_sizes=[32], lr=1e-2, **settings))

    def log_mu_uniform(obs, actions):  # mu = U(-1, 1): log density -log 2 inside
        return torch.full(actions.shape[:-1], -math.log(2.0))

    extractor = PolicyExtractor(critic, config, log_mu=log_mu_uniform, seed=0)
    for _ in range(400):
        batch = buffer.sample(128, rng)
        extractor.update(batch.next_obs, batch.next_support)
    mean = extractor.policy.propose(np.array([1.0]))
    assert mean.shape == (1,)
    assert abs(mean[0] - 0.3) < 0.12


def test_continuous_reverse_kl_without_log_mu_is_refused():
    critic = KLCritic(1, CriticConfig(hidden_sizes=(8,)), action_dim=1)
    with pytest.raises(ValueError, match='log_mu'):
        PolicyExtractor(critic, ExtractionConfig(loss='reverse_kl'))


def below_half(batch: np.ndarray) -> np.ndarray:
    return batch[:, 0] < 0.5


def test_shield_executes_a_safe_proposal_and_otherwise_mus_best_sample():
    samples = np.array([[0.1, 0.0], [0.4, 1.0], [-0.3, 2.0]])
    q = np.array([0.0, 2.0, 1.0])
    decision = shield_action(np.array([0.2, 0.2]), below_half, samples, q)
    assert decision.source == 'policy'
    np.testing.assert_array_equal(decision.action, [0.2, 0.2])
    decision = shield_action(np.array([0.9, 0.0]), below_half, samples, q)
    assert decision.source == 'behavior_best'
    np.testing.assert_array_equal(decision.action, [0.4, 1.0])


def test_shield_never_shows_a_non_finite_or_misshaped_proposal_to_is_safe():
    def must_not_be_called(batch):
        raise AssertionError('is_safe was called')

    samples, q = np.zeros((2, 2)), np.array([1.0, 0.0])
    for proposal in (np.array([np.nan, 0.0]), np.array([0.0, np.inf]), np.zeros(3)):
        assert shield_action(proposal, must_not_be_called, samples, q).source == 'behavior_best'


@pytest.mark.parametrize('samples, q, is_safe, message', [
    (np.zeros((2, 2)), np.array([1.0]), below_half, 'q_samples'),
    (np.zeros((0, 2)), np.zeros(0), below_half, 'samples'),
    (np.zeros((2, 2)), np.array([np.nan, 0.0]), below_half, 'NaN'),
    (np.zeros((2, 2)), np.zeros(2), lambda b: np.ones(1), 'is_safe'),
])
def test_shield_rejects_malformed_input(samples, q, is_safe, message):
    with pytest.raises(ValueError, match=message):
        shield_action(np.zeros(2), is_safe, samples, q)
