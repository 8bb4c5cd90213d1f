"""bench_tasks_peers: the pieces its peers stand on (longer training episodes, one mu decision
per state for masking and shielding, behaviour cloning), its record cache, and the table that
sets SSQ's test-split outcomes beside the peers'. Real MuJoCo, real torch; the SB3 DQN itself
needs the bench extra and is tested in bench/tests/."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from bench import bench_tasks_peers, make_benchmarks_doc
from bench.peers.common import LongerEpisodes, SupportShield, behavior_transitions
from bench.peers.ssq import ssq_config, tiny_ssq_config, train_ssq
from bench.stats import iqm
from ssq_ros.training.problem import build_problem


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """A tiny finished SSQ run in the layout bench_tasks_train gives the suite's runs."""
    base = tiny_ssq_config(tmp_path_factory.mktemp('tiny'), 40)
    suite = tmp_path_factory.mktemp('suite')
    train_ssq(ssq_config('discrete', 0, 120, base=base), suite / 'wall-task-120-s0',
              progress=False)
    return base, suite


@pytest.fixture()
def clean_code(monkeypatch):
    """A fixed, clean commit: the cache's rule does not depend on this checkout's state."""
    monkeypatch.setattr(bench_tasks_peers, 'code_at_start',
                        lambda: {'code_commit': 'a' * 40, 'code_dirty': False})


def test_longer_episodes_run_past_the_task_limit_to_their_own(tiny):
    problem = build_problem(ssq_config('discrete', 0, 120, base=tiny[0]))
    env = LongerEpisodes(problem.env, 55)
    env.reset(seed=1)
    hold = problem.setup.cartesian.names.index('hold')
    ended_at = None
    for step in range(1, 80):
        _, _, terminated, truncated, _ = env.step(hold)
        assert not terminated  # holding still never reaches the goal here
        if truncated:
            ended_at = step
            break
    assert ended_at == 55  # the task's own limit (40) was passed over
    with pytest.raises(ValueError, match='steps'):
        LongerEpisodes(problem.env, 0)


def test_the_shield_draws_mu_once_per_state(tiny):
    problem = build_problem(ssq_config('discrete', 0, 120, base=tiny[0]))
    shield = SupportShield(problem, seed=0)
    shield.reset(seed=3)
    first = shield.decision()
    assert shield.decision() is first  # a masking learner and the shield see one support
    allowed = int(np.flatnonzero(first.probs > 0)[0])
    _, _, _, _, info = shield.step(allowed)
    assert not info['shield_replaced'] and info['executed_action'] == allowed
    assert shield.decision() is not first  # a new state, a new draw
    shield.reset(seed=4)
    assert shield._decision is None


def test_mus_data_follows_a_runs_training_episodes_past_the_task_limit(tiny):
    """IQL's data: mu alone on the training episodes of run `seed`, each run to 55 steps past
    the tiny task's 40, every action inside the continuous action bounds, repeatable by seed."""
    from ssq_ros.task.episodes import training_episode_seed

    problem = build_problem(ssq_config('continuous', 0, 120, base=tiny[0]))
    data, unsafe = behavior_transitions(problem, 3, 200, 55)
    assert unsafe == 0 and {k: len(v) for k, v in data.items()} == dict.fromkeys(data, 200)
    actions = problem.env.actions
    assert data['action'].shape == (200, actions.low.size)
    assert np.all(data['action'] >= actions.low - 1e-6)
    assert np.all(data['action'] <= actions.high + 1e-6)
    # an episode ends where the next row does not continue it: on arrival or at 55 steps
    starts = np.r_[0, np.flatnonzero(np.any(data['next_obs'][:-1] != data['obs'][1:], axis=1))
                   + 1]
    lengths = np.diff(np.r_[starts, 200])
    ended = data['done'][starts[1:] - 1] > 0
    assert np.all(ended | (lengths[:-1] == 55)) and lengths.max() <= 55
    for episode, start in enumerate(starts[:2]):
        obs, _ = problem.env.reset(seed=training_episode_seed(3, episode))
        np.testing.assert_array_equal(data['obs'][start], obs.astype(np.float32))
    again, _ = behavior_transitions(problem, 3, 200, 55)
    other, _ = behavior_transitions(problem, 4, 200, 55)
    np.testing.assert_array_equal(again['action'], data['action'])
    assert not np.array_equal(other['obs'][0], data['obs'][0])


def test_behavior_cloning_recovers_a_labelling_on_unscaled_observations():
    rng = np.random.default_rng(0)
    observations = rng.normal(size=(2000, 6)) * [1, 10, 100, 0.1, 1, 1] + [0, 50, -300, 0, 0, 0]
    weights = rng.normal(size=(6, 4))
    labels = np.argmax(((observations - observations.mean(0)) / observations.std(0)) @ weights,
                       axis=1)
    model, fit = bench_tasks_peers.fit_behavior_cloning(observations, labels, 4, [64, 64], 128,
                                                        1e-3, 1500, seed=0)
    assert fit['accuracy_on_data'] > 0.95
    assert model(torch.zeros(1, 6)).shape == (1, 4)


def test_behavior_cloning_of_an_ssq_runs_data_is_evaluated_behind_the_shield_and_cached(
        tiny, tmp_path, clean_code, monkeypatch):
    runs = tmp_path / 'peers'

    def clone(seed=0, updates=50, split=(2, 3)):
        return bench_tasks_peers.run_offline('bc', 'wall', seed, runs=runs, ssq_runs=tiny[1],
                                             steps=120, split=split, updates=updates)

    record = clone()
    assert record['method'] == 'bc' and record['settings']['split'] == [2, 3]
    assert record['training']['transitions'] == 120
    assert record['training']['unsafe_states_train'] == 0
    assert len(record['eval_shielded']['outcomes']) == 3
    assert record['eval_shielded']['unsafe_states'] == 0
    saved = runs / 'test' / 'wall-bc-120-s0.json'
    assert json.loads(saved.read_text()) == record

    def no_fit(*args, **kwargs):
        raise AssertionError('a cached record was trained again')

    monkeypatch.setattr(bench_tasks_peers, 'fit_behavior_cloning', no_fit)
    assert clone() == record
    # other settings, or another commit, are never reused silently
    with pytest.raises(AssertionError, match='trained again'):
        clone(updates=60)
    monkeypatch.setattr(bench_tasks_peers, 'code_at_start',
                        lambda: {'code_commit': 'b' * 40, 'code_dirty': False})
    with pytest.raises(AssertionError, match='trained again'):
        clone()
    with pytest.raises(FileNotFoundError, match='no finished SSQ run'):
        clone(seed=1)
    with pytest.raises(ValueError, match='unknown offline method'):
        bench_tasks_peers.run_offline('td3_bc', 'wall', 0, runs=runs, ssq_runs=tiny[1],
                                      steps=120)


def test_the_table_sets_ssq_beside_the_peers_on_the_same_split(tmp_path):
    first, count = bench_tasks_peers.TEST
    outcomes = {'wall': [1] * 90 + [0] * 10, 'ushape': [1] * 95 + [0] * 5,
                'window': [1] * 80 + [0] * 20}
    ssq_runs = [{'task': t, 'variant': 'task', 'seed': s, 'steps': 10_000,
                 'outcomes': {'policy': o}} for t, o in outcomes.items() for s in range(2)]
    # a task nobody was tuned on: reported on its own, out of the IQM across tasks
    ssq_runs.append({'task': 'costly', 'variant': 'task', 'seed': 0, 'steps': 10_000,
                     'outcomes': {'policy': [0] * 100}})
    # SSQ in the continuous version of the tasks: a row of its own, the SAC peer's reference
    ssq_runs += [{'task': t, 'variant': 'task_cont', 'seed': s, 'steps': 10_000,
                  'outcomes': {'policy': [1] * 20 + [0] * 80}} for t in outcomes for s in range(2)]
    # an SSQ variant run on the untuned task alone, at its own budget: per task, no IQM
    ssq_runs += [{'task': 'costly', 'variant': 'task_gp0_ic1_a01_her4_nb1_u05', 'seed': s,
                  'steps': 100_000, 'outcomes': {'policy': [1] * 40 + [0] * 60}}
                 for s in range(2)]
    # a row that deploys the sampled induced policy (chosen on validation episodes): its
    # outcomes are that executor's, not the most likely action's
    ssq_runs += [{'task': 'costly', 'variant': 'task_gp0_ic1_a01_her4_nb1_u05_oc_p4', 'seed': s,
                  'steps': 150_000, 'outcomes': {'policy': [1] * 80 + [0] * 20,
                                                 'policy_sampled': [1] * 90 + [0] * 10}}
                 for s in range(2)]
    # the same runs deployed as their averaged exports: a row of its own, also sampled
    ssq_runs += [{'task': 'costly', 'variant': 'task_gp0_ic1_a01_her4_nb1_u05_oc_p4_keep',
                  'seed': s, 'steps': 150_000, 'outcomes': {'policy_sampled': [1] * 98 + [0] * 2}}
                 for s in range(2)]
    baselines = {t: {'behavior_greedy': [0] * 100, 'behavior': [0] * 100,
                     'oracle': [1] * 100} for t in outcomes}
    ssq = tmp_path / 'ssq.json'
    ssq.write_text(json.dumps({'first_episode': first, 'episodes': count, 'runs': ssq_runs,
                               'baselines': baselines, 'machine': {'code_commit': 'c'}}))
    peers = tmp_path / 'peers' / 'test'
    peers.mkdir(parents=True)
    for task in outcomes:
        for seed, wins in ((0, 30), (1, 50)):
            (peers / f'{task}-dqn_mu_n8_e140-10000-s{seed}.json').write_text(json.dumps({
                'method': 'dqn_mu_n8_e140', 'task': task, 'seed': seed, 'steps': 10_000,
                'training': {'unsafe_states_train': 0, 'wall_time_train_s': 50.0},
                'eval_shielded': {'outcomes': [1] * wins + [0] * (100 - wins)}}))
        for seed in (0, 1):
            (peers / f'{task}-sac_uniform_n1_e140-10000-s{seed}.json').write_text(json.dumps({
                'method': 'sac_uniform_n1_e140', 'task': task, 'seed': seed, 'steps': 10_000,
                'training': {'unsafe_states_train': 0, 'wall_time_train_s': 90.0},
                'eval_shielded': {'outcomes': [1] * 60 + [0] * 40}}))
        for seed, unsafe in ((0, 40), (1, 7)):  # trained without the shield
            (peers / f'{task}-sac_lagrangian_mu_lr3e-3-10000-s{seed}.json').write_text(
                json.dumps({
                    'method': 'sac_lagrangian_mu_lr3e-3', 'task': task, 'seed': seed,
                    'steps': 10_000,
                    'training': {'unsafe_states_train': unsafe, 'wall_time_train_s': 80.0},
                    'eval_shielded': {'outcomes': [1] * 70 + [0] * 30},
                    'eval_unshielded': {'outcomes': [1] * 75 + [0] * 25, 'episodes': 100,
                                        'unsafe_states': 3 * seed}}))
        (peers / f'{task}-mu_continuous-0-s0.json').write_text(json.dumps({
            'method': 'mu_continuous', 'task': task, 'seed': 0, 'steps': 0,
            'training': {'unsafe_states_train': 0, 'wall_time_train_s': 0.0},
            'eval_shielded': {'outcomes': [1] * 7 + [0] * 93}}))
    # the peer at a second budget, where SSQ has no runs: no comparison is made there
    (peers / 'wall-dqn_mu_n8_e140-5000-s0.json').write_text(json.dumps({
        'method': 'dqn_mu_n8_e140', 'task': 'wall', 'seed': 0, 'steps': 5000,
        'training': {'unsafe_states_train': 0, 'wall_time_train_s': 20.0},
        'eval_shielded': {'outcomes': [1] * 100}}))
    train = tmp_path / 'ssq_train.json'
    train.write_text(json.dumps({'runs': [
        {'task': t, 'variant': 'task', 'seed': s, 'steps': 10_000, 'unsafe_states_train': 0,
         'wall_time_s': 200.0 + s} for t in outcomes for s in range(2)] + [
        # a run that timed its evaluations apart: its training time leaves them out
        {'task': t, 'variant': 'task_cont', 'seed': s, 'steps': 10_000,
         'unsafe_states_train': 0, 'wall_time_s': 300.0, 'wall_time_eval_s': 100.0}
        for t in outcomes for s in range(2)] + [
        {'task': 'costly', 'variant': 'task_gp0_ic1_a01_her4_nb1_u05', 'seed': s,
         'steps': 100_000, 'unsafe_states_train': 0, 'wall_time_s': 950.0 - 100 * s,
         'wall_time_eval_s': 50.0} for s in range(2)]}))
    (tmp_path / 'peers' / 'tune').mkdir()
    for task in outcomes:  # one grid point tuned
        (tmp_path / 'peers' / 'tune' / f'{task}-sac_lagrangian_mu_lr3e-5-10000-s0.json'
         ).write_text(json.dumps({'method': 'sac_lagrangian_mu_lr3e-5', 'task': task, 'seed': 0,
                                  'training': {'unsafe_states_train': 5},
                                  'eval_shielded': {'outcomes': [1] * 27 + [0] * 3}}))
    result = bench_tasks_peers.table([ssq], runs=tmp_path / 'peers', ssq_train_paths=[train])
    rows = {(r['method'], r['steps'], r['task']): r for r in result['per_task']}
    assert rows[('ssq', 10_000, 'window')]['successes'] == 160
    assert rows[('ssq', 10_000, 'costly')]['rate'] == 0.0
    assert rows[('ssq_goal_free_explore_p4', 150_000, 'costly')]['successes'] == 180
    assert rows[('dqn_mu_n8_e140', 10_000, 'wall')]['rate'] == pytest.approx(0.4)
    assert rows[('dqn_mu_n8_e140', 5000, 'wall')]['rate'] == 1.0
    assert rows[('oracle', 0, 'ushape')]['rate'] == 1.0
    assert rows[('behavior_continuous', 0, 'window')]['rate'] == pytest.approx(0.07)
    assert ('mu_continuous', 0, 'window') not in rows  # a baseline, not a learner
    assert rows[('ssq_continuous', 10_000, 'wall')]['successes'] == 40
    across = {(a['method'], a['steps']): a for a in result['across_tasks']}
    assert across[('dqn_mu_n8_e140', 5000)]['tasks'] == ['wall']
    assert 'probability_ssq_beats' not in across[('dqn_mu_n8_e140', 5000)]  # SSQ: no 5000
    assert across[('ssq', 10_000)]['tasks'] == ['wall', 'ushape', 'window']
    assert across[('dqn_mu_n8_e140', 10_000)]['iqm'] == pytest.approx(iqm([.3, .5] * 3))
    assert across[('dqn_mu_n8_e140', 10_000)]['probability_ssq_beats'] == 1.0
    assert across[('ssq', 10_000)]['training_runs_known'] == 6
    assert across[('ssq', 10_000)]['wall_time_train_s'] == pytest.approx(200.5)
    assert across[('dqn_mu_n8_e140', 10_000)]['unsafe_states_train'] == 0
    assert across[('dqn_mu_n8_e140', 10_000)]['runs'] == 6
    assert across[('ssq', 10_000)]['wall_time_includes_eval']
    assert across[('ssq_continuous', 10_000)]['wall_time_train_s'] == pytest.approx(200.0)
    assert not across[('ssq_continuous', 10_000)]['wall_time_includes_eval']
    sac = across[('sac_uniform_n1_e140', 10_000)]  # beats SSQ continuous, not SSQ
    assert sac['probability_ssq_continuous_beats'] == 0.0
    assert sac['probability_ssq_beats'] == 1.0
    assert 'probability_ssq_continuous_beats' not in across[('ssq_continuous', 10_000)]
    to_success = {(r['method'], r['task']): r for r in result['to_success']}
    # the DQN reached 90 % on the wall at 5000 steps (100 %), not at 10 000 (40 %)
    assert to_success[('dqn_mu_n8_e140', 'wall')]['steps'] == 5000
    assert to_success[('dqn_mu_n8_e140', 'wall')]['budgets'] == [5000, 10_000]
    assert to_success[('dqn_mu_n8_e140', 'wall')]['wall_time_train_s'] == 20.0
    assert to_success[('ssq', 'wall')]['steps'] == 10_000  # 90 %: reached
    assert to_success[('ssq', 'window')]['steps'] is None  # 80 %: not
    assert to_success[('ssq', 'window')]['wall_time_train_s'] is None
    assert ('oracle', 'wall') not in to_success  # no budget: not a learner
    lagrangian = rows[('sac_lagrangian_mu_lr3e-3', 10_000, 'ushape')]
    assert lagrangian['successes'] == 140  # behind the shield
    assert lagrangian['unshielded'] == {'successes': 150, 'episodes': 200,
                                        'successes_per_seed': [75, 75],
                                        'unsafe_states_per_seed': [0, 3]}
    assert lagrangian['unsafe_states_train_per_seed'] == [40, 7]
    assert 'unshielded' not in rows[('sac_uniform_n1_e140', 10_000, 'ushape')]
    assert across[('sac_lagrangian_mu_lr3e-3', 10_000)]['unsafe_states_train_per_run'] == \
        [40, 7] * 3
    # the page and its plot (make_benchmarks_doc)
    text = '\n'.join(make_benchmarks_doc.suite_section(result, 'tasks.png'))
    assert "(before 48fa1d2: mu collected every training episode) | 90.0 % " \
        in text
    assert '| - | 0.00 | 7 | 0 in 6 runs | 200 s |' in text  # SSQ's row: costly's run, untimed
    assert '| 1.00 | 0.00 | 6 | 0 in 6 runs | 50 s |' in text  # SSQ beats every DQN run
    assert '| 1.00 | 0.00 | 6 | 0 in 6 runs | 90 s |' in text  # SAC: the continuous SSQ not
    assert 'except in the rows of ssq:' in text
    assert '**100000 environment steps per run.**' in text
    assert ('4 hindsight goals (costly.yaml until f38ea06) | - | - | - | 40.0 % (33-47) | - | 2 '
            '| 0 in 2 runs | 850 s |') in text
    assert '; the induced policy sampled, the last export | - | - | - | 90.0 %' in text
    assert "98.2 % (491 / 500) on episodes 331-430, never used | - | - | - | 98.0 %" in text
    assert not any(a['steps'] == 100_000 for a in result['across_tasks'])
    assert '| sampled mu, continuous actions | 7/100 | 7/100 | 7/100 |' in text
    assert "SAC (SB3) behind mu's support, continuous actions, uniform warm-up" in text
    assert '| greedy mu (goal preference 2) | 0/100 | 0/100 | 0/100 |' in text
    assert ("| SAC-Lagrangian (on SB3), no shield in training, mu's prior (warm-up drawn by "
            'mu), multiplier learning rate 3e-3, cost limit 0 | 10000 | window | 140/200 | '
            '150/200 | [40, 7] | [0, 3] |') in text
    assert 'episodes 131-230' in text and '![success against environment steps' in text
    # every group here has fewer seeds than the protocol's 5: the page names them as probes
    probes = next(line for line in text.splitlines() if line.startswith('Below the protocol'))
    assert ("DQN (SB3) restricted to mu's support, mu-drawn exploration, 8-step targets, "
            '140-step training episodes (5000 steps, wall): 1 seed;') in probes
    assert probes.count('): 2 seeds') == len([r for r in result['per_task']
                                              if r['steps'] and r['seeds'] == 2])
    assert f"torch {result['versions']['torch']}" in text  # what the rows ran on
    # steps to 90 %: DQN's wall at 5 000 (20 s), SSQ's window not within its budgets
    assert '| 5 000 (20 s) | not by 10 000 | not by 10 000 | - | 5 000, 10 000 |' in text
    assert '| 10 000 (200 s) | 10 000 (200 s) | not by 10 000 | not by 10 000 | 10 000 |' in text
    plot = make_benchmarks_doc.plot_suite(result, tmp_path / 'tasks.png')
    assert plot.stat().st_size > 1000
    one_budget = dict(result, per_task=[r for r in result['per_task']
                                        if r['steps'] in (0, 10_000)])
    assert make_benchmarks_doc.plot_suite(one_budget, tmp_path / 'none.png') is None
    # a later sitting, on a machine without the records: the peers' rows come back from the
    # committed table, with every statistic of the first
    first = dict(result, machine={'code_commit': 'a' * 40})
    again = bench_tasks_peers.table([ssq], runs=tmp_path / 'elsewhere',
                                    ssq_train_paths=[train], previous=first)
    assert again['ssq_sources'] == [str(ssq)] and again['ssq_train_sources'] == [str(train)]
    ssq_rows = set(bench_tasks_peers.SSQ_VARIANTS.values())
    learners = {(m, n, t) for m, n, t in rows if n and m not in ssq_rows}
    assert {(m, n, t) for m, n, t, _ in again['carried']} == \
        learners | {('mu_continuous', 0, t) for t in outcomes}  # the measured baseline too
    for row in again['per_task']:
        before = rows[(row['method'], row['steps'], row['task'])]
        for key in ('successes', 'episodes', 'per_seed', 'unsafe_states_train_per_seed',
                    'unshielded'):
            assert row.get(key) == before.get(key), (row['method'], key)
        assert row.get('wall_time_train_s') == pytest.approx(before.get('wall_time_train_s'))
    assert len(again['per_task']) == len(result['per_task'])
    for entry in again['across_tasks']:
        before = across[(entry['method'], entry['steps'])]
        assert entry['iqm'] == before['iqm'] and entry['runs'] == before['runs']
        assert entry.get('probability_ssq_beats') == before.get('probability_ssq_beats')
    assert 'groups of peer runs come, in whole or in part, from the table of an earlier' \
        in '\n'.join(make_benchmarks_doc.suite_section(again, 'tasks.png'))
    assert ('Measured in an earlier sitting (carried over from the table made at commit '
            'aaaaaaa).') in '\n'.join(make_benchmarks_doc.suite_section(again, 'tasks.png'))
    # a grid extended in this sitting: the earlier sitting's points are marked
    extended = bench_tasks_peers.table([ssq], runs=tmp_path / 'peers', ssq_train_paths=[train],
                                       previous=dict(first, grid=[dict(
                                           result['grid'][0], point='mu_lr3e-3', mean=0.5)]))
    text = '\n'.join(make_benchmarks_doc.suite_section(extended, 'tasks.png'))
    assert '**The SAC-Lagrangian grid (2 points).**' in text
    assert ('Points marked * were measured in an earlier sitting (carried over from the table '
            'made at commit aaaaaaa)') in text
    assert '| mu_lr3e-3 * |' in text and '| mu_lr3e-5 | 90.0 % |' in text
    # carried twice, a row keeps the commit of the table that had its records
    twice = bench_tasks_peers.table([ssq], runs=tmp_path / 'elsewhere', ssq_train_paths=[train],
                                    previous=dict(again, machine={'code_commit': 'b' * 40}))
    assert {commit for *_, commit in twice['carried']} == {'a' * 40}
    # records here replace the carried seeds they repeat: every seed here, nothing carried
    assert not bench_tasks_peers.table([ssq], runs=tmp_path / 'peers', ssq_train_paths=[train],
                                       previous=result)['carried']
    # a group gathers its seeds over sittings: seed 1 run here (a new result), seed 0 and the
    # unshielded counts of seed 0 carried from the table that measured them
    later = tmp_path / 'later' / 'test'
    later.mkdir(parents=True)
    (later / 'wall-sac_lagrangian_mu_lr3e-3-10000-s1.json').write_text(json.dumps({
        'method': 'sac_lagrangian_mu_lr3e-3', 'task': 'wall', 'seed': 1, 'steps': 10_000,
        'code_commit': 'd' * 40,
        'training': {'unsafe_states_train': 9, 'wall_time_train_s': 120.0},
        'eval_shielded': {'outcomes': [1] * 100},
        'eval_unshielded': {'outcomes': [1] * 99 + [0], 'episodes': 100, 'unsafe_states': 2}}))
    gathered = bench_tasks_peers.table([ssq], runs=tmp_path / 'later', ssq_train_paths=[train],
                                       previous=first)
    lag = {(r['method'], r['steps'], r['task']): r for r in gathered['per_task']}[
        ('sac_lagrangian_mu_lr3e-3', 10_000, 'wall')]
    assert lag['seed_ids'] == [0, 1] and lag['seed_commits'] == ['a' * 40, 'd' * 40]
    assert lag['successes'] == 170 and lag['per_seed'] == [0.7, 1.0]
    assert lag['unsafe_states_train_per_seed'] == [40, 9]
    assert lag['wall_time_train_s_per_seed'] == [80.0, 120.0]
    assert lag['unshielded'] == {'successes': 174, 'episodes': 200,
                                 'successes_per_seed': [75, 99],
                                 'unsafe_states_per_seed': [0, 2]}
    assert gathered['mixed'] == [('sac_lagrangian_mu_lr3e-3', 10_000, 'wall')]
    assert 'In 1 of them, seeds run in this sitting join the carried ones' in '\n'.join(
        make_benchmarks_doc.suite_section(gathered, 'tasks.png'))
    # ... and the next sitting, with no records, carries both seeds with their own commits
    next_time = bench_tasks_peers.table([ssq], runs=tmp_path / 'elsewhere',
                                        ssq_train_paths=[train],
                                        previous=json.loads(json.dumps(gathered)))
    lag_again = {(r['method'], r['steps'], r['task']): r for r in next_time['per_task']}[
        ('sac_lagrangian_mu_lr3e-3', 10_000, 'wall')]
    for key in ('seed_ids', 'seed_commits', 'per_seed', 'unshielded',
                'unsafe_states_train_per_seed', 'wall_time_train_s_per_seed'):
        assert lag_again[key] == lag[key], key
    assert not next_time['mixed']
    # SSQ's outcomes from another split are refused
    ssq.write_text(json.dumps({'first_episode': 30, 'episodes': count, 'runs': ssq_runs,
                               'baselines': baselines, 'machine': {'code_commit': 'c'}}))
    with pytest.raises(ValueError, match='test split'):
        bench_tasks_peers.table([ssq], runs=tmp_path / 'peers')


def test_a_grid_extended_later_keeps_the_points_an_earlier_sitting_measured(tmp_path):
    tune = tmp_path / 'tune'
    tune.mkdir()
    # mu_lr3e-4 measured again; mu_lr1e-4 ties with mu_lr3e-5 in success, fewer unsafe states
    for point, wins, unsafe in (('mu_lr3e-5', 29, 300), ('mu_lr1e-4', 29, 100),
                                ('mu_lr3e-4', 12, 0)):
        for task in bench_tasks_peers.TUNED:
            (tune / f'{task}-sac_lagrangian_{point}-10000-s0.json').write_text(json.dumps({
                'method': f'sac_lagrangian_{point}', 'task': task, 'seed': 0,
                'training': {'unsafe_states_train': unsafe},
                'eval_shielded': {'outcomes': [1] * wins + [0] * (30 - wins)}}))
    earlier = {'machine': {'code_commit': 'a' * 40}, 'grid': [
        {'method': 'sac_lagrangian', 'point': 'mu_lr3e-4', 'per_task': {}, 'mean': 0.99,
         'complete': True},
        {'method': 'sac_lagrangian', 'point': 'mu_lr3e-3', 'per_task': {}, 'mean': 0.5,
         'complete': True},
        {'method': 'dqn', 'point': 'mu_n8_e140', 'per_task': {}, 'mean': 0.2,
         'complete': True, 'carried_from': 'b' * 40}]}
    rows = bench_tasks_peers.grid_rows(tmp_path, earlier)
    assert [(r['method'], r['point']) for r in rows] == [
        ('dqn', 'mu_n8_e140'), ('sac_lagrangian', 'mu_lr1e-4'), ('sac_lagrangian', 'mu_lr3e-5'),
        ('sac_lagrangian', 'mu_lr3e-3'), ('sac_lagrangian', 'mu_lr3e-4')]
    by_point = {r['point']: r for r in rows}
    assert by_point['mu_lr1e-4']['unsafe_states_train'] == 300  # over the 3 tasks
    assert by_point['mu_lr3e-5']['mean'] == pytest.approx(29 / 30)
    assert 'carried_from' not in by_point['mu_lr3e-5']
    # a point measured here replaces the earlier table's, never mixes with it
    assert by_point['mu_lr3e-4']['mean'] == pytest.approx(12 / 30)
    assert 'carried_from' not in by_point['mu_lr3e-4']
    assert by_point['mu_lr3e-3']['carried_from'] == 'a' * 40
    assert by_point['mu_n8_e140']['carried_from'] == 'b' * 40  # carried twice: the first
    assert bench_tasks_peers.grid_rows(tmp_path / 'none', None) == []


def test_sacs_version_of_a_task_differs_only_in_its_actions():
    """SAC acts in the continuous version of the same task: same safe set, goals, time limit
    and learner settings it shares with SSQ; a point of another method's grid is refused."""
    discrete = bench_tasks_peers.task_config('window')
    continuous = bench_tasks_peers.continuous_task_config('window')
    assert (discrete.action_kind, continuous.action_kind) == ('discrete', 'continuous')
    assert dataclasses.replace(continuous, action_kind='discrete') == discrete
    problem = build_problem(continuous)
    assert not problem.discrete
    assert problem.env.task.config == build_problem(discrete).env.task.config
    for argv in (['tune', '--method', 'sac', '--points', 'mu_n8_e140_x'],
                 ['test', '--method', 'sac', '--point', 'nowhere']):
        with pytest.raises(SystemExit):
            bench_tasks_peers.main(argv)


def test_mu_in_the_continuous_task_is_a_cached_baseline_record(tmp_path, clean_code):
    """The continuous rows' baseline: mu alone, sampled, in the continuous version of the task,
    on the asked episodes, 0 unsafe states; a second call reuses the record."""
    runs = tmp_path / 'peers'
    record = bench_tasks_peers.run_mu_continuous('wall', runs=runs, split=(130, 1))
    assert record['method'] == 'mu_continuous' and record['steps'] == 0
    assert record['settings']['action_kind'] == 'continuous'
    assert len(record['eval_shielded']['outcomes']) == 1
    assert record['eval_shielded']['unsafe_states'] == 0
    assert record['eval_shielded']['steps'] > 0
    path = runs / 'test' / 'wall-mu_continuous-0-s0.json'
    stamp = path.stat().st_mtime_ns
    assert bench_tasks_peers.run_mu_continuous('wall', runs=runs, split=(130, 1)) == record
    assert path.stat().st_mtime_ns == stamp


def test_every_her_grid_point_has_a_label_that_names_its_goals():
    """The page names each HER point's relabelled goals (4 unless the point says '_k8')."""
    for method in ('tqc_her', 'sac_her'):
        for point in bench_tasks_peers.GRIDS[method]:
            label = make_benchmarks_doc.suite_label(f'{method}_{point}')
            goals = bench_tasks_peers.GRIDS[method][point]['n_sampled_goal']
            assert f'{goals} relabelled goals per transition' in label, label
            assert ('no shield in training' in label) == (method == 'tqc_her')
