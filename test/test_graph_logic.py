"""The node graph's ROS-free logic: transition layout, phases, mu's episode loop, the learner's
run (schedule, checkpoints, resume, evaluation, metrics), the monitor's tally. Real MuJoCo,
pinocchio and torch; no ROS."""
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from ssq_ros.config import ConfigError, parse, to_dict
from ssq_ros.deploy.executor import ShieldedExecutor
from ssq_ros.deploy.export import load_exported_policy
from ssq_ros.graph_logic.behavior_loop import BehaviorLoop, load_run_config, observe
from ssq_ros.graph_logic.learner_run import LearnerRun
from ssq_ros.graph_logic.monitor import SafetyTally, margin_color
from ssq_ros.graph_logic.phases import PhaseAnnouncement, RunPhase, decode_phase
from ssq_ros.graph_logic.shielded_step import shielded_command
from ssq_ros.graph_logic.transitions import (
    EpisodeSummary,
    Transition,
    pack_episode,
    pack_transition,
    transition_layout,
    unpack_episode,
    unpack_transition,
)
from ssq_ros.safety.status import SafetyStatus
from ssq_ros.training.config import TrainConfig
from ssq_ros.training.problem import build_problem
from ssq_ros.training.run import metrics_keys

TINY = Path(__file__).parent / 'data' / 'train_sim_tiny.yaml'
@pytest.fixture(scope='module')
def config():
    return load_run_config(TINY)


@pytest.fixture(scope='module')
def problem(config):
    return build_problem(config)


def test_phase_text_round_trip_and_refusals():
    for phase in RunPhase:
        assert decode_phase(PhaseAnnouncement(phase, 4).encode()) == PhaseAnnouncement(phase, 4)
    assert decode_phase('train') == PhaseAnnouncement(RunPhase.TRAIN, 0)
    for bad in ('', 'training', 'eval_policy version=3', 'eval_policy policy_version=-1'):
        with pytest.raises(ValueError):
            decode_phase(bad)


def _transition(problem, seq=3, action=2):
    obs = np.arange(problem.spaces.obs_dim, dtype=float)
    probs = np.full(problem.spaces.action_size, 1.0 / problem.spaces.action_size)
    return Transition(seq, RunPhase.TRAIN, 1, obs, action, -0.5, obs + 1, True, probs)


def test_transition_layout_round_trip(problem):
    spaces = problem.spaces
    layout = transition_layout(spaces)
    t = _transition(problem)
    data = pack_transition(spaces, t)
    back = unpack_transition(spaces, list(layout.fields), list(layout.sizes), data)
    assert back.seq == 3 and back.action == 2 and back.done and back.reward == -0.5
    np.testing.assert_array_equal(back.next_obs, t.next_obs)
    np.testing.assert_allclose(back.next_support, t.next_support)


@pytest.mark.parametrize('damage, field', [
    (lambda f, s, d: (f, s, d[:-1]), 'values'),
    (lambda f, s, d: (f[::-1], s[::-1], d), 'labels'),
    (lambda f, s, d: (f, [s[0] + 1] + s[1:], d), 'sizes'),
    (lambda f, s, d: (f, s, np.where(np.arange(d.size) == 5, np.nan, d)), 'obs'),
    (lambda f, s, d: (f, s, np.where(np.arange(d.size) == 0, 1.5, d)), 'seq'),
    (lambda f, s, d: (f, s, np.where(np.arange(d.size) == 1, 9.0, d)), 'phase'),
])
def test_malformed_transitions_are_refused_naming_the_field(problem, damage, field):
    spaces = problem.spaces
    layout = transition_layout(spaces)
    data = pack_transition(spaces, _transition(problem))
    labels, sizes, data = damage(list(layout.fields), list(layout.sizes), data)
    with pytest.raises(ValueError, match=field):
        unpack_transition(spaces, labels, sizes, data)


def test_transition_with_bad_action_done_or_support_is_refused(problem):
    spaces = problem.spaces
    layout = transition_layout(spaces)
    for bad in (_transition(problem, action=spaces.action_size),):
        data = pack_transition(spaces, bad)
        with pytest.raises(ValueError, match='action'):
            unpack_transition(spaces, list(layout.fields), list(layout.sizes), data)
    t = _transition(problem)
    support = t.next_support.copy()
    support[0] += 0.5
    data = pack_transition(spaces, Transition(**{**vars(t), 'next_support': support}))
    with pytest.raises(ValueError, match='next_support'):
        unpack_transition(spaces, list(layout.fields), list(layout.sizes), data)


def test_episode_summary_round_trip():
    summary = EpisodeSummary(RunPhase.EVAL_POLICY, 4, -12.5, True, 33)
    data = pack_episode(summary)
    labels = ['phase', 'episode', 'return', 'success', 'length']
    assert unpack_episode(labels, [1] * 5, data) == summary
    with pytest.raises(ValueError, match='success'):
        unpack_episode(labels, [1] * 5, np.where(np.arange(5) == 3, 0.5, data))


def _start(problem, loop, seed=2):
    problem.env.reset(seed=seed)
    loop.start_episode(RunPhase.TRAIN, 0, problem.env.goal)


def test_behavior_loop_chains_transitions_and_ends_at_the_time_limit(problem):
    loop = BehaviorLoop(problem, seed=0)
    _start(problem, loop)
    env, max_steps = problem.env, problem.setup.task.config.max_steps
    first = loop.on_state(*env.joint_state(), mu_acts=True)
    assert first.transition is None and first.command is not None
    transitions = []
    step = first
    while step.summary is None:
        env.sim.step(step.command)
        q, qdot = env.joint_state()
        obs = observe(problem, q, qdot, env.goal)
        step = loop.on_state(q, qdot, mu_acts=True)
        t = step.transition
        transitions.append(t)
        np.testing.assert_allclose(t.next_obs, obs)
        ee = obs[problem.setup.task.layout['ee']].astype(float)
        assert t.reward == pytest.approx(problem.setup.task.reward(ee, env.goal)[0])
        assert np.isclose(t.next_support.sum(), 1.0)
    assert step.command is None and not loop.active
    assert [t.seq for t in transitions] == list(range(len(transitions)))
    # Each transition starts where the previous one ended.
    for before, after in zip(transitions[:-1], transitions[1:], strict=True):
        np.testing.assert_array_equal(before.next_obs, after.obs)
    if not step.summary.success:
        assert step.summary.length == max_steps == len(transitions)
    assert step.summary.episode_return == pytest.approx(sum(t.reward for t in transitions))
    with pytest.raises(RuntimeError):
        loop.on_state(*env.joint_state(), mu_acts=True)


def test_behavior_loop_keeps_score_without_acting(problem):
    loop = BehaviorLoop(problem, seed=0)
    _start(problem, loop)
    first = loop.on_state(*problem.env.joint_state(), mu_acts=False)
    second = loop.on_state(*problem.env.joint_state(), mu_acts=False)
    assert first.command is None and second.command is None
    assert first.transition is None and second.transition is None
    assert loop.seq == 0 and loop._length == 1


def test_behavior_loop_makes_transitions_of_another_actors_actions(problem):
    loop = BehaviorLoop(problem, seed=0)
    _start(problem, loop)
    env = problem.env
    assert loop.on_state(*env.joint_state(), mu_acts=False).transition is None
    env.sim.step(np.zeros(problem.setup.robot.dof))
    unknown = loop.on_state(*env.joint_state(), mu_acts=False)
    assert unknown.transition is None  # the action at the previous state is not known
    env.sim.step(np.zeros(problem.setup.robot.dof))
    step = loop.on_state(*env.joint_state(), mu_acts=False, previous_action=5)
    t = step.transition
    assert step.command is None and t.action == 5 and t.seq == 0
    assert t.phase is RunPhase.TRAIN and np.isclose(t.next_support.sum(), 1.0)


def test_start_episode_refuses_a_bad_goal(problem):
    loop = BehaviorLoop(problem, seed=0)
    with pytest.raises(ValueError, match='goal'):
        loop.start_episode(RunPhase.TRAIN, 0, [0.3, np.nan, 0.2])


def test_shielded_command_without_policy_is_mu_and_stops_on_nonfinite_state(problem):
    problem.env.reset(seed=4)
    q, qdot = problem.env.joint_state()
    out = shielded_command(problem, ShieldedExecutor(), q, qdot, problem.env.goal,
                           np.random.default_rng(0))
    assert out.status is SafetyStatus.NO_POLICY_YET
    assert np.all(np.isfinite(out.command)) and out.command.shape == (problem.setup.robot.dof,)
    out = shielded_command(problem, ShieldedExecutor(), q, qdot,
                           np.array([np.inf, 0.0, 0.3]), np.random.default_rng(0))
    assert out.action is None and not np.any(out.command)


def _feed(run, problem, count, phase=RunPhase.TRAIN, start=0, episode=0):
    rng = np.random.default_rng(start)
    events = []
    for seq in range(start, start + count):
        problem.env.reset(seed=2 * seq)
        q, qdot = problem.env.joint_state()
        decision = problem.controller.act(q, qdot, rng, problem.env.goal)
        obs = observe(problem, q, qdot, problem.env.goal)
        events.append(run.on_transition(Transition(
            seq, phase, episode, obs, decision.action, -1.0, obs, False, decision.probs)))
    return events


def test_learner_run_schedule_checkpoint_resume_evaluation_and_metrics(problem, config,
                                                                      tmp_path):
    schedule = config.schedule
    run = LearnerRun(config, problem.spaces, tmp_path)
    assert not run.prepare_folder()
    assert schedule.checkpoint_every < schedule.extract_every < schedule.steps
    events = _feed(run, problem, schedule.checkpoint_every)
    assert events[-1].checkpoint and (tmp_path / 'checkpoints' / 'graph_learner.pt').exists()
    assert not any(e.checkpoint for e in events[:-1])
    assert run.learner.updates > 0
    saved_steps, saved_updates = run.steps, run.learner.updates
    # Lost with the 'kill' below: they came after the checkpoint.
    events = _feed(run, problem, schedule.extract_every - saved_steps, start=saved_steps)
    assert events[-1].policy is not None and run.learner.policy_version == 1
    assert load_exported_policy(events[-1].policy).spaces == problem.spaces

    resumed = LearnerRun(config, problem.spaces, tmp_path)
    assert resumed.prepare_folder()
    assert (resumed.steps, resumed.learner.updates) == (saved_steps, saved_updates)
    # One trained before the checkpoint, sent again (the killed learner's acknowledgement
    # never reached the behavior): known from the checkpoint, not trained twice.
    again = _feed(resumed, problem, 1, start=saved_steps - 1)[0]
    assert again.duplicate and resumed.steps == saved_steps
    events = _feed(resumed, problem, schedule.steps - saved_steps, start=saved_steps)
    assert events[-1].phase == PhaseAnnouncement(RunPhase.EXTRACT)
    assert not any(e.duplicate for e in events)  # those after the checkpoint: trained again
    late = _transition(problem, seq=10 * schedule.steps)
    assert resumed.on_transition(late).phase is None  # late: ignored
    assert resumed.on_transition(late).duplicate
    assert resumed.counters.transitions_ignored == 1
    assert resumed.counters.transitions_after_budget == 1
    extracted = resumed.final_extract()
    assert extracted.phase.phase is RunPhase.EVAL_POLICY
    assert extracted.phase.policy_version == resumed.learner.policy_version
    assert extracted.policy is not None

    for episode in range(schedule.final_eval_episodes):
        events = resumed.on_episode(EpisodeSummary(RunPhase.EVAL_POLICY, episode, -3.0,
                                                   episode == 0, 10))
    assert events.phase == PhaseAnnouncement(RunPhase.EVAL_BEHAVIOR)
    for episode in range(schedule.final_eval_episodes):
        length = 5
        _feed(resumed, problem, length, RunPhase.EVAL_BEHAVIOR,
              20 * schedule.steps + 10 * episode, episode)  # numbers not used before
        events = resumed.on_episode(EpisodeSummary(RunPhase.EVAL_BEHAVIOR, episode,
                                                   -5.0, True, length))
    assert events.finished and events.phase.phase is RunPhase.DONE
    metrics = json.loads((tmp_path / 'metrics.json').read_text())
    assert list(metrics) == metrics_keys()  # the keys ssq-train writes, in the same order
    assert metrics['runner'] == 'train_sim graph' and len(metrics['config_sha256']) == 64
    assert metrics['success_rate_policy'] == pytest.approx(1 / schedule.final_eval_episodes)
    assert metrics['return_behavior'] == -5.0 and metrics['env_steps'] == schedule.steps
    assert math.isfinite(metrics['value_calibration_error'])
    # Every episode reached the goal, so all 5 steps of each calibration episode count.
    pairs_expected = 5 * min(schedule.calibration_episodes, schedule.final_eval_episodes)
    assert metrics['calibration_pairs'] == pairs_expected
    with np.load(tmp_path / 'calibration.npz') as pairs:
        assert pairs['q_behavior'].size == pairs['g_behavior'].size == pairs_expected
    assert (tmp_path / 'plots' / 'value_calibration.png').stat().st_size > 1000
    # The graph does not run the induced policy: its keys say so instead of holding a number.
    assert math.isnan(metrics['success_rate_induced'])
    assert math.isnan(metrics['success_rate_policy_sampled'])
    assert math.isnan(metrics['calibration_bias_induced'])
    assert metrics['calibration_pairs_induced'] == 0


def test_learner_run_refuses_a_folder_of_another_config(problem, config, tmp_path):
    LearnerRun(config, problem.spaces, tmp_path).prepare_folder()
    other = load_run_config(TINY, steps=config.schedule.steps + 1)
    with pytest.raises(Exception, match='another config'):
        LearnerRun(other, problem.spaces, tmp_path).prepare_folder()


def test_learner_run_refuses_induced_collection(problem, config, tmp_path):
    """The graph's mu node collects everything: a config asking the induced policy to collect
    is refused before the run folder exists, not run as if honoured."""
    asks = dataclasses.replace(config, schedule=dataclasses.replace(config.schedule,
                                                                     induced_collection=0.5))
    with pytest.raises(ConfigError, match='induced_collection'):
        LearnerRun(asks, problem.spaces, tmp_path / 'run')
    assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('setting, value', [('novelty_bonus', 0.3), ('hindsight_goals', 2)])
def test_learner_run_refuses_ssq_train_only_settings(problem, config, tmp_path, setting, value):
    """The graph learns from the transitions mu's node sends, as sent: a config asking for
    the novelty bonus or hindsight goals is refused, not run without them."""
    asks = dataclasses.replace(config, schedule=dataclasses.replace(config.schedule,
                                                                     **{setting: value}))
    with pytest.raises(ConfigError, match=setting):
        LearnerRun(asks, problem.spaces, tmp_path / 'run')
    assert not (tmp_path / 'run').exists()


def test_margin_colors_and_monitor_buckets(problem):
    assert margin_color(1.0, 0.1) == (0.0, 1.0, 0.0, 1.0)
    assert margin_color(0.0, 0.1) == (1.0, 0.0, 0.0, 1.0)
    assert margin_color(-0.01, 0.1) == margin_color(float('nan'), 0.1) == (1.0, 0.0, 1.0, 1.0)
    tally = SafetyTally(problem.setup.safe_set)
    problem.env.reset(seed=6)
    q, qdot = problem.env.joint_state()
    assert tally.on_state(q, qdot)[0] is False
    assert tally.values()['judge'] == 'safe_set'
    tally.phase = RunPhase.EVAL_POLICY
    unsafe, margin, _ = tally.on_state(q, qdot + 100.0)  # far beyond the velocity limits
    assert unsafe and margin < 0
    values = tally.values()
    assert (values['unsafe_states_train'], values['unsafe_states_eval']) == ('0', '1')
    tally.on_referee(False, 0.2, 'table')
    values = tally.values()
    assert values['judge'] == 'referee' and values['unsafe_states_eval'] == '0'
    assert values['safe_set_unsafe_states'] == '1' and tally.unsafe_total == 1
    assert (values['safe_set_unsafe_states_train'], values['safe_set_unsafe_states_eval']) == \
        ('0', '1')


def test_continuous_transition_carries_k_samples_of_mu(config):
    data = to_dict(config)
    data['action_kind'] = 'continuous'
    problem = build_problem(parse(TrainConfig, data, 'test'))
    spaces = problem.spaces
    problem.env.reset(seed=2)
    loop = BehaviorLoop(problem, seed=0)
    loop.start_episode(RunPhase.TRAIN, 0, problem.env.goal)
    step = loop.on_state(*problem.env.joint_state(), mu_acts=True)
    problem.env.sim.step(step.command)
    t = loop.on_state(*problem.env.joint_state(), mu_acts=True).transition
    assert t.next_support.shape == (spaces.num_samples, spaces.action_size)
    layout = transition_layout(spaces)
    assert dict(zip(layout.fields, layout.sizes, strict=True))['next_support'] == \
        spaces.num_samples * spaces.action_size
    back = unpack_transition(spaces, list(layout.fields), list(layout.sizes),
                             pack_transition(spaces, t))
    np.testing.assert_array_equal(back.next_support, t.next_support)
    np.testing.assert_array_equal(back.action, t.action)
    # Every sample of mu at s' passes the support check there.
    q, qdot = problem.env.joint_state()
    actions = problem.controller.actions
    assert problem.setup.support.is_safe(q, qdot, actions.to_joint(q, back.next_support)).all()
