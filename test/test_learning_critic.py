"""KL-regularized critic: target functions by hand, learning on known problems, checkpoints."""
import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ssq_ros.config import ConfigError, parse
from ssq_ros.learning.critic import (
    CheckpointError,
    CriticConfig,
    KLCritic,
    soft_value_discrete,
    soft_value_sampled,
    soft_value_sampled_corrected,
)
from ssq_ros.learning.replay import Batch, ReplayBuffer

# Tiny networks on a shared 2-core machine: a second torch thread only spins and contends
# (measured: 8x slower under load), so these tests run single-threaded.


def test_soft_value_discrete_matches_hand_computation_and_masks_zero_mu():
    q = torch.tensor([[1.0, 100.0, 3.0]], dtype=torch.float64)
    mu = torch.tensor([[0.25, 0.0, 0.75]], dtype=torch.float64)
    expected = 0.5 * math.log(0.25 * math.exp(2.0) + 0.75 * math.exp(6.0))
    # Q = 100 at the forbidden action must not matter at all.
    assert soft_value_discrete(q, mu, 0.5).item() == pytest.approx(expected, rel=1e-12)


def test_soft_value_discrete_limits_in_alpha():
    q = torch.tensor([1.0, 5.0, 3.0, 9.0], dtype=torch.float64)
    mu = torch.tensor([0.2, 0.3, 0.5, 0.0], dtype=torch.float64)
    assert soft_value_discrete(q, mu, 1e4).item() == pytest.approx(0.2 + 1.5 + 1.5, abs=1e-3)
    assert soft_value_discrete(q, mu, 1e-3).item() == pytest.approx(5.0, abs=2e-3)


def test_soft_value_discrete_rejects_rows_without_support_and_shape_mismatch():
    with pytest.raises(ValueError, match='without support'):
        soft_value_discrete(torch.zeros(2, 3), torch.zeros(2, 3), 1.0)
    with pytest.raises(ValueError, match='same shape'):
        soft_value_discrete(torch.zeros(2, 3), torch.ones(2, 2) / 2, 1.0)


def test_soft_value_sampled_matches_hand_computation():
    q = torch.tensor([[0.0, 1.0, 2.0], [4.0, 4.0, 4.0]], dtype=torch.float64)
    alpha = 2.0
    expected = alpha * (math.log(1 + math.exp(0.5) + math.exp(1.0)) - math.log(3))
    values = soft_value_sampled(q, alpha)
    assert values[0].item() == pytest.approx(expected, rel=1e-12)
    assert values[1].item() == pytest.approx(4.0, rel=1e-12)  # equal samples: no bias
    assert soft_value_sampled(torch.tensor([[7.0]]), 0.1).item() == pytest.approx(7.0)


@pytest.mark.parametrize('spread, plain_at_most, kept_at_most', [(0.5, -0.012, 0.2),
                                                                  (1.0, -0.07, 0.45)])
def test_corrected_log_mean_exp_removes_most_of_the_jensen_bias(spread, plain_at_most,
                                                                 kept_at_most):
    """Q(s', a) = alpha * spread * z with z ~ N(0, 1) under mu: E_mu exp(Q/alpha) =
    exp(spread^2/2), so V = alpha spread^2 / 2 exactly. K = 8 samples, as the arm's mu draws.
    Measured (200 000 draws, in units of alpha): spread 0.5, plain -0.017, corrected -0.001;
    spread 1.0, plain -0.089, corrected -0.028. The arm's critic after 5 000 steps has a median
    spread of 0.10 (p90 0.44) over mu's samples."""
    alpha, K = 0.5, 8
    generator = torch.Generator().manual_seed(0)
    q = alpha * spread * torch.randn(200_000, K, generator=generator, dtype=torch.float64)
    exact = alpha * spread ** 2 / 2
    plain = (soft_value_sampled(q, alpha).mean().item() - exact) / alpha
    corrected = (soft_value_sampled_corrected(q, alpha).mean().item() - exact) / alpha
    assert plain < plain_at_most  # the log-mean-exp is biased low (Jensen)
    assert abs(corrected) < kept_at_most * abs(plain)


def test_corrected_log_mean_exp_is_bounded_and_exact_without_spread():
    alpha = 0.3
    equal = torch.full((1, 8), 2.0, dtype=torch.float64)
    assert soft_value_sampled_corrected(equal, alpha).item() == pytest.approx(2.0, rel=1e-12)
    one = torch.tensor([[1.5]], dtype=torch.float64)
    assert soft_value_sampled_corrected(one, alpha).item() == pytest.approx(1.5)
    # One sample dominates completely: s^2 = K wbar^2, the correction reaches its bound alpha/2.
    spiky = torch.tensor([[100.0] + [0.0] * 7], dtype=torch.float64)
    added = (soft_value_sampled_corrected(spiky, alpha) - soft_value_sampled(spiky, alpha)).item()
    assert added == pytest.approx(alpha / 2, rel=1e-9)


def small_config(**changes) -> CriticConfig:
    base = dict(alpha=0.5, gamma=0.9, tau=0.05, lr=3e-3, hidden_sizes=[32, 32], num_q=2,
                batch_size=64, grad_clip=10.0)
    base.update(changes)
    return parse(CriticConfig, base)


def test_target_uses_the_minimum_of_the_target_ensemble_and_stops_at_terminals():
    critic = KLCritic(obs_dim=2, config=small_config(num_q=3), n_actions=3, seed=1)
    batch = Batch(obs=torch.zeros(2, 2), action=torch.tensor([0, 1]),
                  reward=torch.tensor([1.0, -2.0]), next_obs=torch.tensor([[1.0, 0.0]] * 2),
                  done=torch.tensor([0.0, 1.0]),
                  next_support=torch.tensor([[0.5, 0.5, 0.0]] * 2))
    with torch.no_grad():
        q_next = critic.q_target(batch.next_obs)
    assert q_next.shape == (3, 2, 3)
    v_next = soft_value_discrete(q_next.min(dim=0).values, batch.next_support, 0.5)
    y = critic.target(batch)
    assert y[0].item() == pytest.approx(1.0 + 0.9 * v_next[0].item(), rel=1e-6)
    assert y[1].item() == pytest.approx(-2.0)


def one_step_buffer(rng: np.random.Generator) -> ReplayBuffer:
    """Two states, three actions, every step terminal: Q(s, a) must equal the reward."""
    buffer = ReplayBuffer.discrete(capacity=512, obs_dim=2, n_actions=3)
    rewards = np.array([[1.0, -1.0, 0.5], [0.0, 2.0, -3.0]])
    for _ in range(512):
        state, action = int(rng.integers(2)), int(rng.integers(3))
        obs = np.eye(2)[state]
        buffer.add(obs, action, rewards[state, action], obs, True, [1 / 3] * 3)
    return buffer


def test_discrete_critic_learns_terminal_rewards():
    rng = np.random.default_rng(0)
    buffer = one_step_buffer(rng)
    critic = KLCritic(obs_dim=2, config=small_config(), n_actions=3, seed=0)
    stats = [critic.update(buffer.sample(64, rng)) for _ in range(400)]
    assert stats[-1]['loss'] < 0.01 * stats[0]['loss']
    q = critic.q_values(torch.eye(2))
    np.testing.assert_allclose(q.numpy(), [[1.0, -1.0, 0.5], [0.0, 2.0, -3.0]], atol=0.05)
    assert set(stats[-1]) >= {'loss', 'q_mean', 'target_mean', 'grad_norm'}


def test_continuous_critic_learns_a_bootstrapped_value_over_samples():
    """One state, reward r(a) = -a^2, s' = s non-terminal, mu's K samples all at a' = 0.

    Fixed point: V(s) = Q(s, 0) = 0 / (1 - gamma) = 0, so Q(s, a) = -a^2 + gamma * 0.
    With samples at a' = 0.5 instead: Q(s, 0.5) = -0.25 / (1 - gamma).
    """
    rng = np.random.default_rng(1)
    config = small_config(gamma=0.5, alpha=0.1)
    buffer = ReplayBuffer.continuous(capacity=512, obs_dim=1, action_dim=1, num_samples=4)
    for _ in range(512):
        action = rng.uniform(-1, 1, size=1)
        buffer.add([1.0], action, -float(action[0] ** 2), [1.0], False, np.full((4, 1), 0.5))
    critic = KLCritic(obs_dim=1, config=config, action_dim=1, seed=0)
    for _ in range(1500):
        critic.update(buffer.sample(64, rng))
    actions = torch.tensor([[[-1.0], [0.0], [0.5], [1.0]]])
    q = critic.q_values(torch.ones(1, 1), actions)[0].numpy()
    v = -0.25 / (1 - 0.5)  # V(s) = Q(s, 0.5) at the fixed point
    np.testing.assert_allclose(q, [-1.0 + 0.5 * v, 0.5 * v, -0.25 + 0.5 * v, -1.0 + 0.5 * v],
                               atol=0.06)


def test_checkpoint_round_trip_restores_networks_targets_and_optimizer(tmp_path):
    rng = np.random.default_rng(2)
    buffer = one_step_buffer(rng)
    critic = KLCritic(obs_dim=2, config=small_config(), n_actions=3, seed=0)
    for _ in range(5):
        critic.update(buffer.sample(64, rng))
    path = critic.save(tmp_path / 'critic.pt')
    restored = KLCritic(obs_dim=2, config=small_config(), n_actions=3, seed=99)
    restored.load(path)
    assert restored.updates == 5
    batch = buffer.sample(64, np.random.default_rng(3))
    torch.testing.assert_close(restored.target(batch), critic.target(batch))
    # Same optimizer state: the next update is identical.
    assert restored.update(batch) == critic.update(batch)


def test_checkpoint_errors_name_the_problem(tmp_path):
    critic = KLCritic(obs_dim=2, config=small_config(), n_actions=3)
    with pytest.raises(CheckpointError, match='not found'):
        critic.load(tmp_path / 'absent.pt')
    corrupt = tmp_path / 'corrupt.pt'
    corrupt.write_bytes(b'\x00garbage')
    with pytest.raises(CheckpointError, match='corrupt'):
        critic.load(corrupt)
    path = critic.save(tmp_path / 'critic.pt')
    with pytest.raises(CheckpointError, match='this critic is'):
        KLCritic(obs_dim=2, config=small_config(alpha=0.7), n_actions=3).load(path)
    with pytest.raises(CheckpointError, match='this critic is'):
        KLCritic(obs_dim=2, config=small_config(), n_actions=4).load(path)


@pytest.mark.parametrize('bad', [dict(alpha=0.0), dict(gamma=1.5), dict(num_q=0),
                                 dict(hidden_sizes=[0]), dict(bogus=1), dict(lr='fast')])
def test_config_rejects_bad_values_by_name(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        small_config(**bad)


def test_constructor_needs_exactly_one_action_space():
    with pytest.raises(ValueError, match='exactly one'):
        KLCritic(obs_dim=2, config=small_config())
    with pytest.raises(ValueError, match='exactly one'):
        KLCritic(obs_dim=2, config=small_config(), n_actions=2, action_dim=2)


@settings(max_examples=200, deadline=None)
@given(q=arrays(np.float64, 5, elements=st.floats(-50, 50)),
       weights=arrays(np.float64, 5, elements=st.floats(0, 1)),
       alpha=st.floats(1e-2, 1e2))
def test_soft_value_lies_between_mus_mean_and_the_best_supported_q(q, weights, alpha):
    assume(weights.sum() > 1e-3)
    mu = weights / weights.sum()
    value = soft_value_discrete(torch.as_tensor(q), torch.as_tensor(mu), alpha).item()
    support = mu > 0
    assert float(mu @ q) - 1e-9 <= value <= q[support].max() + 1e-9
    colder = soft_value_discrete(torch.as_tensor(q), torch.as_tensor(mu), alpha / 2).item()
    assert colder >= value - 1e-9  # V grows as alpha shrinks


def test_q_of_k_samples_per_state_equals_q_of_each_state_action_pair():
    # The sampled backup computes the first layer's observation part once per state; it must
    # be the same function as Q evaluated on every (s, a_k) pair.
    from ssq_ros.learning.critic import QEnsemble
    torch.manual_seed(3)
    q = QEnsemble(7, (32, 16), 2, None, 3)
    obs, actions = torch.randn(5, 7), torch.randn(5, 4, 3)
    per_pair = torch.stack([q(obs, actions[:, k]) for k in range(4)], dim=-1)
    torch.testing.assert_close(q(obs, actions), per_pair)


# --- n-step targets (issue 14) ---------------------------------------------------------------

def _constant_target(critic, q_row):
    """Set the target network to Q(s, .) = q_row at every state (real weights, no stand-in)."""
    with torch.no_grad():
        last = critic.q_target.nets[-1]
        last.weight.zero_()
        last.bias.copy_(torch.as_tensor(q_row, dtype=torch.float32).view(1, 1, -1))


def _three_step_buffer(terminal_at=None):
    buffer = ReplayBuffer.discrete(8, 2, 3)
    mu = np.array([0.5, 0.5, 0.0])
    obs = np.zeros(2, np.float32)
    for t, (action, reward) in enumerate([(0, 1.0), (1, 2.0), (0, 3.0)]):
        buffer.add(obs, action, reward, obs + 1, float(t == terminal_at), mu)
        obs = obs + 1
    return buffer


@pytest.mark.parametrize('correction', ['advantage', 'none'])
def test_n_step_target_matches_hand_computation(correction):
    gamma, alpha, q = 0.9, 0.5, [1.0, 2.0, 0.0]
    critic = KLCritic(2, CriticConfig(gamma=gamma, alpha=alpha, n_step=3, num_q=1,
                                      n_step_correction=correction), n_actions=3)
    _constant_target(critic, q)
    v = alpha * math.log(0.5 * math.exp(1.0 / alpha) + 0.5 * math.exp(2.0 / alpha))
    adv = {0: q[0] - v, 1: q[1] - v}
    seq = _three_step_buffer().sequences_at(np.array([0]), 3)
    if correction == 'advantage':  # a1 = 1, a2 = 0
        expected = 1.0 + gamma * (2.0 - adv[1]) + gamma**2 * (3.0 - adv[0]) + gamma**3 * v
    else:
        expected = 1.0 + gamma * 2.0 + gamma**2 * 3.0 + gamma**3 * v
    assert critic.target_sequences(seq).item() == pytest.approx(expected, rel=1e-5)
    # a terminal second step: two rewards, no bootstrap
    seq = _three_step_buffer(terminal_at=1).sequences_at(np.array([0]), 3)
    expected = 1.0 + gamma * (2.0 - (adv[1] if correction == 'advantage' else 0.0))
    assert critic.target_sequences(seq).item() == pytest.approx(expected, rel=1e-5)


def test_n_step_target_of_one_step_is_the_one_step_target():
    critic = KLCritic(2, CriticConfig(gamma=0.9, alpha=0.5), n_actions=3, seed=3)
    seq = _three_step_buffer().sequences_at(np.array([0, 1, 2]), 1)
    assert torch.allclose(critic.target_sequences(seq), critic.target(seq.first()))
    # a sequence whose only valid step is the first: also the one-step target
    seq3 = _three_step_buffer().sequences_at(np.array([2]), 3)
    assert seq3.valid.tolist() == [[1, 0, 0]]
    assert critic.target_sequences(seq3).item() == pytest.approx(
        critic.target(seq3.first()).item(), rel=1e-6)


def test_corrected_n_step_target_is_the_soft_fixed_point_whatever_mu_did():
    # A deterministic 5-state chain (state 4 terminal); Q* by soft value iteration under mu.
    # With the target network set to Q*, the advantage-corrected n-step target of any of mu's
    # trajectories is Q*(s0, a0) exactly; mu's plain n-step return is not (it evaluates mu).
    n_states, gamma, alpha = 5, 0.9, 0.3
    mu = np.array([0.2, 0.5, 0.3])
    moves = np.array([1, 0, -1])

    def step(s, a):
        s2 = int(np.clip(s + moves[a], 0, n_states - 1))
        return s2, -0.5 * abs(n_states - 1 - s2) + (5.0 if s2 == n_states - 1 else 0.0)

    q_star = np.zeros((n_states, 3))
    for _ in range(2000):
        v = alpha * np.log((mu * np.exp(q_star / alpha)).sum(1))
        for s in range(n_states):
            for a in range(3):
                s2, r = step(s, a)
                q_star[s, a] = r + gamma * (0.0 if s2 == n_states - 1 else v[s2])
    one_hot = np.eye(n_states, dtype=np.float32)
    buffer = ReplayBuffer.discrete(64, n_states, 3)
    rng = np.random.default_rng(0)
    s = 0
    for _ in range(40):
        a = int(rng.choice(3, p=mu))
        s2, r = step(s, a)
        done = float(s2 == n_states - 1)
        buffer.add(one_hot[s], a, r, one_hot[s2], done, mu)
        s = 0 if done else s2
    targets = {}
    for correction in ('advantage', 'none'):
        critic = KLCritic(n_states, CriticConfig(gamma=gamma, alpha=alpha, n_step=6, num_q=1,
                                                 hidden_sizes=(n_states,),
                                                 n_step_correction=correction), n_actions=3)
        with torch.no_grad():  # hidden = the one-hot state, output = Q*(s, .)
            first, last = critic.q_target.nets[0], critic.q_target.nets[-1]
            first.weight.copy_(torch.eye(n_states)[None])
            first.bias.zero_()
            last.weight.copy_(torch.as_tensor(q_star, dtype=torch.float32)[None])
            last.bias.zero_()
        seq = buffer.sequences_at(np.arange(40), 6)
        assert seq.valid.sum() > 80  # the sequences are long enough to matter
        targets[correction] = critic.target_sequences(seq).numpy()
        states = seq.obs[:, 0].argmax(-1).numpy()
        expected = q_star[states, seq.action[:, 0].numpy()]
    np.testing.assert_allclose(targets['advantage'], expected, atol=1e-4)
    assert np.abs(targets['none'] - expected).max() > 0.1


def test_n_step_critic_learns_and_config_ranges():
    critic = KLCritic(2, CriticConfig(n_step=3), n_actions=3)
    buffer = _three_step_buffer()
    stats = critic.update(buffer.sample_sequences(8, 3, np.random.default_rng(0)))
    assert math.isfinite(stats['loss']) and critic.updates == 1
    with pytest.raises(ConfigError):
        parse(CriticConfig, {'n_step': 0}, 'critic')
    with pytest.raises(ConfigError):
        parse(CriticConfig, {'n_step_correction': 'retrace'}, 'critic')
