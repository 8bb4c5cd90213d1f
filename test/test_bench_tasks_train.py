"""bench_tasks_train's table: the unseen-episode split and the across-task summary are computed
from each run's own log (synthetic run folders here; the runs themselves take minutes each)."""
import json

import numpy as np
import pytest

from bench import bench_tasks_train as btt


def write_run(out, task, seed, outcomes, variant='n8_long_e30', steps=10_000):
    folder = out / f'{task}-{variant}-{steps}-s{seed}'
    folder.mkdir(parents=True)
    (folder / btt.MARKER).write_text(json.dumps({'task': task, 'variant': variant,
                                                 'seed': seed, 'steps': steps}))
    metrics = {key: 0.0 for key in btt.METRICS}
    metrics.update({'unsafe_states_train': 0, 'unsafe_states_eval': 0,
                    'success_rate_policy': float(np.mean(outcomes['policy']))})
    (folder / 'metrics.json').write_text(json.dumps(metrics))
    records = [{'type': 'eval', 'final': False, 'outcomes': [0] * 5},  # not the final one
               {'type': 'eval', 'final': True, 'outcomes': outcomes['policy'],
                'behavior': {'outcomes': outcomes['behavior']},
                'induced': {'outcomes': outcomes['induced']},
                **({'policy_sampled': {'outcomes': outcomes['policy_sampled']}}
                   if 'policy_sampled' in outcomes else {})},
               {'type': 'baseline', 'executor': 'greedy mu',
                'outcomes': outcomes['behavior_greedy']},
               {'type': 'baseline', 'executor': 'oracle', 'outcomes': outcomes['oracle']}]
    (folder / 'log.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in records))
    return folder


def outcomes(policy_selection, policy_unseen, greedy_unseen, episodes=30, sampled=True):
    first = btt.SELECTION_EPISODES
    policy = [1] * policy_selection + [0] * (first - policy_selection) \
        + [1] * policy_unseen + [0] * (episodes - first - policy_unseen)
    greedy = [0] * first + [1] * greedy_unseen + [0] * (episodes - first - greedy_unseen)
    result = {'policy': policy, 'induced': [0] * episodes, 'behavior': [0] * episodes,
              'behavior_greedy': greedy, 'oracle': [1] * episodes}
    if sampled:  # runs before the sampled executor was evaluated have no such outcomes
        result['policy_sampled'] = [1] * episodes
    return result


def test_collect_scores_the_unseen_episodes_apart_from_the_selection_ones(tmp_path):
    # policy: all 10 selection episodes reached on every seed, 10 / 15 / 20 of the 20 unseen
    for seed, unseen in enumerate((10, 15, 20)):
        write_run(tmp_path, 'wall', seed, outcomes(10, unseen, 2))
    for seed in range(2):
        write_run(tmp_path, 'ushape', seed, outcomes(0, 20, 0, sampled=seed == 0))
    result = btt.collect(tmp_path)
    wall = next(e for e in result['summary'] if e['task'] == 'wall')['unseen_episodes']
    assert wall['episodes_per_seed'] == 20
    assert wall['policy']['successes'] == 45 and wall['policy']['episodes'] == 60
    assert wall['policy']['per_seed'] == [0.5, 0.75, 1.0]
    assert wall['policy']['selection_rate'] == 1.0
    low, high = wall['policy']['wilson95']
    assert low < 0.75 < high
    assert wall['behavior_greedy']['rate'] == pytest.approx(6 / 60)
    assert wall['oracle']['rate'] == 1.0 and wall['policy_sampled']['rate'] == 1.0
    assert wall['probability_policy_beats_greedy_mu'] == 1.0
    across = result['across_tasks']['n8_long_e30-10000']
    assert across['tasks'] == ['ushape', 'wall']
    assert across['oracle']['iqm'] == 1.0 and across['induced']['iqm'] == 0.0
    ushape = next(e for e in result['summary'] if e['task'] == 'ushape')['unseen_episodes']
    # only one of the U's runs has the sampled executor: no pooled number for it
    assert 'policy_sampled' not in ushape and 'policy_sampled' not in across
    assert 0.5 <= across['policy']['bootstrap95'][0] <= across['policy']['iqm'] <= 1.0
    table = btt.format_summary(result)
    assert 'policy 45/60' in table and 'IQM of unseen-episode success' in table
    png = btt.plot_unseen(result, ['n8_long_e30'], tmp_path / 'unseen.png')
    assert png.stat().st_size > 5000


def test_runs_without_outcomes_or_beyond_the_selection_episodes_get_no_split(tmp_path):
    short = outcomes(5, 0, 0, episodes=btt.SELECTION_EPISODES)
    write_run(tmp_path, 'wall', 0, short)
    folder = write_run(tmp_path, 'window', 0, outcomes(5, 5, 5))
    log = [json.loads(line) for line in (folder / 'log.jsonl').read_text().splitlines()]
    del log[3]['outcomes']  # an older run: the oracle's outcomes were not logged
    (folder / 'log.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in log))
    result = btt.collect(tmp_path)
    assert [e['unseen_episodes'] for e in result['summary']] == [None, None]
    assert result['across_tasks'] == {}
    assert {r['task']: r['outcomes'] is None for r in result['runs']} == {'wall': False,
                                                                          'window': True}


def test_training_curve_is_the_rolling_success_of_training_episodes_and_is_drawn(tmp_path):
    folder = write_run(tmp_path, 'wall', 0, outcomes(5, 10, 2), variant='task_gp0_ic1',
                       steps=30_000)
    episodes = [{'type': 'episode', 'step': 400 * (k + 1), 'success': k >= 12,
                 'collector': 'induced'} for k in range(20)]
    with open(folder / 'log.jsonl', 'a') as log:
        log.write(''.join(json.dumps(e) + '\n' for e in episodes))
    steps, rates = btt.training_curve(folder, window=10)
    assert steps.tolist() == [400 * (k + 1) for k in range(20)]
    assert rates[11] == 0.0 and rates[12] == pytest.approx(1 / 10)
    assert rates[-1] == pytest.approx(8 / 10) and rates[0] == 0.0
    result = btt.collect(tmp_path)
    path = btt.plot_training(result, 'task_gp0_ic1', 30_000, tmp_path / 'curve.png')
    assert path.stat().st_size > 10_000
    with pytest.raises(ValueError, match='no finished runs'):
        btt.plot_training(result, 'task', 30_000, tmp_path / 'none.png')


@pytest.mark.parametrize('task', ['wall', 'ushape', 'window'])
def test_the_shipped_task_is_goal_free_and_the_sweep_variants_keep_the_goal_seeking_learner(
        tmp_path, task):
    # The task yamls moved to goal-free mu; the stored goal-seeking runs (task_ic05, the sweep
    # point reported beside it) must still resolve to the learner they were made with.
    def learner(variant):
        config = btt.load_train_config(btt.variant_config(task, variant, tmp_path))
        return (config.sim.behavior.goal_preference, config.learner.critic.alpha,
                config.schedule.induced_collection, config.schedule.average_exports_from)

    # The yamls deploy the mean of the last exports; the goal-free runs recorded before that
    # (task_gp0_ic1_a01) deployed the last one, and the _avg variant is the yaml.
    assert learner('task') == learner('task_gp0_ic1_a01_avg') == (0.0, 0.1, 1.0, 0.66)
    assert learner('task_gp0_ic1_a01') == (0.0, 0.1, 1.0, 1.0)
    assert learner('task_ic05') == (2.0, 0.3, 0.5, 1.0)
    assert learner('task_gp0_ic1') == (0.0, 0.3, 1.0, 1.0)
    assert learner('task_a01') == (2.0, 0.1, 0.0, 1.0)


def test_the_costly_task_explores_and_its_goal_seeking_variants_do_not(tmp_path):
    # costly.yaml moved to goal-free mu with directed exploration; its stored goal-seeking
    # variants must resolve to the learner they ran (hindsight goals would even be refused)
    def learner(variant):
        config = btt.load_train_config(btt.variant_config('costly', variant, tmp_path))
        schedule = config.schedule
        return (config.sim.behavior.goal_preference, config.learner.critic.alpha,
                schedule.induced_collection, schedule.hindsight_goals, schedule.novelty_bonus,
                schedule.novelty_until, config.learner.replay_capacity)

    assert learner('task') == learner('task_gp0_ic1_a01_her4_nb1_u05') == \
        (0.0, 0.1, 1.0, 4, 1.0, 0.5, 150_000)
    assert learner('task_gp0_ic1_a01_her4_nb1_u07') == (0.0, 0.1, 1.0, 4, 1.0, 0.7, 150_000)
    assert learner('task_ic1') == (2.0, 0.3, 1.0, 0, 0.0, 1.0, 100_000)
    assert learner('task_gp0_ic1_a01') == (0.0, 0.1, 1.0, 0, 0.0, 1.0, 100_000)
    assert learner('task_gp0_ic1_a01_nb1_u07') == (0.0, 0.1, 1.0, 0, 1.0, 0.7, 100_000)


def test_the_costly_exploration_levers_change_only_their_own_setting(tmp_path):
    def settings(variant):
        config = btt.load_train_config(btt.variant_config('costly', variant, tmp_path))
        return (config.sim.task.observe_costly, config.schedule.novelty_cell,
                config.schedule.novelty_bonus, config.sim.behavior.persistence,
                config.learner.critic.alpha, config.schedule.hindsight_goals,
                config.schedule.novelty_until, config.schedule.keep_policies,
                config.schedule.average_exports_from)

    base = (True, 0.05, 1.0, 0.0, 0.1, 4, 0.5, False, 1.0)
    # costly.yaml adopted the tray observed, mu's persistence and deploying the mean of the
    # exports from 2/3 of the steps on (oc_p4_keep kept them for ssq-select --average); the
    # variants before keep the settings they ran with
    assert settings('task_gp0_ic1_a01_her4_nb1_u05') == (False, *base[1:])
    assert settings('task') == (*base[:3], 4.0, *base[4:7], False, 0.66)
    assert settings('task_gp0_ic1_a01_her4_nb1_u05_oc_p4_keep') == \
        (*base[:3], 4.0, *base[4:7], True, 1.0)
    assert settings('task_gp0_ic1_a01_her4_nb1_u05_oc') == base
    assert settings('task_gp0_ic1_a01_her4_nb1_u05_oc_cell10') == (True, 0.1, *base[2:])
    assert settings('task_gp0_ic1_a01_her4_nb3_u05_oc') == (True, 0.05, 3.0, *base[3:])
    assert settings('task_gp0_ic1_a01_her4_nb1_u05_oc_p4') == (*base[:3], 4.0, *base[4:])
    assert settings('task_gp0_ic1_a01_her4_nb1_u03_oc_p4') == (*base[:3], 4.0, 0.1, 4, 0.3,
                                                               False, 1.0)
