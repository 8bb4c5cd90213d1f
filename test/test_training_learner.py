"""OnlineLearner, policy export and the shielded executor, with real torch training (no sim)."""
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from ssq_ros.config import ConfigError, parse, to_dict
from ssq_ros.deploy.executor import ShieldedExecutor
from ssq_ros.deploy.export import PolicyExportError, export_policy, load_exported_policy
from ssq_ros.learning.critic import CheckpointError
from ssq_ros.safety.status import SafetyStatus
from ssq_ros.training.learner import CHECKPOINT_FILE, LearnerConfig, OnlineLearner, TaskSpaces

OBS_DIM, N_ACTIONS, ACTION_DIM, K = 5, 4, 2, 6
SMALL = {'critic': {'hidden_sizes': [16], 'batch_size': 16},
         'extraction': {'hidden_sizes': [16], 'batch_size': 16}, 'replay_capacity': 500}


def discrete_spaces() -> TaskSpaces:
    return TaskSpaces(obs_dim=OBS_DIM, action_kind='discrete', action_size=N_ACTIONS,
                      action_names=('hold', 'a', 'b', 'c'))


def continuous_spaces() -> TaskSpaces:
    return TaskSpaces(obs_dim=OBS_DIM, action_kind='continuous', action_size=ACTION_DIM,
                      num_samples=K, action_low=(-1.0, -1.0), action_high=(1.0, 1.0))


def filled(spaces: TaskSpaces, count: int = 200, seed: int = 0) -> OnlineLearner:
    learner = OnlineLearner(spaces, parse(LearnerConfig, SMALL), seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(count):
        obs, next_obs = rng.normal(size=OBS_DIM), rng.normal(size=OBS_DIM)
        if spaces.discrete:
            mu = np.array([0.4, 0.3, 0.3, 0.0])
            learner.add_transition(obs, int(rng.integers(3)), -1.0, next_obs, 0.0, mu)
        else:
            learner.add_transition(obs, rng.uniform(-1, 1, ACTION_DIM), -1.0, next_obs, 0.0,
                                   rng.uniform(-1, 1, (K, ACTION_DIM)))
    return learner


@pytest.mark.parametrize('spaces', [discrete_spaces(), continuous_spaces()])
def test_train_and_extract_change_the_networks_and_count(spaces):
    learner = filled(spaces)
    q_before = [p.clone() for p in learner.critic.q.parameters()]
    pi_before = [p.clone() for p in learner.extractor.policy.parameters()]
    stats = learner.train(5)
    assert learner.updates == 5 and np.isfinite(stats['loss'])
    assert any(not torch.equal(a, b)
               for a, b in zip(q_before, learner.critic.q.parameters(), strict=True))
    learner.extract(3)
    assert learner.policy_version == 1 and learner.extraction_steps == 3
    assert any(not torch.equal(a, b)
               for a, b in zip(pi_before, learner.extractor.policy.parameters(), strict=True))


def test_empty_learner_refuses_to_train_and_bad_transitions_store_nothing():
    learner = OnlineLearner(discrete_spaces(), parse(LearnerConfig, SMALL))
    with pytest.raises(ValueError, match='empty'):
        learner.train(1)
    with pytest.raises(ValueError, match='next_obs'):
        learner.add_transition(np.zeros(OBS_DIM), 0, 0.0, np.full(OBS_DIM, np.nan), 0.0,
                               np.full(N_ACTIONS, 0.25))
    assert len(learner.replay) == 0 and learner.transitions == 0


@pytest.mark.parametrize('spaces', [discrete_spaces(), continuous_spaces()])
def test_checkpoint_restores_everything_so_training_continues_identically(tmp_path, spaces):
    learner = filled(spaces)
    learner.train(3)
    learner.extract(2)
    learner.save(tmp_path)
    expected = learner.train(4)
    restored = filled(spaces, count=7, seed=0)  # different replay contents and counters
    restored.load(tmp_path)
    assert restored.transitions == 200 and restored.updates == 3
    assert restored.policy_version == 1
    for name, array in learner.replay.arrays.items():
        np.testing.assert_array_equal(restored.replay.arrays[name], array)
    # Same replay, RNG, weights and optimizer moments: the same next four updates.
    assert restored.train(4) == expected


def test_checkpoint_is_atomic_and_damage_is_reported(tmp_path):
    learner = filled(discrete_spaces())
    learner.save(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_FILE]  # no temp file left
    (tmp_path / CHECKPOINT_FILE).write_bytes(b'half a checkpoint')
    with pytest.raises(CheckpointError, match='corrupt'):
        learner.load(tmp_path)
    with pytest.raises(CheckpointError, match='not found'):
        learner.load(tmp_path / 'missing')


def test_checkpoint_of_another_config_is_refused(tmp_path):
    filled(discrete_spaces()).save(tmp_path)
    other = OnlineLearner(discrete_spaces(), parse(LearnerConfig, {**SMALL,
                                                                    'replay_capacity': 600}))
    with pytest.raises(CheckpointError, match='written for'):
        other.load(tmp_path)


def test_inconsistent_spaces_are_refused():
    with pytest.raises(ConfigError, match='action_names'):
        OnlineLearner(TaskSpaces(obs_dim=3, action_kind='discrete', action_size=2,
                                 action_names=('only_one',)), LearnerConfig())
    with pytest.raises(ConfigError, match='obs_dim'):
        OnlineLearner(TaskSpaces(obs_dim=3, action_kind='discrete', action_size=2,
                                 observation_fields=('a',), observation_sizes=(2,)),
                      LearnerConfig())


def test_exported_discrete_policy_gives_the_extractors_probabilities():
    learner = filled(discrete_spaces())
    learner.train(5)
    learner.extract(5)
    exported = load_exported_policy(export_policy(learner, {'note': 'x'}))
    assert exported.policy_version == 1 and exported.train_config == {'note': 'x'}
    assert exported.spaces == learner.spaces
    rng = np.random.default_rng(1)
    for _ in range(10):
        obs = rng.normal(size=OBS_DIM).astype(np.float32)
        allowed = rng.random(N_ACTIONS) < 0.6
        allowed[int(rng.integers(N_ACTIONS))] = True
        expected = learner.extractor.policy.log_probs(
            torch.as_tensor(obs)[None], torch.as_tensor(allowed, dtype=torch.float32)[None])
        probs = exported.probabilities(obs, allowed)
        np.testing.assert_allclose(probs, expected.exp()[0].detach().numpy(), atol=1e-6)
        assert np.all(probs[~allowed] == 0.0)


def test_exported_continuous_policy_gives_the_extractors_gaussian(tmp_path):
    learner = filled(continuous_spaces())
    learner.train(5)
    learner.extract(5)
    path = tmp_path / 'policy.pt'
    path.write_bytes(export_policy(learner))
    exported = load_exported_policy(path)
    obs = np.arange(OBS_DIM, dtype=np.float32)
    dist = learner.extractor.policy.distribution(torch.as_tensor(obs)[None])
    mean, std = exported.gaussian(obs)
    np.testing.assert_allclose(mean, dist.loc[0].detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(std, dist.scale[0].detach().numpy(), atol=1e-6)
    actions = np.random.default_rng(0).uniform(-1, 1, (K, ACTION_DIM))
    expected = learner.extractor.policy.log_prob(torch.as_tensor(obs)[None],
                                                 torch.as_tensor(actions[None],
                                                                 dtype=torch.float32))
    np.testing.assert_allclose(exported.log_prob(obs, actions), expected[0].detach().numpy(),
                               atol=1e-4)


def induced_learner(count: int = 200) -> OnlineLearner:
    """A discrete learner that deploys the critic's exact induced policy."""
    config = {**SMALL, 'extraction': {**SMALL['extraction'], 'discrete_policy': 'induced'}}
    learner = OnlineLearner(discrete_spaces(), parse(LearnerConfig, config), seed=0)
    rng = np.random.default_rng(0)
    for _ in range(count):
        learner.add_transition(rng.normal(size=OBS_DIM), int(rng.integers(3)),
                               float(rng.normal()), rng.normal(size=OBS_DIM), 0.0,
                               np.array([0.4, 0.3, 0.3, 0.0]))
    return learner


def test_exported_induced_policy_is_the_critics_induced_policy():
    learner = induced_learner()
    learner.train(20)
    policy_before = [p.clone() for p in learner.extractor.policy.parameters()]
    stats = learner.extract(50)
    assert learner.policy_version == 1 and learner.extraction_steps == 0  # nothing fitted
    assert stats['fit_kl'] == 0.0 and stats['fit_agreement'] == 1.0
    assert all(torch.equal(a, b) for a, b in
               zip(policy_before, learner.extractor.policy.parameters(), strict=True))
    exported = load_exported_policy(export_policy(learner))
    assert exported.kind == 'induced' and exported.alpha == learner.critic.config.alpha
    rng = np.random.default_rng(2)
    for _ in range(20):
        obs = rng.normal(size=OBS_DIM)
        mu = np.where(rng.random(N_ACTIONS) < 0.7, rng.random(N_ACTIONS) + 0.05, 0.0)
        mu[int(rng.integers(N_ACTIONS))] = 0.5
        mu /= mu.sum()
        expected, _ = learner.induced_policy(obs, mu)
        probs = exported.probabilities(obs, mu)
        np.testing.assert_allclose(probs, expected, atol=1e-6)
        assert np.all(probs[mu == 0] == 0.0)
    # Training the critic further changes the induced policy; the exported one stays as it was.
    learner.train(20)
    moved, _ = learner.induced_policy(obs, mu)
    assert not np.allclose(moved, exported.probabilities(obs, mu), atol=1e-6)


def test_exported_policy_of_another_format_or_kind_is_refused():
    learner = induced_learner()
    learner.extract(1)
    data = export_policy(learner)
    for old, new, match in ((b'"ssq_ros.policy/2"', b'"ssq_ros.policy/1"', 'format'),
                            (b'"kind": "induced"', b'"kind": "average"', 'kind')):
        # the metadata is a stored (uncompressed) member of the archive: edit it in place
        assert data.count(old) == 1
        with pytest.raises(PolicyExportError, match=match):
            load_exported_policy(data.replace(old, new))


@pytest.mark.parametrize('kind', ['fitted', 'induced'])
def test_exported_policy_runs_in_a_process_with_torch_alone(tmp_path, kind):
    learner = filled(discrete_spaces()) if kind == 'fitted' else induced_learner()
    learner.extract(2)
    path = tmp_path / 'policy.pt'
    path.write_bytes(export_policy(learner))
    obs = torch.ones(1, OBS_DIM)
    allowed = torch.tensor([[0.0, 0.25, 0.75, 0.0]])
    code = ('import sys, torch; m = torch.jit.load(sys.argv[1]); '
            f'print(m(torch.ones(1, {OBS_DIM}), torch.tensor([[0.0, 0.25, 0.75, 0.0]]))'
            '.exp().tolist())')
    # The child imports torch only; it checks that no ssq_ros module was loaded.
    result = subprocess.run([sys.executable, '-c', code + '; import sys; '
                             'assert not any(n.startswith("ssq_ros") for n in sys.modules)',
                             str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    expected = load_exported_policy(path).module(obs, allowed).exp().tolist()
    np.testing.assert_allclose(json.loads(result.stdout), expected, atol=1e-6)


def test_damaged_exports_are_refused_with_a_reason(tmp_path):
    with pytest.raises(PolicyExportError, match='not a TorchScript'):
        load_exported_policy(b'garbage')
    with pytest.raises(PolicyExportError, match='cannot read'):
        load_exported_policy(tmp_path / 'missing.pt')
    path = tmp_path / 'plain.pt'
    with warnings.catch_warnings():  # TorchScript's deprecation notice, not under test here
        warnings.simplefilter('ignore', DeprecationWarning)
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with pytest.raises(PolicyExportError, match='ssq_policy.json'):
        load_exported_policy(path)


def exported(spaces: TaskSpaces, induced: bool = False):
    learner = induced_learner() if induced else filled(spaces)
    learner.train(3)
    learner.extract(3)
    return load_exported_policy(export_policy(learner))


@pytest.mark.parametrize('induced', [False, True])
def test_discrete_executor_never_leaves_the_support(induced):
    executor = ShieldedExecutor(exported(discrete_spaces(), induced), greedy=False, seed=3)
    rng = np.random.default_rng(0)
    for _ in range(300):
        allowed = rng.random(N_ACTIONS) < 0.4
        if not allowed.any():
            decision = executor.act_discrete(rng.normal(size=OBS_DIM), allowed)
            assert decision.action is None
            assert decision.status is SafetyStatus.NO_SAFE_ACTION_STOP
            continue
        mu = np.where(allowed, rng.random(N_ACTIONS) + 0.1, 0.0)
        support = mu / mu.sum() if rng.random() < 0.5 else allowed
        decision = executor.act_discrete(rng.normal(size=OBS_DIM) * 10, support)
        assert decision.status is SafetyStatus.OK
        assert allowed[decision.action]


def test_discrete_executor_without_policy_draws_from_mu_and_stops_on_nan():
    executor = ShieldedExecutor(None, seed=0)
    mu = np.array([0.0, 0.0, 1.0, 0.0])
    decision = executor.act_discrete(np.zeros(OBS_DIM), mu)
    assert (decision.action, decision.status) == (2, SafetyStatus.NO_POLICY_YET)
    executor.set_policy(exported(discrete_spaces()))
    decision = executor.act_discrete(np.full(OBS_DIM, np.nan), mu)
    assert (decision.action, decision.status) == (None, SafetyStatus.STATE_REJECTED_NONFINITE)
    with pytest.raises(ValueError, match='spaces|executor runs'):
        executor.set_policy(exported(continuous_spaces()))


def test_continuous_executor_sends_only_actions_that_pass_the_support_check():
    executor = ShieldedExecutor(exported(continuous_spaces()), greedy=False, seed=1)
    rng = np.random.default_rng(0)
    statuses = set()
    for _ in range(200):
        # A state-dependent half-plane stands in for the arm's support check.
        normal = rng.normal(size=ACTION_DIM)
        offset = rng.uniform(-0.5, 0.5)

        def is_safe(actions, normal=normal, offset=offset):
            return np.asarray(actions) @ normal <= offset

        samples = rng.uniform(-1, 1, (200, ACTION_DIM))
        samples = samples[is_safe(samples)][:K]
        decision = executor.act_continuous(rng.normal(size=OBS_DIM) * 5, samples, is_safe)
        statuses.add(decision.status)
        if decision.action is None:
            assert decision.status is SafetyStatus.NO_SAFE_ACTION_STOP
            continue
        assert is_safe(decision.action[None])[0]
        assert np.all(np.abs(decision.action) <= 1.0)
    assert {SafetyStatus.OK, SafetyStatus.ACTION_OUTSIDE_SUPPORT_FALLBACK} <= statuses


def test_continuous_executor_with_empty_support_and_unsafe_proposal_stops():
    executor = ShieldedExecutor(exported(continuous_spaces()))
    decision = executor.act_continuous(np.zeros(OBS_DIM), np.empty((0, ACTION_DIM)),
                                       lambda a: np.zeros(len(a), dtype=bool))
    assert (decision.action, decision.status) == (None, SafetyStatus.NO_SAFE_ACTION_STOP)


@pytest.mark.parametrize('discrete', [True, False])
def test_extraction_reports_its_fit_to_the_induced_policy(discrete):
    spaces = discrete_spaces() if discrete else continuous_spaces()
    learner = filled(spaces)
    learner.train(20)
    first = learner.extract(1)
    later = learner.extract(400)
    for stats in (first, later):
        assert stats['fit_kl'] >= 0.0 and 0.0 <= stats['fit_agreement'] <= 1.0
    if discrete:  # a categorical policy can represent pi ∝ mu exp(Q/alpha) exactly
        assert later['fit_kl'] < first['fit_kl']


@pytest.mark.parametrize('spaces', [discrete_spaces(), continuous_spaces()])
@pytest.mark.parametrize('correction', ['advantage', 'none'])
def test_n_step_learner_trains_on_chained_transitions(spaces, correction):
    config = parse(LearnerConfig, {**SMALL, 'critic': {**SMALL['critic'], 'n_step': 4,
                                                       'n_step_correction': correction}})
    learner = OnlineLearner(spaces, config, seed=0)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=OBS_DIM)
    for t in range(60):  # episodes of 10 steps, the state carried over within each
        next_obs = rng.normal(size=OBS_DIM)
        if spaces.discrete:
            learner.add_transition(obs, int(rng.integers(3)), -1.0, next_obs, 0.0,
                                   np.array([0.4, 0.3, 0.3, 0.0]))
        else:
            learner.add_transition(obs, rng.uniform(-1, 1, ACTION_DIM), -1.0, next_obs, 0.0,
                                   rng.uniform(-1, 1, (K, ACTION_DIM)))
        obs = rng.normal(size=OBS_DIM) if t % 10 == 9 else next_obs
    seq = learner.replay.sample_sequences(64, 4, rng)
    assert 0 < float(seq.valid[:, 1:].mean()) < 1   # sequences continue, and stop at ends
    stats = learner.train(3)
    assert learner.updates == 3 and np.isfinite(stats['loss'])
    # rewards of -1 with Q near 0: the 4-step target is about -(1 + g + g^2 + g^3) early on
    y = learner.critic.target_sequences(learner.replay.sequences_at(np.array([0]), 4))
    assert -4.5 < float(y) < -3.0


def test_checkpoint_from_before_a_neutral_field_existed_still_loads():
    learner = filled(discrete_spaces())
    learner.train(3)
    state = learner.state_dict()
    del state['config']['extraction']['discrete_policy']  # as written before the field existed
    again = OnlineLearner(discrete_spaces(), parse(LearnerConfig, SMALL), seed=0)
    again.load_state_dict(state)
    assert again.updates == 3
    state['config']['replay_capacity'] = 499  # a real difference is still refused
    with pytest.raises(CheckpointError, match='written for'):
        again.load_state_dict(state)


def test_run_checkpoint_config_is_read_as_a_config_file():
    from ssq_ros.training.config import TrainConfig
    from ssq_ros.training.run import is_checkpoint_of
    config = parse(TrainConfig, {})
    stored = json.loads(json.dumps(to_dict(config)))
    del stored['sim']['behavior']['persistence']
    assert is_checkpoint_of({'config': stored}, config)
    stored['learner']['critic']['alpha'] = 0.5
    assert not is_checkpoint_of({'config': stored}, config)
    assert not is_checkpoint_of({'config': {'no such key': 1}}, config)
    assert not is_checkpoint_of({}, config)  # no config stored at all


def test_the_exploration_bonus_is_learned_from_until_it_is_taken_out():
    learner = filled(discrete_spaces(), count=0)
    mu = np.array([0.4, 0.3, 0.3, 0.0])
    rng = np.random.default_rng(1)
    for k in range(600):  # past the capacity (500): overwritten slots drop their bonus
        learner.add_transition(rng.normal(size=OBS_DIM), 1, -1.0, rng.normal(size=OBS_DIM),
                               0.0, mu, bonus=0.01 * (k % 7))
    rewards = learner.replay.arrays['reward']
    assert rewards.max() > -0.95 and not np.allclose(rewards, -1.0)
    expected = sum(0.01 * (k % 7) for k in range(100, 600))
    assert learner.remove_bonus() == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(rewards, -1.0, atol=1e-6)
    assert learner.remove_bonus() == 0.0
    with pytest.raises(ValueError, match='bonus'):
        learner.add_transition(np.zeros(OBS_DIM), 1, -1.0, np.zeros(OBS_DIM), 0.0, mu,
                               bonus=float('nan'))
    # a checkpoint keeps the bonus; one written before the bonus existed carries none
    learner.add_transition(np.zeros(OBS_DIM), 1, -1.0, np.zeros(OBS_DIM), 0.0, mu, bonus=0.5)
    state = learner.state_dict()
    again = OnlineLearner(discrete_spaces(), parse(LearnerConfig, SMALL), seed=0)
    again.load_state_dict(state)
    assert again.remove_bonus() == pytest.approx(0.5)
    del state['bonus']
    again.load_state_dict(state)
    assert again.remove_bonus() == 0.0
