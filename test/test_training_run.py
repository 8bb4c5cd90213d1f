"""ssq-train end to end on the real MuJoCo arm with tiny budgets: safety, outputs, resume."""
import ast
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ssq_ros.cli.report import main as report_main
from ssq_ros.config import ConfigError, merge
from ssq_ros.deploy.executor import ShieldedExecutor
from ssq_ros.deploy.export import load_exported_policy
from ssq_ros.learning.exploration import VisitCounts
from ssq_ros.paths import config_path
from ssq_ros.safety.status import SafetyStatus
from ssq_ros.training import run as run_module
from ssq_ros.training.config import ScheduleConfig, load_train_config, with_overrides
from ssq_ros.training.evaluate import (
    EvalStats,
    complete_returns,
    heldout_episode_seed,
    training_episode_seed,
)
from ssq_ros.training.problem import build_problem
from ssq_ros.training.run import Run, metrics_keys
from ssq_ros.training.trainer import CHECKPOINT, Trainer, load_run_learner

REQUIRED_METRICS = {'unsafe_states_train', 'unsafe_states_eval', 'success_rate_behavior',
                    'success_rate_policy', 'return_behavior', 'return_policy',
                    'value_calibration_error', 'env_steps', 'updates', 'wall_time_s'}


def tiny_config(action_kind: str, steps: int = 240, **schedule) -> dict:
    return {
        'action_kind': action_kind,
        'sim': {'task': {'max_steps': 40}, 'behavior': {'num_samples': 4}},
        'learner': {'replay_capacity': 5000,
                    'critic': {'hidden_sizes': [32], 'batch_size': 32, 'gamma': 0.9},
                    'extraction': {'hidden_sizes': [32], 'batch_size': 32}},
        'schedule': {'steps': steps, 'learning_starts': 80, 'extract_every': 80,
                     'extract_steps': 10, 'final_extract_steps': 10, 'eval_every': 160,
                     'eval_episodes': 1, 'final_eval_episodes': 2, 'calibration_tail': 10,
                     'checkpoint_every': 80, **schedule},
    }


def write_config(folder: Path, data: dict) -> Path:
    path = folder / 'train.yaml'
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope='module')
def discrete_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp('discrete')
    config = load_train_config(write_config(folder, tiny_config('discrete')))
    metrics = Trainer(config, folder / 'run', progress=False).run()
    return folder / 'run', metrics


def test_default_config_loads_and_overrides_are_validated():
    config = load_train_config(config_path('train_sim.yaml'))
    assert config.action_kind == 'discrete'
    assert with_overrides(config, seed=7, steps=5000).schedule.seed == 7
    with pytest.raises(ConfigError, match='steps'):
        with_overrides(config, steps=0)
    with pytest.raises(ConfigError, match='learning_starts'):
        with_overrides(config, steps=10)


def test_unknown_and_bad_keys_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match='schedule.stepz: unknown key'):
        load_train_config(write_config(tmp_path, {'schedule': {'stepz': 3}}))
    with pytest.raises(ConfigError, match='learner.critic.alpha'):
        load_train_config(write_config(tmp_path, {'learner': {'critic': {'alpha': -1}}}))
    with pytest.raises(ConfigError, match='action_kind'):
        load_train_config(write_config(tmp_path, {'action_kind': 'both'}))


def test_training_and_heldout_episodes_are_disjoint():
    train = {training_episode_seed(seed, episode) for seed in range(3) for episode in range(500)}
    assert not train & {heldout_episode_seed(i) for i in range(1000)}


def test_discrete_run_is_safe_and_writes_every_output(discrete_run):
    folder, metrics = discrete_run
    assert REQUIRED_METRICS <= set(metrics)
    assert json.loads((folder / 'metrics.json').read_text()) == metrics
    assert metrics['unsafe_states_train'] == 0 and metrics['unsafe_states_eval'] == 0
    assert metrics['env_steps'] == 240 and metrics['updates'] == 240 - 80 + 1
    # the held-out evaluations (one periodic, four final, the baselines) are timed apart
    assert 0 < metrics['wall_time_eval_s'] < metrics['wall_time_s']
    assert metrics['min_margin_train'] > 0
    assert set(metrics['executor_statuses']) == {'OK'}
    assert metrics['policy_fit_kl'] >= 0 and 0 <= metrics['policy_fit_agreement'] <= 1
    # The induced policy's row: its success, and Q against its soft return on its own pairs.
    assert 0 <= metrics['success_rate_induced'] <= 1
    assert metrics['calibration_pairs_induced'] > 0
    # The same extracted policy executed by sampling: its own episodes, in the final record.
    assert 0 <= metrics['success_rate_policy_sampled'] <= 1
    final = [json.loads(line) for line in (folder / 'log.jsonl').read_text().splitlines()
             if '"final": true' in line][-1]
    sampled = final['policy_sampled']
    assert sampled['episodes'] == metrics['eval_episodes']
    assert sum(sampled['outcomes']) / sampled['episodes'] == \
        pytest.approx(metrics['success_rate_policy_sampled'])
    assert sampled['unsafe'] == 0 and sampled['return'] == \
        pytest.approx(metrics['return_policy_sampled'])
    with np.load(folder / 'calibration.npz') as pairs:
        q, g = pairs['q_induced'], pairs['g_induced']
    assert q.size == metrics['calibration_pairs_induced']
    assert metrics['calibration_bias_induced'] == pytest.approx(float(np.mean(q - g)))
    assert metrics['calibration_error_induced'] == pytest.approx(
        float(np.mean(np.abs(q - g)) / np.mean(np.abs(g))))
    extractions = [json.loads(line) for line in (folder / 'log.jsonl').read_text().splitlines()
                   if '"extract"' in line]
    assert extractions[-1]['policy_version'] == metrics['policy_version']
    assert extractions[-1]['fit_kl'] == metrics['policy_fit_kl']
    for name in ('learning_curve', 'success_rate', 'value_calibration', 'safety_margin'):
        assert (folder / 'plots' / f'{name}.png').stat().st_size > 1000
    assert list((folder / 'tb').glob('events.out.tfevents.*'))
    policy = load_exported_policy(folder / 'policy.pt')
    assert policy.policy_version == metrics['policy_version']
    assert policy.train_config['action_kind'] == 'discrete'


def test_report_prints_the_table_of_a_finished_run(discrete_run, capsys):
    folder, metrics = discrete_run
    assert report_main([str(folder)]) == 0
    out = capsys.readouterr().out
    assert 'finished' in out and 'unsafe_states_train' in out and 'value_calibration.png' in out


def test_report_works_on_a_partial_run(discrete_run, tmp_path, capsys):
    folder, _ = discrete_run
    partial = tmp_path / 'partial'
    partial.mkdir()
    lines = (folder / 'log.jsonl').read_text().splitlines()
    # A run killed mid-write: half of its log, the last line cut in the middle.
    (partial / 'log.jsonl').write_text('\n'.join(lines[:len(lines) // 2]) + '\n{"type": "epi')
    assert report_main([str(partial)]) == 0
    out = capsys.readouterr().out
    assert 'partial' in out and 'unsafe_states_train' in out
    assert (partial / 'plots' / 'learning_curve.png').exists()
    assert report_main([str(tmp_path / 'nothing')]) == 2


def test_discrete_policy_never_leaves_the_support_on_the_arm(discrete_run):
    folder, _ = discrete_run
    config = load_train_config(folder / 'config.yaml')
    problem = build_problem(config)
    executor = ShieldedExecutor(load_exported_policy(folder / 'policy.pt'), greedy=False)
    rng = np.random.default_rng(0)
    obs, _ = problem.env.reset(seed=heldout_episode_seed(0))
    for _ in range(40):
        decision = problem.behavior(rng)
        chosen = executor.act_discrete(obs, decision.probs)
        assert chosen.status is SafetyStatus.OK and decision.allowed[chosen.action]
        obs, _, terminated, truncated, info = problem.env.step(chosen.action)
        assert not info['unsafe']
        if terminated or truncated:
            break


def test_continuous_run_executes_only_actions_that_pass_the_support_check(tmp_path):
    config = load_train_config(write_config(tmp_path, tiny_config('continuous', steps=160,
                                                                  eval_every=160)))
    metrics = Trainer(config, tmp_path / 'run', progress=False).run()
    assert metrics['unsafe_states_train'] == 0 and metrics['unsafe_states_eval'] == 0
    problem = build_problem(config)
    executor = ShieldedExecutor(load_exported_policy(tmp_path / 'run' / 'policy.pt'),
                                greedy=False, seed=2)
    rng = np.random.default_rng(0)
    obs, _ = problem.env.reset(seed=heldout_episode_seed(0))
    for _ in range(40):
        decision = problem.behavior(rng)
        is_safe = problem.is_safe_here()
        chosen = executor.act_continuous(obs, decision.samples, is_safe)
        assert chosen.action is not None and is_safe(chosen.action[None])[0]
        obs, _, terminated, truncated, info = problem.env.step(chosen.action)
        assert not info['unsafe']
        if terminated or truncated:
            break


@pytest.mark.parametrize('action_kind', ['discrete', 'continuous'])
def test_induced_collection_acts_only_inside_mus_support(tmp_path, action_kind):
    """schedule.induced_collection 1: every episode after the first update is the induced
    policy's, and each of its actions was one mu allowed at that state (the support the
    previous transition carries) or one of mu's K samples there."""
    config = load_train_config(write_config(tmp_path, tiny_config(
        action_kind, steps=320, eval_every=320, induced_collection=1.0)))
    metrics = Trainer(config, tmp_path / 'run', progress=False).run()
    assert metrics['unsafe_states_train'] == 0 and metrics['unsafe_states_eval'] == 0
    episodes = [json.loads(line) for line in (tmp_path / 'run' / 'log.jsonl').open()
                if json.loads(line)['type'] == 'episode']
    collectors = [e['collector'] for e in episodes]
    assert metrics['episodes_induced_train'] == collectors.count('induced') >= 3
    # mu collects until the critic has trained (the first update comes at learning_starts)
    starts = [0] + [e['step'] for e in episodes[:-1]]
    learning_starts = config.schedule.learning_starts
    assert all(who == 'mu' for who, start in zip(collectors, starts, strict=True)
               if start < learning_starts)
    assert all(who == 'induced' for who, start in zip(collectors, starts, strict=True)
               if start > learning_starts)
    replay = load_run_learner(config, tmp_path / 'run').replay
    arrays = {name: array[:replay.size] for name, array in replay.arrays.items()}
    checked = 0
    for t in range(1, replay.size):
        if arrays['done'][t - 1] or not np.array_equal(arrays['next_obs'][t - 1],
                                                       arrays['obs'][t]):
            continue  # an episode start: mu's support there is not stored
        support, action = arrays['next_support'][t - 1], arrays['action'][t]
        if action_kind == 'discrete':
            assert support[int(action)] > 0, t
        else:
            assert np.any(np.all(np.isclose(support, action), axis=1)), t
        checked += 1
    assert checked > 250


def test_sigkill_mid_run_resumes_from_the_last_checkpoint(tmp_path):
    config_file = write_config(tmp_path, tiny_config('discrete', steps=800, eval_every=800,
                                                     checkpoint_every=100))
    out = tmp_path / 'run'
    command = [sys.executable, '-m', 'ssq_ros.cli.train', '--config', str(config_file),
               '--out', str(out), '--no-progress']
    env = {**os.environ, 'PYTHONUNBUFFERED': '1'}
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    checkpoint = out / CHECKPOINT
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        if checkpoint.exists() and torch.load(checkpoint, weights_only=True)[
                'learner']['transitions'] >= 200:
            break
        time.sleep(0.05)
    assert child.poll() is None, 'the trainer ended before it could be killed'
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert not (out / 'metrics.json').exists()
    saved = torch.load(checkpoint, weights_only=True)
    steps_at_kill = saved['learner']['transitions']
    assert 200 <= steps_at_kill < 800
    replay_at_kill = {k: v.numpy().copy() for k, v in saved['learner']['replay'].items()}
    size_at_kill = saved['learner']['replay_size']

    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['env_steps'] == 800 and metrics['unsafe_states_train'] == 0
    final = torch.load(checkpoint, weights_only=True)['learner']
    assert final['transitions'] == 800 and final['replay_size'] == 800
    # The resumed run appended to the replay it had at the checkpoint, not to a fresh one.
    for name, array in replay_at_kill.items():
        np.testing.assert_array_equal(final['replay'][name].numpy()[:size_at_kill],
                                      array[:size_at_kill])
    # The log holds every episode once: records past the checkpoint were dropped, then redone.
    episodes = [json.loads(line) for line in (out / 'log.jsonl').read_text().splitlines()
                if '"episode"' in line]
    assert [e['episode'] for e in episodes] == list(range(1, len(episodes) + 1))
    assert episodes[-1]['step'] == 800


def test_a_run_folder_refuses_another_config(discrete_run, tmp_path):
    folder, _ = discrete_run
    other = load_train_config(write_config(tmp_path, tiny_config('discrete', steps=300)))
    with pytest.raises(ConfigError, match='another config'):
        Trainer(other, folder, progress=False).run()
    assert json.loads((folder / 'metrics.json').read_text())['env_steps'] == 240


def test_a_finished_run_started_again_changes_nothing(discrete_run):
    folder, metrics = discrete_run
    checkpoint = (folder / CHECKPOINT).read_bytes()
    config = load_train_config(folder / 'config.yaml')
    assert Trainer(config, folder, progress=False).run() == metrics
    assert (folder / CHECKPOINT).read_bytes() == checkpoint


def test_budgets_left_unset_follow_steps_and_set_ones_are_kept():
    schedule = load_train_config(config_path('train_sim.yaml')).schedule
    assert schedule.final_extract_steps is None  # the package config leaves them to the rule
    tuned = with_overrides(load_train_config(config_path('train_sim.yaml'))).schedule.resolved()
    assert (tuned.final_extract_steps, tuned.eval_episodes, tuned.final_eval_episodes,
            tuned.calibration_episodes) == (20_000, 20, 30, 10)
    small = ScheduleConfig(steps=2000, learning_starts=100).resolved()
    assert (small.final_extract_steps, small.eval_episodes, small.final_eval_episodes,
            small.calibration_episodes) == (1333, 5, 10, 4)
    large = ScheduleConfig(steps=90_000).resolved()
    assert (large.final_extract_steps, large.eval_episodes, large.final_eval_episodes) == \
        (60_000, 20, 30)
    given = ScheduleConfig(steps=2000, final_extract_steps=7, final_eval_episodes=3).resolved()
    assert (given.final_extract_steps, given.final_eval_episodes,
            given.calibration_episodes) == (7, 3, 1)


def test_metrics_record_the_code_and_the_resolved_config(discrete_run):
    folder, metrics = discrete_run
    assert list(metrics) == metrics_keys()
    assert metrics['runner'] == 'ssq-train' and metrics['final_extract_steps'] == 10
    resolved = yaml.safe_load((folder / 'config.yaml').read_text())
    assert resolved['schedule']['calibration_episodes'] == 1  # filled in: ceil(2 / 3)
    canonical = json.dumps(resolved, sort_keys=True, separators=(',', ':')).encode()
    assert metrics['config_sha256'] == hashlib.sha256(canonical).hexdigest()
    commit = metrics['code_commit']
    if (Path(__file__).parents[1] / '.git').exists():
        # HEAD itself, or an ancestor of it if someone committed while the test ran.
        assert subprocess.run(['git', 'merge-base', '--is-ancestor', commit, 'HEAD'],
                              cwd=Path(__file__).parent).returncode == 0
        assert isinstance(metrics['code_dirty'], bool)
    else:
        assert commit == 'unknown'


def test_every_metrics_key_is_documented():
    docs = (Path(__file__).parents[1] / 'docs' / 'training.md').read_text()
    missing = [key for key in metrics_keys() if f'`{key}`' not in docs]
    assert not missing, f'docs/training.md does not describe {missing}'
    # ... and RunMetrics gives each key its own docstring.
    tree = ast.parse(Path(run_module.__file__).read_text())
    body = next(node for node in tree.body
                if isinstance(node, ast.ClassDef) and node.name == 'RunMetrics').body
    for index, node in enumerate(body):
        if isinstance(node, ast.AnnAssign):
            doc = body[index + 1] if index + 1 < len(body) else None
            assert isinstance(doc, ast.Expr) and isinstance(doc.value.value, str), \
                node.target.id


def test_a_return_is_complete_at_the_goal_or_a_tail_after_the_step():
    rewards = [-1.0] * 6
    # Reached the goal at step 6: every counted step's return is complete.
    assert complete_returns(rewards, True, 10, 3, 0.5).size == 6
    # Cut by the time limit (4) and run 2 steps further: steps 0..3 need a tail of 2.
    g = complete_returns(rewards, False, 4, 2, 0.5)
    np.testing.assert_allclose(g, [-1.96875, -1.9375, -1.875, -1.75])
    assert complete_returns(rewards, False, 4, 3, 0.5).size == 3
    assert complete_returns(rewards, False, 10, 10, 0.5).size == 0


def test_calibration_is_undefined_when_an_episode_is_cut_before_its_returns_complete():
    """The graph's episodes end at the time limit: keeping only the complete ones (those that
    reached the goal) would select lucky outcomes, so the calibration is NaN instead."""
    stats = EvalStats()
    stats.add_calibration([-2.0, -1.0], [-1.0, -1.0], True, 10, 3, 0.5)
    assert stats.calibration_bias == pytest.approx(np.mean([-2.0 + 1.5, -1.0 + 1.0]))
    assert stats.calibration_error == pytest.approx(0.25 / 1.25)
    stats.add_calibration([-1.0] * 4, [-1.0] * 4, False, 4, 3, 0.5)  # cut at the limit, no tail
    assert len(stats.q) == 2 and stats.calibration_incomplete == 1
    assert math.isnan(stats.calibration_bias) and math.isnan(stats.calibration_error)
    # A soft return: the induced actor's alpha KL is charged at every later step.
    soft = EvalStats()
    soft.add_calibration([0.0, 0.0], [-1.0, -1.0], True, 10, 0, 0.5, kl_costs=[0.4, 0.2])
    np.testing.assert_allclose(soft.g, [-1.0 + 0.5 * (-1.0 - 0.2), -1.0])


def test_the_final_extraction_shows_progress(discrete_run, tmp_path, monkeypatch):
    folder, _ = discrete_run
    lines: list[str] = []
    config = load_train_config(folder / 'config.yaml')
    run = Run(config, build_problem(config).spaces, tmp_path / 'copy', runner='test',
              checkpoint_name='run.pt', checkpoint_at_episode_end=True, say=lines.append,
              tensorboard=False)
    run.learner.load_state_dict(load_run_learner(config, folder).state_dict())
    run.check_folder()
    monkeypatch.setattr(run_module, 'PROGRESS_PERIOD', 0.0)
    run.final_extract()
    assert lines[0] == 'final extraction: 10 steps ...'
    assert any('steps/s, ETA' in line for line in lines[1:-1])
    assert lines[-1].startswith('final extraction: 10 steps in')


def test_a_finished_run_of_other_code_is_reported_as_it_is_and_called_stale(discrete_run,
                                                                             tmp_path, capsys):
    """A folder finished by another code version is not trained again, and never silently:
    the trainer says which code made it."""
    folder, _ = discrete_run
    copy = tmp_path / 'run'
    shutil.copytree(folder, copy)
    data = json.loads((copy / 'metrics.json').read_text())
    data.update(code_commit='0' * 40, code_dirty=False)
    (copy / 'metrics.json').write_text(json.dumps(data))
    result = Trainer(load_train_config(copy / 'config.yaml'), copy, progress=True).run()
    assert result['code_commit'] == '0' * 40 and result['env_steps'] == data['env_steps']
    captured = capsys.readouterr()
    assert 'made by code 000000000000' in captured.out + captured.err
    data.update(code_commit='unknown')
    assert 'unknown version' in Trainer(load_train_config(copy / 'config.yaml'), copy,
                                        progress=False).engine.stale_reason(data)


def test_the_novelty_bonus_joins_only_the_reward_the_critic_learns_from(tmp_path):
    """schedule.novelty_bonus: mu collects the same episodes with and without it (mu does not
    depend on the critic), the replay's rewards differ by exactly scale / sqrt(n) of the hand's
    cell after each step, the logged returns are the task's, and the visits are checkpointed."""
    scale, cell = 0.5, 0.05
    replays, returns = {}, {}
    for name, bonus in (('plain', 0.0), ('novelty', scale)):
        (tmp_path / name).mkdir()
        config = load_train_config(write_config(tmp_path / name, tiny_config(
            'discrete', novelty_bonus=bonus, novelty_cell=cell)))
        metrics = Trainer(config, tmp_path / name / 'run', progress=False).run()
        assert metrics['unsafe_states_train'] == 0
        replay = load_run_learner(config, tmp_path / name / 'run').replay
        replays[name] = {key: array[:replay.size] for key, array in replay.arrays.items()}
        returns[name] = [json.loads(line)['return'] for line in
                         (tmp_path / name / 'run' / 'log.jsonl').open()
                         if json.loads(line)['type'] == 'episode']
    plain, novelty = replays['plain'], replays['novelty']
    assert np.array_equal(plain['next_obs'], novelty['next_obs'])
    assert returns['plain'] == returns['novelty']
    joints = (plain['next_obs'].shape[1] - 9) // 2  # obs = q, qdot, hand, goal, goal - hand
    visits = VisitCounts(cell, scale)
    expected = [visits.visit(ee) for ee in plain['next_obs'][:, 2 * joints:2 * joints + 3]]
    assert len(set(np.round(expected, 6))) > 3  # both new cells and revisits
    np.testing.assert_allclose(novelty['reward'] - plain['reward'], expected, atol=1e-5)
    state = torch.load(tmp_path / 'novelty' / 'run' / CHECKPOINT, weights_only=True)
    assert sum(state['driver']['visits']['counts']) == len(expected) == 240
    assert 'visits' not in torch.load(tmp_path / 'plain' / 'run' / CHECKPOINT,
                                      weights_only=True)['driver']
    # schedule.novelty_until 0.5: the bonus of the first 120 steps only, taken out at step 120
    (tmp_path / 'until').mkdir()
    config = load_train_config(write_config(tmp_path / 'until', tiny_config(
        'discrete', novelty_bonus=scale, novelty_cell=cell, novelty_until=0.5)))
    Trainer(config, tmp_path / 'until' / 'run', progress=False).run()
    learner = load_run_learner(config, tmp_path / 'until' / 'run')
    np.testing.assert_allclose(learner.replay.arrays['reward'][:240], plain['reward'],
                               atol=1e-5)
    assert not learner.bonus.any()
    ends = [json.loads(line) for line in (tmp_path / 'until' / 'run' / 'log.jsonl').open()
            if json.loads(line)['type'] == 'novelty_end']
    assert [e['step'] for e in ends] == [120]
    assert ends[0]['bonus_removed'] == pytest.approx(sum(expected[:120]), rel=1e-4)
    state = torch.load(tmp_path / 'until' / 'run' / CHECKPOINT, weights_only=True)
    assert sum(state['driver']['visits']['counts']) == 120


def test_hindsight_goals_store_each_transition_again_with_a_goal_reached_later(tmp_path):
    """schedule.hindsight_goals 2 with goal-free mu: mu's transitions are those of a run
    without them; after each episode come 2 copies of each of its transitions, each with a
    goal the hand reached at that step or later, the robot's part and mu's support unchanged,
    the reward and the end the task's for that goal. The graph and goal-seeking mu refuse
    them."""
    free = {'sim': {'task': {'max_steps': 40}, 'behavior': {'num_samples': 4,
                                                            'goal_preference': 0.0}}}
    replays = {}
    for name, copies in (('plain', 0), ('hindsight', 2)):
        (tmp_path / name).mkdir()
        config = load_train_config(write_config(tmp_path / name, merge(
            tiny_config('discrete', hindsight_goals=copies), free)))
        metrics = Trainer(config, tmp_path / name / 'run', progress=False).run()
        assert metrics['unsafe_states_train'] == 0 and metrics['env_steps'] == 240
        learner = load_run_learner(config, tmp_path / name / 'run')
        replays[name] = {key: array[:learner.replay.size]
                         for key, array in learner.replay.arrays.items()}
    lengths = [json.loads(line)['length'] for line in
               (tmp_path / 'hindsight' / 'run' / 'log.jsonl').open()
               if json.loads(line)['type'] == 'episode']
    plain, hindsight = replays['plain'], replays['hindsight']
    assert len(hindsight['obs']) == 3 * 240 and sum(lengths) == 240
    task = build_problem(config).env.task
    layout, start, reached = task.layout, 0, 0
    for length in lengths:
        real = {key: array[start:start + length] for key, array in hindsight.items()}
        copies = {key: array[start + length:start + 3 * length]
                  for key, array in hindsight.items()}
        first = start // 3  # plain's rows of the same episode
        mine = {key: array[first:first + length] for key, array in plain.items()}
        for key in real:
            np.testing.assert_allclose(real[key], mine[key], atol=1e-6, err_msg=key)
        hands = real['next_obs'][:, layout['ee']]
        for row in range(2 * length):
            t = row // 2
            goal = copies['next_obs'][row, layout['goal']]
            assert any(np.allclose(goal, hand, atol=1e-6) for hand in hands[t:]), (start, row)
            for key in ('obs', 'next_obs'):
                np.testing.assert_allclose(copies[key][row], task.with_goal(real[key][t], goal),
                                           atol=1e-6)
            assert copies['action'][row] == real['action'][t]
            assert np.array_equal(copies['next_support'][row], real['next_support'][t])
            reward, hit = task.reward(hands[t].astype(float), goal.astype(float))
            assert copies['reward'][row] == pytest.approx(reward, abs=1e-4)
            assert copies['done'][row] == float(hit)
            reached += hit
        start += 3 * length
    assert reached > 0  # goals at the step itself are reached: the success bonus is seen
    for refused in (tiny_config('discrete', hindsight_goals=2),      # goal-seeking mu
                    merge(tiny_config('continuous', hindsight_goals=2), free)):
        with pytest.raises(ConfigError, match='hindsight_goals'):
            load_train_config(write_config(tmp_path, refused))
