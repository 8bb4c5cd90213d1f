"""bench_tasks_test evaluates finished runs on later held-out episodes: a tiny real run (real
MuJoCo, real torch) is evaluated from its folder, and `first` reaches the episodes it names."""
import json
from pathlib import Path

import numpy as np
import pytest

from bench import bench_costly_paths, bench_tasks_test
from bench.bench_tasks_train import MARKER
from bench.peers.ssq import ssq_config, tiny_ssq_config, train_ssq
from ssq_ros.training.evaluate import evaluate_heldout, greedy_behavior_actor
from ssq_ros.training.problem import build_problem


@pytest.fixture(scope='module')
def tiny_suite(tmp_path_factory):
    base = tiny_ssq_config(tmp_path_factory.mktemp('tiny'), 40)
    runs = tmp_path_factory.mktemp('suite')
    folder = runs / 'easy-n8_long_e30-120-s0'
    train_ssq(ssq_config('discrete', 0, 120, base=base), folder, progress=False)
    (folder / MARKER).write_text(json.dumps({'task': 'easy', 'variant': 'n8_long_e30',
                                             'seed': 0, 'steps': 120}))
    return runs, base


def test_first_reaches_the_later_heldout_episodes(tiny_suite):
    problem = build_problem(ssq_config('discrete', 0, 120, base=tiny_suite[1]))
    act = greedy_behavior_actor(problem)
    three = evaluate_heldout(problem, act, 3, 0.98)
    third = evaluate_heldout(problem, act, 1, 0.98, first=2)
    assert third.returns == [three.returns[2]] and third.outcomes == [three.outcomes[2]]
    with pytest.raises(ValueError, match='first'):
        evaluate_heldout(problem, act, 1, 0.98, first=-1)


def test_each_episode_keeps_its_length_discounted_return_and_costly_steps(tiny_suite):
    problem = build_problem(ssq_config('discrete', 0, 120, base=tiny_suite[1]))
    act = greedy_behavior_actor(problem)
    plain = evaluate_heldout(problem, act, 3, 1.0)
    assert plain.discounted_returns == pytest.approx(plain.returns)  # gamma 1: the same
    assert sum(plain.lengths) == plain.steps and len(plain.lengths) == 3
    assert plain.costly_steps == [0, 0, 0] and plain.reached_costly == 0  # no costly box
    assert plain.reached == [bool(o) for o in plain.outcomes]  # so reaching is success
    halved = evaluate_heldout(problem, act, 3, 0.5)
    assert halved.returns == plain.returns  # the same episodes
    assert halved.discounted_returns != pytest.approx(plain.returns)


def test_the_costly_paths_diagnosis_sets_the_oracle_beside_the_policy(tiny_suite, tmp_path):
    runs, _ = tiny_suite
    out = tmp_path / 'paths.json'
    assert bench_costly_paths.main([str(runs / 'easy-n8_long_e30-120-s0'), '--first', '2',
                                    '--episodes', '2', '--out', str(out)]) == 0
    (run,) = json.loads(out.read_text())['runs']
    assert run['first_episode'] == 2 and len(run['policy']) == len(run['oracle']) == 2
    for row in run['policy'] + run['oracle']:  # no costly box: reaching is success
        assert row['reached'] == row['success'] and row['costly_steps'] == 0
        assert 0 < row['length'] <= 40  # the tiny task's time limit
    assert run['through_costly'] == []  # the easy task has no costly box
    with pytest.raises(SystemExit):  # not a finished run
        bench_costly_paths.main([str(tmp_path), '--out', str(out)])


def test_a_finished_run_is_evaluated_on_the_test_episodes_from_its_folder(tiny_suite, tmp_path):
    runs, _ = tiny_suite
    out = tmp_path / 'test.json'
    assert bench_tasks_test.main(['--variants', 'n8_long_e30', '--steps', '120', '--runs',
                                  str(runs), '--first', '4', '--episodes', '2',
                                  '--out', str(out)]) == 0
    result = json.loads(out.read_text())
    assert result['first_episode'] == 4 and result['episodes'] == 2
    run = result['runs'][0]
    assert set(run['outcomes']) == {'induced', 'policy_sampled', 'policy'}
    assert all(len(o) == 2 for o in run['outcomes'].values())
    assert set(result['baselines']['easy']) == {'behavior_greedy', 'behavior', 'oracle'}
    entry = result['summary'][0]
    assert entry['policy']['episodes'] == 2 and entry['oracle']['episodes'] == 2
    assert entry['policy']['rate'] == np.mean(run['outcomes']['policy'])
    # the easy task has no costly box: no episode reached the goal through one
    assert run['reached_costly'] == {'induced': 0, 'policy_sampled': 0, 'policy': 0}
    assert entry['policy']['reached_costly'] == 0 and 'reached_costly' not in entry['oracle']
    # two halves evaluated apart and combined give the same table
    again = tmp_path / 'again.json'
    assert bench_tasks_test.main(['--combine', str(out), '--out', str(again)]) == 0
    assert json.loads(again.read_text())['summary'] == result['summary']
    # ... and name the code that evaluated the parts, not the code that joined them
    made_elsewhere = tmp_path / 'elsewhere.json'
    made_elsewhere.write_text(json.dumps({**result, 'machine': {
        **result['machine'], 'code_commit': 'f' * 40, 'code_dirty': False}}))
    assert bench_tasks_test.main(['--combine', str(made_elsewhere), '--out', str(again)]) == 0
    machine = json.loads(again.read_text())['machine']
    assert machine['code_commit'] == 'f' * 40
    assert machine['combined_by']['code_commit'] == result['machine']['code_commit']
    assert bench_tasks_test.main(['--combine', str(made_elsewhere), str(out),
                                  '--out', str(again)]) == 0
    machine = json.loads(again.read_text())['machine']
    assert [p['code_commit'] for p in machine['parts']] == \
        ['f' * 40, result['machine']['code_commit']]
    # one executor, the baselines taken from the earlier output on the same episodes
    only = tmp_path / 'only.json'
    assert bench_tasks_test.main(['--variants', 'n8_long_e30', '--steps', '120', '--runs',
                                  str(runs), '--first', '4', '--episodes', '2',
                                  '--executors', 'policy', '--baselines-from', str(out),
                                  '--out', str(only)]) == 0
    result_only = json.loads(only.read_text())
    assert result_only['runs'][0]['outcomes'] == {'policy': run['outcomes']['policy']}
    assert result_only['baselines'] == result['baselines']
    with pytest.raises(SystemExit):  # baselines of other episodes are refused
        bench_tasks_test.main(['--variants', 'n8_long_e30', '--steps', '120', '--runs',
                               str(runs), '--first', '5', '--episodes', '2',
                               '--baselines-from', str(out), '--out', str(only)])
    with pytest.raises(SystemExit):  # nothing of this variant there
        bench_tasks_test.main(['--variants', 'n8_long_a03_e30', '--steps', '120', '--runs',
                               str(runs), '--out', str(out)])
    # a run reached through a link (one run evaluated alone) is named by where it is
    linked = tmp_path / 'one'
    linked.mkdir()
    (linked / 'easy-n8_long_e30-120-s0').symlink_to(runs / 'easy-n8_long_e30-120-s0')
    assert bench_tasks_test.main(['--variants', 'n8_long_e30', '--steps', '120', '--runs',
                                  str(linked), '--first', '4', '--episodes', '1',
                                  '--executors', 'policy', '--out', str(only)]) == 0
    (alone,) = json.loads(only.read_text())['runs']
    assert Path(alone['run_folder']).resolve() == (runs / 'easy-n8_long_e30-120-s0').resolve()
