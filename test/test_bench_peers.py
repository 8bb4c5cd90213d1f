"""Benchmark plumbing: referee bookkeeping, the penalty, the shield in evaluation, the SSQ
entrant end to end and the generated document. The peer adapters (SB3, d3rlpy: the optional
bench extra) are tested by bench/tests/, which `make bench` runs before the benchmark.

Run as `python -m pytest` from the repository root (the bench scripts import as `bench.*`).
"""
import json

import numpy as np
import pytest

from bench import bench_peers, make_benchmarks_doc
from bench.peers.common import (
    EvalPolicy,
    SupportShield,
    TrainingRecorder,
    UnsafePenalty,
    evaluate,
)
from bench.peers.ssq import split_episodes, ssq_config, ssq_transitions, tiny_ssq_config
from ssq_ros.config import to_dict
from ssq_ros.task.reach_avoid import TASK_REVISION
from ssq_ros.training.evaluate import training_episode_seed
from ssq_ros.training.problem import build_problem


@pytest.fixture(scope='module')
def tiny_config(tmp_path_factory):
    """40-step episodes: enough for every part of a run to happen."""
    return tiny_ssq_config(tmp_path_factory.mktemp('bench'), 40)


@pytest.fixture(scope='module')
def long_episode_config(tmp_path_factory):
    """100-step episodes: long enough to reach the table from every held-out start."""
    return tiny_ssq_config(tmp_path_factory.mktemp('bench'), 100)


def down_policy(problem) -> EvalPolicy:
    """Always straight down toward the table: unsafe within an episode unless shielded."""
    if problem.discrete:
        down = problem.setup.cartesian.names.index('-z')
        scores = np.eye(problem.spaces.action_size)[down]
        return EvalPolicy('down', True, scores=lambda obs: scores)
    return EvalPolicy('down', False, act=lambda obs: np.array([0.0, 0.0, -1.0]))


def test_split_episodes_keeps_successors_and_marks_ends():
    obs = np.arange(6, dtype=np.float32)[:, None]
    # Episode A: 0->1->2 terminal. Episode B: 3->4->5, cut by the time limit.
    transitions = {'obs': obs[[0, 1, 3, 4]], 'next_obs': obs[[1, 2, 4, 5]],
                   'action': np.array([1, 2, 3, 4]), 'reward': np.array([1., 2., 3., 4.]),
                   'done': np.array([0., 1., 0., 0.])}
    rows = split_episodes(transitions)
    assert rows['observations'][:, 0].tolist() == [0, 1, 3, 4, 5]
    assert rows['actions'].tolist() == [1, 2, 3, 4, 0]
    assert rows['terminals'].tolist() == [0, 1, 0, 0, 0]
    assert rows['timeouts'].tolist() == [0, 0, 0, 0, 1]
    assert rows['actions'].dtype == np.int64
    with pytest.raises(ValueError, match='no transitions'):
        split_episodes({k: v[:0] for k, v in transitions.items()})


def test_recorder_counts_the_referee_and_penalty_subtracts(long_episode_config):
    problem = build_problem(ssq_config('discrete', 3, 100, base=long_episode_config))
    recorder = TrainingRecorder(problem.env, run_seed=3)
    env = UnsafePenalty(recorder, penalty=10.0)
    obs, _ = env.reset(seed=999)  # the library's seed is replaced by the training sequence
    expected, _ = problem.env.reset(seed=training_episode_seed(3, 0))
    assert np.array_equal(obs, expected)
    env.reset(seed=999)
    down = problem.setup.cartesian.names.index('-z')
    seen, shaped = 0, 0.0
    for _ in range(100):
        _, reward, terminated, truncated, info = env.step(down)
        seen += int(info['unsafe'])
        shaped += reward
        if terminated or truncated:
            break
    assert seen > 0 and recorder.unsafe_states == seen
    assert recorder.curve.unsafe_cumulative == [seen]
    assert shaped == pytest.approx(recorder.curve.returns[0] - 10.0 * seen)
    with pytest.raises(ValueError, match='penalty'):
        UnsafePenalty(recorder, float('nan'))


@pytest.mark.parametrize('kind', ['discrete', 'continuous'])
def test_shield_keeps_a_policy_driving_into_the_table_safe(long_episode_config, kind):
    problem = build_problem(ssq_config(kind, 0, 100, base=long_episode_config))
    policy = down_policy(problem)
    as_is = evaluate(problem, policy, 1, shielded=False, gamma=0.98)
    shielded = evaluate(problem, policy, 1, shielded=True, gamma=0.98)
    assert as_is['unsafe_states'] > 0 and as_is['steps'] == 100
    assert shielded['unsafe_states'] == 0
    assert 0.0 < shielded['intervention_rate'] <= 1.0


@pytest.mark.parametrize('kind', ['discrete', 'continuous'])
def test_a_learner_training_behind_the_support_shield_enters_no_unsafe_state(
        long_episode_config, kind):
    problem = build_problem(ssq_config(kind, 0, 100, base=long_episode_config))
    shield = SupportShield(problem, seed=0)
    recorder = TrainingRecorder(shield, run_seed=0)
    recorder.reset()
    rng = np.random.default_rng(0)
    # what a learner exploring toward the table proposes (within the action bounds)
    if problem.discrete:
        down = problem.setup.cartesian.names.index('-z')
    else:
        actions = problem.env.actions
        down = np.clip([0.0, 0.0, -1.0], actions.low, actions.high)
    accepted = replaced = 0
    for _ in range(100):
        mu_allows = problem.behavior(rng).probs > 0 if problem.discrete else None
        allowed = bool(mu_allows[down] if problem.discrete
                       else problem.is_safe_here()(down[None])[0])
        _, _, terminated, truncated, info = recorder.step(down)
        assert info['shield_replaced'] == (not allowed)
        if allowed:  # an accepted proposal runs unchanged
            assert np.array_equal(info['executed_action'], down)
            accepted += 1
        else:  # discrete: mu's own draw, which mu allows; continuous: mu's nearest sample
            if problem.discrete:
                assert mu_allows[info['executed_action']]
            replaced += 1
        if terminated or truncated:
            break
    # driven straight down until the support refuses, then held by mu's actions
    assert accepted > 0 and replaced > 0 and shield.interventions == replaced
    assert recorder.unsafe_states == 0


def test_ssq_entrant_end_to_end_and_document(tiny_config, tmp_path):
    out = tmp_path / 'peers.json'
    assert bench_peers.main(['--methods', 'ssq_discrete', '--steps', '100',
                             '--eval-episodes', '1', '--ssq-config', tiny_config,
                             '--runs', str(tmp_path / 'runs'), '--out', str(out),
                             '--no-progress']) == 0
    result = json.loads(out.read_text())
    (row,) = result['table']
    assert row['method'] == 'ssq_discrete' and row['unsafe_train'] == 0
    assert row['env_steps_train'] == 100 and row['unsafe_eval_shielded'] == 0
    (record,) = result['runs']
    assert record['training']['curve']['unsafe_cumulative'][-1] == 0
    evals = record['training']['eval_curve']  # the final evaluation at least
    assert evals['steps'][-1] == 100 and 0.0 <= evals['success_rates'][-1] <= 1.0
    config = ssq_config('discrete', 0, 100, base=tiny_config)
    log = tmp_path / 'runs' / 'ssq_discrete-seed0' / 'log.jsonl'
    logged = log.read_bytes()
    replay = ssq_transitions(config, tmp_path / 'runs' / 'ssq_discrete-seed0')
    assert log.read_bytes() == logged  # reading the replay leaves the finished run as it is
    assert len(replay['obs']) == 100
    assert np.array_equal(replay['next_obs'][:-1][replay['done'][:-1] == 0][0],
                          replay['obs'][1:][replay['done'][:-1] == 0][0])

    doc = tmp_path / 'doc' / 'benchmarks.md'
    doc.parent.mkdir()
    run_all = tmp_path / 'run_all.json'
    arguments = result['command'].split('bench.bench_peers')[1]
    run_all.write_text(json.dumps({'command': 'bench/run_all.sh' + arguments,
                                   'wall_time_s': 3700}))
    assert make_benchmarks_doc.main(['--peers', str(out), '--speed',
                                     str(tmp_path / 'absent.json'), '--run-all', str(run_all),
                                     '--harness', str(tmp_path / 'absent.json'),
                                     '--out', str(doc)]) == 0
    text = doc.read_text()
    assert 'harness sound' not in text
    # the baselines without learning, from the SSQ run's own metrics
    assert '- **Without learning**, on the same held-out episodes (seed 0' in text
    assert 'Wilson 95 %' in text
    assert 'Reduced budget' in text and 'Not measured' in text
    assert 'Methods ran 2 at a time' in text
    assert 'took 62 min (NOT met)' in text  # the whole command's time, against the hour
    # A run_all record of another command is not quoted as this table's time.
    run_all.write_text(json.dumps({'command': 'bench/run_all.sh --steps 5', 'wall_time_s': 60}))
    assert make_benchmarks_doc.main(['--peers', str(out), '--run-all', str(run_all),
                                     '--out', str(doc)]) == 0
    assert 'the whole command was not timed' in doc.read_text()
    harness = tmp_path / 'harness.json'
    harness.write_text(json.dumps({
        'env': 'Reacher-v5', 'published': {'mean_return': -5.08, 'sd': 2.14, 'source': 'card'},
        'runs': [{'seed': 0, 'steps': 30000, 'episodes': 50, 'mean_return': -4.5,
                  'sd_return': 1.5, 'random_mean_return': -43.0, 'wall_time_train_s': 300}]}))
    assert make_benchmarks_doc.main(['--peers', str(out), '--harness', str(harness),
                                     '--out', str(doc)]) == 0
    assert '| 0 | 30000 | -4.50 +- 1.50 (50 episodes) | -43.00 | -5.08 +- 2.14 | 300 |' \
        in doc.read_text()
    dqn_harness = tmp_path / 'harness_dqn.json'
    dqn_harness.write_text(json.dumps({
        'env': 'CartPole-v1',
        'published': {'mean_return': 500.0, 'sd': 0.0, 'steps': 50000, 'source': 'zoo'},
        'runs': [{'seed': 1, 'configuration': 'suite', 'steps': 50000, 'episodes': 50,
                  'mean_return': 480.25, 'sd_return': 12.0, 'random_mean_return': 22.1,
                  'wall_time_train_s': 200}]}))
    assert make_benchmarks_doc.main(['--peers', str(out), '--harness', str(harness),
                                     '--dqn-harness', str(dqn_harness),
                                     '--out', str(doc)]) == 0
    assert ('| 1 | suite | 50000 | 480.2 +- 12.0 (50 episodes) | 22.1 | 500 +- 0 (50000 steps) '
            '| 200 |') in doc.read_text()
    assert 'Median return over seeds: suite 480.2 (1 seeds).' in doc.read_text()
    assert '| SSQ (discrete, ssq_ros) | discrete | 0 / 100 steps |' in text
    assert (doc.parent / 'benchmarks_curves.png').stat().st_size > 1000
    # The tiny config's task differs from train_sim.yaml's: the page says its table is stale.
    assert '**Stale.**' in text and 'sim.task.max_steps' in text
    current = dict(result, task=to_dict(ssq_config('discrete', 0, 100).sim))
    assert make_benchmarks_doc.stale_task_keys(current) == []
    assert make_benchmarks_doc.stale_task_keys(dict(current, task_revision=1)) == [
        f'task revision 1 -> {TASK_REVISION}']
    assert make_benchmarks_doc.stale_task_keys({}) == ['task not recorded']
    # a field added since with its neutral default is the same task; another value is not
    older = json.loads(json.dumps(current))
    del older['task']['behavior']['persistence']
    assert make_benchmarks_doc.stale_task_keys(older) == []
    older['task']['behavior']['persistence'] = 4.0
    assert make_benchmarks_doc.stale_task_keys(older) == ['sim.behavior.persistence: 4.0 -> 0.0']


def test_plan_adds_the_data_source_and_starts_the_longest_chain_first():
    cfg = bench_peers.parse_args(['--methods', 'sac', 'discrete_cql', 'cql',
                                  '--seeds', '1', '0'])[0]
    Task = bench_peers.Task
    assert bench_peers.plan(cfg) == [
        Task('ssq_continuous', 0), Task('ssq_continuous', 1), Task('cql', 0), Task('cql', 1),
        Task('ssq_discrete', 0), Task('ssq_discrete', 1), Task('sac', 0), Task('sac', 1),
        Task('discrete_cql', 0), Task('discrete_cql', 1)]
    assert Task('cql', 1).source == Task('ssq_continuous', 1)
    assert Task('sac', 1).source is None


def test_status_shows_the_newest_progress_bar_state(tmp_path):
    log = tmp_path / 'task.log'
    log.write_text('[seed 0] sac: SB3 SAC\ntrain:  10%| 10/100 [00:01<00:09]\r'
                   'train:  20%| 20/100 [00:02<00:08]\r')
    assert bench_peers._last_progress(log) == 'train:  20%| 20/100 [00:02<00:08]'
    assert bench_peers._last_progress(tmp_path / 'absent.log') == ''


def test_a_failed_task_stops_the_run_with_its_log(tmp_path):
    cfg = bench_peers.parse_args(['--methods', 'sac'])[0]
    # No such method: the worker process raises, the parent reports its traceback.
    with pytest.raises(bench_peers.TaskFailedError, match='(?s)nope-seed0.*Traceback'):
        bench_peers.run_tasks(cfg, [bench_peers.Task('nope', 0)], tmp_path, progress=False)
    assert 'Traceback' in (tmp_path / 'logs' / 'nope-seed0.log').read_text()
    # A task whose data source is not planned would wait forever: refused at once.
    with pytest.raises(ValueError, match='iql-seed0 needs ssq_continuous-seed0'):
        bench_peers.run_tasks(cfg, [bench_peers.Task('iql', 0)], tmp_path, progress=False)


def test_bad_benchmark_arguments_are_named(capsys, tmp_path):
    assert bench_peers.main(['--methods', 'ppo']) == 2
    assert 'methods' in capsys.readouterr().err
    assert bench_peers.main(['--jobs', '0']) == 2
    assert 'jobs' in capsys.readouterr().err
    assert bench_peers.main(['--ssq-config', str(tmp_path / 'absent.yaml'),
                             '--runs', str(tmp_path)]) == 2
    assert 'ssq-config' in capsys.readouterr().err
    assert bench_peers.main(['--steps', '0']) == 2
