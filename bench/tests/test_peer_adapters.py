"""The peer adapters (SB3 SAC, d3rlpy IQL/CQL) train and evaluate; needs the bench extra, so
`make bench` runs it before the benchmark and `make test` does not collect it."""
import json

import numpy as np
import pytest

from bench import bench_peers
from bench.peers.ssq import tiny_ssq_config


@pytest.fixture(scope='module')
def tiny_config(tmp_path_factory):
    return tiny_ssq_config(tmp_path_factory.mktemp('bench'), 40)


def test_peer_adapters_train_and_evaluate(tiny_config, tmp_path):
    out = tmp_path / 'peers.json'
    assert bench_peers.main(['--methods', 'sac_penalized', 'sac_shielded', 'dqn_shielded', 'iql',
                             'discrete_cql',
                             '--steps', '100', '--eval-episodes', '1',
                             '--offline-updates', '5', '--ssq-config', tiny_config,
                             '--runs', str(tmp_path / 'runs'), '--out', str(out),
                             '--no-progress']) == 0
    result = json.loads(out.read_text())
    rows = {row['method']: row for row in result['table']}
    assert set(rows) == {'sac_penalized', 'sac_shielded', 'dqn_shielded', 'iql', 'discrete_cql'}
    assert rows['sac_penalized']['env_steps_train'] == 100
    sac = next(r for r in result['runs'] if r['method'] == 'sac_penalized')
    assert sac['training']['curve']['unsafe_cumulative'][-1] == \
        sac['training']['unsafe_states_train']
    assert sac['value_calibration_error'] is not None
    for method in ('sac_shielded', 'dqn_shielded'):
        shielded = next(r for r in result['runs'] if r['method'] == method)
        assert shielded['training']['unsafe_states_train'] == 0  # behind mu's support
        assert shielded['training']['shield_interventions_train'] > 0  # its actions replaced
        assert rows[method]['unsafe_eval_shielded'] == 0
    for method in ('iql', 'discrete_cql'):
        assert rows[method]['unsafe_train'] == 0  # the data came from the safe behavior
        assert rows[method]['unsafe_eval_shielded'] == 0


@pytest.mark.parametrize('explore_with_mu', [False, True])
def test_masked_dqn_chooses_only_what_mu_allows(tiny_config, explore_with_mu):
    """MaskedDQN (bench_tasks_peers' DQN) explores and acts only among the primitives mu
    allows at each state: the shield behind it never has to replace an action, and its
    training episodes run to their own length past the task's limit."""
    from bench.peers.sb3_dqn import dqn_hyperparameters, train_dqn
    from bench.peers.ssq import ssq_config
    from ssq_ros.training.problem import build_problem

    problem = build_problem(ssq_config('discrete', 0, 300, base=tiny_config))
    hyper = {**dqn_hyperparameters(32, [32, 32], 0.98, 50), 'exploration_fraction': 0.5}
    policy, training = train_dqn(problem, 0, 300, hyper, 'masked', progress=False,
                                 shielded=True, masked=True, explore_with_mu=explore_with_mu,
                                 train_episode_steps=100)
    assert training['unsafe_states_train'] == 0
    assert training['shield_interventions_train'] == 0  # nothing outside mu's support proposed
    assert training['updates'] > 0
    assert training['curve']['steps'][:2] == [100, 200]  # 100-step episodes, not the task's 40
    assert policy.scores(problem.env.reset(seed=0)[0]).shape == (problem.spaces.action_size,)
    # the replay's observations carry mu's support, and every stored action lies in it
    count = problem.spaces.action_size
    replay = policy.model.replay_buffer
    stored = replay.observations[:replay.size(), 0, -count:]
    assert set(np.unique(stored)) <= {0.0, 1.0}
    taken = replay.actions[:replay.size(), 0, 0].astype(int)
    assert np.all(stored[np.arange(len(taken)), taken] == 1.0)
    with pytest.raises(ValueError, match='shield'):
        train_dqn(problem, 0, 10, hyper, shielded=False, masked=True)


@pytest.mark.parametrize('warmup_with_mu', [False, True])
def test_shielded_sac_with_mus_prior_starts_its_replay_with_mus_draws(tiny_config,
                                                                      warmup_with_mu):
    """bench_tasks_peers' SAC: with mu's prior, every warm-up step runs mu's own draw (one of
    the samples mu's support accepted at that state, so the shield replaces none of them);
    without it, the warm-up's uniform actions are not mu's and some are replaced."""
    from bench.peers.common import SupportShield, TrainingRecorder
    from bench.peers.sb3_common import ShieldedSAC
    from bench.peers.sb3_sac import sac_hyperparameters
    from bench.peers.ssq import ssq_config
    from ssq_ros.training.problem import build_problem

    problem = build_problem(ssq_config('continuous', 0, 300, base=tiny_config))
    accepted = []

    class RecordingShield(SupportShield):  # what mu's support accepted at each state
        def decision(self):
            fresh = self._decision is None
            decision = super().decision()
            if fresh:
                accepted.append(decision.samples)
            return decision

    shield = RecordingShield(problem, seed=0)
    warmup = 200
    model = ShieldedSAC('MlpPolicy', TrainingRecorder(shield, 0), seed=0, device='cpu',
                        buffer_size=warmup, warmup_from=shield if warmup_with_mu else None,
                        **sac_hyperparameters(32, [32, 32], 0.98, warmup))
    model.learn(total_timesteps=warmup)
    ran = problem.env.actions
    stored = model.policy.unscale_action(model.replay_buffer.actions[:warmup, 0])
    if warmup_with_mu:
        assert shield.interventions == 0
        assert len(accepted) == warmup
        for action, samples in zip(stored, accepted, strict=True):
            assert np.min(np.linalg.norm(samples - action, axis=1)) < 1e-5
    else:
        assert shield.interventions > 0  # uniform proposals leave mu's support at times
    assert np.all(stored >= ran.low - 1e-6) and np.all(stored <= ran.high + 1e-6)


def test_discrete_cql_on_an_ssq_runs_data_is_evaluated_behind_the_shield(tiny_config,
                                                                          tmp_path):
    """bench_tasks_peers' offline CQL: mu's data from the run's replay, observations
    standardised, executed behind mu's support."""
    from bench import bench_tasks_peers
    from bench.peers.ssq import ssq_config, train_ssq

    train_ssq(ssq_config('discrete', 0, 120, base=tiny_config),
              tmp_path / 'suite' / 'wall-task-120-s0', progress=False)
    record = bench_tasks_peers.run_offline('cql', 'wall', 0, runs=tmp_path / 'peers',
                                           ssq_runs=tmp_path / 'suite', steps=120,
                                           split=(0, 2), updates=20)
    assert record['settings']['normalised_observations']
    assert record['training']['updates'] == 20 and record['training']['transitions'] == 120
    assert record['eval_shielded']['unsafe_states'] == 0
    assert len(record['eval_shielded']['outcomes']) == 2


def test_iql_on_mus_continuous_data_is_evaluated_behind_the_continuous_shield(tmp_path,
                                                                              monkeypatch):
    """bench_tasks_peers' offline IQL: mu's own env steps in the continuous task, d3rlpy's IQL
    on them (observations standardised), its deterministic action behind the support check.
    A second call finds the record without building the task."""
    from bench import bench_tasks_peers

    monkeypatch.setattr(bench_tasks_peers, 'code_at_start',
                        lambda: {'code_commit': 'a' * 40, 'code_dirty': False})

    def iql():
        return bench_tasks_peers.run_offline('iql', 'wall', 0, runs=tmp_path / 'peers',
                                             steps=150, split=(0, 2), updates=20)

    record = iql()
    settings, training = record['settings'], record['training']
    assert settings['action_kind'] == 'continuous' and settings['normalised_observations']
    assert settings['data'].startswith('mu sampled, 150 env steps')
    assert training['updates'] == 20 and training['transitions'] == 150
    assert training['unsafe_states_train'] == 0 and 'v_loss' in training['final_losses']
    shielded = record['eval_shielded']
    assert shielded['unsafe_states'] == 0 and len(shielded['outcomes']) == 2
    assert 0.0 <= shielded['intervention_rate'] <= 1.0

    def no_build(config):
        raise AssertionError('a cached record built its task')

    monkeypatch.setattr(bench_tasks_peers, 'build_problem', no_build)
    assert iql() == record


def test_masked_dqns_update_is_sb3_dqns_where_mu_allows_every_primitive():
    """MaskedDQN.train re-implements SB3 DQN's update with the target's max over mu's support
    at s': with every primitive allowed it must move the network exactly as DQN.train does,
    and a support that excludes the best next primitive must change the update."""
    import gymnasium as gym
    import torch
    from stable_baselines3 import DQN
    from stable_baselines3.common.logger import configure

    from bench.peers.sb3_common import MaskedDQN

    count, size = 4, 3

    class Toy(gym.Env):
        observation_space = gym.spaces.Box(-5.0, 5.0, (size + count,), np.float32)
        action_space = gym.spaces.Discrete(count)

    rng = np.random.default_rng(0)
    observations = rng.normal(size=(64, size + count)).astype(np.float32)
    observations[:, size:] = 1.0
    following = rng.normal(size=(64, size + count)).astype(np.float32)
    following[:, size:] = 1.0
    actions = rng.integers(0, count, 64)
    rewards = rng.normal(size=64).astype(np.float32)

    def trained(algorithm, following, **kwargs):
        model = algorithm('MlpPolicy', Toy(), seed=0, learning_starts=0, batch_size=16,
                          buffer_size=100, device='cpu', **kwargs)
        model.set_logger(configure(None, []))
        for k in range(64):
            model.replay_buffer.add(observations[k:k + 1], following[k:k + 1],
                                    np.array([[actions[k]]]), rewards[k:k + 1],
                                    np.array([k % 9 == 0]), [{}])
        model.policy.load_state_dict(reference)
        np.random.seed(1)
        torch.manual_seed(1)
        model.train(gradient_steps=5, batch_size=16)
        return torch.cat([p.detach().ravel() for p in model.policy.q_net.parameters()])

    reference = DQN('MlpPolicy', Toy(), seed=0, device='cpu').policy.state_dict()
    plain = trained(DQN, following)
    masked = trained(MaskedDQN, following, shield=None)
    assert torch.allclose(plain, masked, atol=1e-7)
    # mu refuses each next state's best primitive under the target network: another target
    with torch.no_grad():
        model = DQN('MlpPolicy', Toy(), seed=0, device='cpu')
        model.policy.load_state_dict(reference)
        best = model.q_net_target(torch.as_tensor(following)).argmax(dim=1).numpy()
    refused = following.copy()
    refused[np.arange(64), size + best] = 0.0
    assert not torch.allclose(plain, trained(MaskedDQN, refused, shield=None), atol=1e-6)


def test_the_cost_replay_sums_costs_over_the_steps_the_reward_sum_covers():
    """SAC-Lagrangian's replay: the n-step cost is the discounted sum of the referee's unsafe
    flags over exactly the transitions the n-step reward sums, cut at an episode's end."""
    import gymnasium as gym

    from bench.peers.sac_lagrangian import CostReplayBuffer

    gamma, n = 0.5, 3
    buffer = CostReplayBuffer(20, gym.spaces.Box(-1.0, 1.0, (1,)),
                              gym.spaces.Box(-1.0, 1.0, (1,)), n_steps=n, gamma=gamma)
    costs = [0, 1, 1, 0, 1, 0, 0, 1]
    ends = {4}  # the episode ends after transition 4
    for k, cost in enumerate(costs):
        buffer.add(np.array([[k]]), np.array([[k + 1]]), np.array([[0.0]]),
                   np.array([10.0 * k]), np.array([k in ends]), [{'unsafe': bool(cost)}])
    batch = buffer._get_samples(np.arange(6))
    for k in range(6):
        horizon = [j for j in range(k, min(k + n, len(costs)))]
        if any(j in ends for j in horizon):
            horizon = horizon[:[j in ends for j in horizon].index(True) + 1]
        expected_cost = sum(gamma ** (j - k) * costs[j] for j in horizon)
        expected_reward = sum(gamma ** (j - k) * 10.0 * j for j in horizon)
        assert float(batch.costs[k]) == pytest.approx(expected_cost)
        assert float(batch.rewards[k]) == pytest.approx(expected_reward)
        assert float(batch.discounts[k]) == pytest.approx(gamma ** len(horizon))
    assert buffer.rewards[:8, 0].tolist() == [10.0 * k for k in range(8)]  # left as it was


@pytest.mark.parametrize('cost', [0.0, 1.0])
def test_sac_lagrangian_learns_the_cost_and_weighs_it_by_a_rising_multiplier(cost):
    """On a toy env whose every step costs `cost`, the cost critic learns the discounted cost
    (1 / (1 - gamma) per unit) and the multiplier rises only while the estimate exceeds the
    limit."""
    import gymnasium as gym
    import torch

    from bench.peers.sac_lagrangian import SACLagrangian

    class Toy(gym.Env):
        observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            return np.zeros(2, np.float32), {}

        def step(self, action):
            obs = self.np_random.uniform(-1, 1, 2).astype(np.float32)
            return obs, 0.0, False, False, {'unsafe': bool(cost)}

    model = SACLagrangian('MlpPolicy', Toy(), seed=0, device='cpu', gamma=0.5,
                          learning_starts=64, batch_size=64, learning_rate=3e-3,
                          cost_limit=0.1, multiplier_lr=1e-2,
                          policy_kwargs={'net_arch': [32, 32]})
    model.learn(total_timesteps=1500)
    observations = torch.as_tensor(np.random.default_rng(1).uniform(-1, 1, (64, 2)),
                                   dtype=torch.float32)
    actions = torch.zeros(64, 1)
    with torch.no_grad():
        estimate = torch.cat(model.cost_critic(observations, actions), 1).mean().item()
    assert estimate == pytest.approx(cost / (1 - 0.5), abs=0.2)
    if cost:
        assert model.multiplier.item() > 1.0  # about multiplier_lr per update above the limit
    else:
        assert model.multiplier.item() < 0.2
    with pytest.raises(ValueError, match='cost_limit'):
        SACLagrangian('MlpPolicy', Toy(), cost_limit=-1.0)


def test_her_recomputes_the_tasks_own_reward_for_any_goal(tiny_config):
    """TQC+HER's goal-conditioned view of the task: for the episode's own goal
    compute_reward gives the env's reward at every step (batched or one at a time), the
    'observation' part holds no goal, and a hand on a relabelled goal earns the bonus."""
    from bench.peers.ssq import ssq_config
    from bench.peers.tqc_her import GoalObservation
    from ssq_ros.training.problem import build_problem

    problem = build_problem(ssq_config('continuous', 0, 300, base=tiny_config))
    env = GoalObservation(problem.env, problem.env.task)
    obs, _ = env.reset(seed=2)
    goal = obs['desired_goal'].copy()
    rng = np.random.default_rng(0)
    hands, rewards = [], []
    for _ in range(15):
        obs, reward, terminated, truncated, info = env.step(
            rng.uniform(problem.env.actions.low, problem.env.actions.high))
        assert set(obs) == {'observation', 'achieved_goal', 'desired_goal'}
        np.testing.assert_array_equal(obs['desired_goal'], goal)
        assert env.compute_reward(obs['achieved_goal'], goal, info) == pytest.approx(reward,
                                                                                    abs=1e-5)
        hands.append(obs['achieved_goal'])
        rewards.append(reward)
        if terminated or truncated:
            break
    batch = env.compute_reward(np.array(hands), np.tile(goal, (len(hands), 1)), [{}] * 15)
    np.testing.assert_allclose(batch, rewards, atol=1e-5)
    assert obs['observation'].size == 2 * problem.env.task.robot.dof + 3  # q, qdot, hand
    bonus = problem.env.task.config.success_bonus
    assert env.compute_reward(hands[-1], hands[-1], {}) == pytest.approx(bonus)


@pytest.mark.parametrize('method', ['sac_lagrangian', 'tqc_her'])
def test_the_unshielded_peers_train_with_mus_prior_and_count_their_own_violations(
        tiny_config, method):
    """bench_tasks_peers' SAC-Lagrangian and TQC+HER at a grid point with mu's prior: the
    warm-up runs mu's own draws (each one of the samples mu's support accepted at that state);
    after it they act on their own, no shield in the way; the referee's count is theirs."""
    from bench import bench_tasks_peers
    from bench.peers.common import MuAtState
    from bench.peers.ssq import ssq_config
    from ssq_ros.training.problem import build_problem

    problem = build_problem(ssq_config('continuous', 0, 300, base=tiny_config))
    point = next(p for p, g in bench_tasks_peers.GRIDS[method].items() if g['warmup'] == 'mu')
    settings = bench_tasks_peers.peer_settings(method, 'wall', point, 300)
    settings['hyper'].update(batch_size=32, learning_starts=100,
                             policy_kwargs={'net_arch': [32, 32]})
    settings['train_episode_steps'] = 60
    accepted = []
    original = MuAtState.decision

    def recording(self):
        fresh = self._decision is None
        decision = original(self)
        if fresh:
            accepted.append(decision.samples)
        return decision

    MuAtState.decision = recording
    try:
        policy, training = bench_tasks_peers.train_peer(method, problem, 0, 300, settings,
                                                        method)
    finally:
        MuAtState.decision = original
    assert len(accepted) == 100  # mu drawn at each warm-up state, not after
    replay = policy.model.replay_buffer
    stored = policy.model.policy.unscale_action(replay.actions[:100, 0])
    for action, samples in zip(stored, accepted, strict=True):
        assert np.min(np.linalg.norm(samples - action, axis=1)) < 1e-5
    assert training['env_steps'] == 300 and training['updates'] > 0
    assert training['shield_interventions_train'] is None  # no shield
    assert training['curve']['steps'][:2] == [60, 120]
    assert training['unsafe_states_train'] == training['curve']['unsafe_cumulative'][-1]
    if method == 'sac_lagrangian':
        assert training['multiplier_final'] >= 0.0
    alone = bench_tasks_peers.evaluate(problem, policy, 1, False, 0.98)
    assert alone['intervention_rate'] is None and alone['episodes'] == 1


def test_an_unshielded_peers_test_record_holds_its_episodes_alone(tmp_path, monkeypatch):
    """run_online: a peer that trains without the shield is judged on the test split behind
    it and also on its own (the same episodes); tuning judges it behind the shield only."""
    from bench import bench_tasks_peers

    monkeypatch.setattr(bench_tasks_peers, 'code_at_start',
                        lambda: {'code_commit': 'a' * 40, 'code_dirty': False})
    monkeypatch.setattr(bench_tasks_peers, 'TEST', (130, 1))
    monkeypatch.setattr(bench_tasks_peers, 'VALIDATION', (0, 1))
    point = 'uniform_lr3e-3'
    test = bench_tasks_peers.run_online('sac_lagrangian', 'test', 'wall', point, 0, steps=30,
                                        runs=tmp_path)  # all warm-up: no update, quick
    assert test['eval_shielded']['episodes'] == test['eval_unshielded']['episodes'] == 1
    assert test['eval_unshielded']['intervention_rate'] is None
    assert test['settings']['split'] == [130, 1]
    tune = bench_tasks_peers.run_online('sac_lagrangian', 'tune', 'wall', point, 0, steps=30,
                                        runs=tmp_path)
    assert 'eval_unshielded' not in tune


def test_sac_with_her_trains_behind_the_shield_on_relabelled_goals(tiny_config):
    """bench_tasks_peers' SAC+HER: it trains behind mu's support (0 unsafe states, the
    shield's replacements counted, the replay holding what ran), its replay relabels goals
    (SB3's HerReplayBuffer on the task's goal-conditioned view) and its policy acts on the
    flat observation the evaluation gives; HER with n-step targets is refused."""
    from stable_baselines3 import HerReplayBuffer

    from bench import bench_tasks_peers
    from bench.peers.sb3_sac import train_sac
    from bench.peers.ssq import ssq_config
    from ssq_ros.training.problem import build_problem

    problem = build_problem(ssq_config('continuous', 0, 300, base=tiny_config))
    settings = bench_tasks_peers.peer_settings('sac_her', 'wall', 'uniform_e400', 300)
    assert 'n_steps' not in settings['hyper'] and settings['n_sampled_goal'] == 4
    settings['hyper'].update(batch_size=32, learning_starts=100,
                             policy_kwargs={'net_arch': [32, 32]})
    settings['train_episode_steps'] = 60
    policy, training = bench_tasks_peers.train_peer('sac_her', problem, 0, 300, settings,
                                                    'sac_her')
    replay = policy.model.replay_buffer
    assert isinstance(replay, HerReplayBuffer) and replay.n_sampled_goal == 4
    assert training['env_steps'] == 300 and training['updates'] > 0
    assert training['unsafe_states_train'] == 0
    assert training['shield_interventions_train'] > 0  # uniform warm-up leaves mu's support
    stored = policy.model.policy.unscale_action(replay.actions[:300, 0])
    ran = problem.env.actions
    assert np.all(stored >= ran.low - 1e-6) and np.all(stored <= ran.high + 1e-6)
    shielded = bench_tasks_peers.evaluate(problem, policy, 1, True, 0.98)
    assert shielded['episodes'] == 1 and shielded['unsafe_states'] == 0
    with pytest.raises(ValueError, match='one-step targets'):
        train_sac(problem, 0, 10, {**settings['hyper'], 'n_steps': 8}, shielded=True,
                  her_goals=4)
