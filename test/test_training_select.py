"""ssq-select on a real tiny ssq-train run (MuJoCo arm, torch): every export kept, the choice
among them scored on held-out episodes, and bad input refused."""
import dataclasses
import json
import shutil

import numpy as np
import pytest
from test_training_run import tiny_config, write_config

from bench.bench_tasks_test import evaluate_run
from ssq_ros.cli.select import main as select_main
from ssq_ros.cli.train import main as train_main
from ssq_ros.config import ConfigError
from ssq_ros.deploy.export import average_policies, load_exported_policy
from ssq_ros.training.config import load_train_config
from ssq_ros.training.run import KEPT_POLICIES, kept_policies
from ssq_ros.training.select import (
    AVERAGE_RECORD,
    AVERAGED,
    RECORD,
    SELECTED,
    Candidate,
    average_candidates,
    candidates,
    select_policy,
)
from ssq_ros.training.trainer import Trainer


@pytest.fixture(scope='module')
def kept_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp('keep')
    data = tiny_config('discrete', keep_policies=True)
    data['learner']['extraction']['discrete_policy'] = 'induced'  # as the costly task deploys
    config = load_train_config(write_config(folder, data))
    Trainer(config, folder / 'run', progress=False).run()
    return folder / 'run'


def test_every_export_is_kept_by_the_step_it_was_made_at(kept_run):
    records = [json.loads(line) for line in (kept_run / 'log.jsonl').read_text().splitlines()]
    exported = [r['step'] for r in records if r['type'] == 'extract']
    assert exported == [80, 160, 240]
    kept = kept_policies(kept_run)
    assert [step for step, _ in kept] == exported
    # the last kept export is the run's policy.pt, byte for byte
    assert kept[-1][1].read_bytes() == (kept_run / 'policy.pt').read_bytes()
    assert len({path.read_bytes() for _, path in kept}) == 3


def test_ssq_train_names_the_kept_exports_and_the_next_step(kept_run, capsys):
    # the finished run again: its metrics are returned, the summary printed with the hint
    assert train_main(['--config', str(kept_run.parent / 'train.yaml'), '--out', str(kept_run),
                       '--no-progress']) == 0
    assert f'`ssq-select {kept_run} --average`' in capsys.readouterr().out


def test_candidates_start_at_the_share_of_the_steps(kept_run):
    assert [s for s, _ in candidates(kept_run, 0.5)] == [160, 240]
    assert [s for s, _ in candidates(kept_run, 0.0)] == [80, 160, 240]
    with pytest.raises(ValueError, match='from_share'):
        candidates(kept_run, 1.5)


def test_the_best_scored_export_is_selected_and_scored_as_the_benchmark_does(kept_run):
    reported = []
    record = select_policy(kept_run, from_share=0.0, first=3, episodes=2,
                           report=reported.append)
    scored = [Candidate(**c) for c in record['candidates']]
    assert [c.step for c in scored] == [80, 160, 240] and scored == reported
    assert all(c.episodes == 2 for c in scored)
    best = Candidate(**record['selected'])
    assert best == max(scored, key=Candidate.key)
    assert (kept_run / SELECTED).read_bytes() == \
        (kept_run / KEPT_POLICIES / best.file).read_bytes()
    assert json.loads((kept_run / RECORD).read_text()) == record
    # bench_tasks_test --policy policy_selected.pt runs the same executor on the same episodes
    outcomes, _ = evaluate_run(kept_run, 2, 3, ('policy_sampled',), SELECTED)
    assert sum(outcomes['policy_sampled']) == best.successes


def test_ties_go_to_the_higher_return_then_the_later_export():
    a, b, c = Candidate(10, 'a', 5, 9, -3.0), Candidate(20, 'b', 5, 9, -2.0), \
        Candidate(30, 'c', 5, 9, -2.0)
    assert max([a, b, c], key=Candidate.key) is c
    assert max([a, Candidate(40, 'd', 4, 9, 0.0)], key=Candidate.key) is a


def test_bad_runs_and_files_are_refused_with_the_reason(kept_run, tmp_path, capsys):
    assert select_main([str(tmp_path / 'none')]) == 2
    assert 'not readable' in capsys.readouterr().err
    # a run made without keep_policies
    bare = tmp_path / 'bare'
    bare.mkdir()
    shutil.copy(kept_run / 'config.yaml', bare / 'config.yaml')
    assert select_main([str(bare)]) == 2
    assert 'keep_policies' in capsys.readouterr().err
    # a corrupt kept export
    broken = tmp_path / 'broken'
    shutil.copytree(kept_run, broken)
    (broken / KEPT_POLICIES / 'policy-0000240.pt').write_bytes(b'not a policy')
    (broken / SELECTED).unlink()
    assert select_main([str(broken), '--from', '0.9', '--episodes', '1']) == 2
    assert 'policy-0000240.pt' in capsys.readouterr().err
    assert not (broken / SELECTED).exists()
    assert select_main([str(kept_run), '--episodes', '0']) == 2
    assert 'episodes' in capsys.readouterr().err


def test_the_average_is_the_normalised_geometric_mean_of_the_exports(kept_run):
    policies = [load_exported_policy(path) for _, path in kept_policies(kept_run)]
    assert {p.kind for p in policies} == {'induced'}
    averaged = load_exported_policy(average_policies(policies))
    assert averaged.kind == 'induced' and averaged.policy_version == policies[-1].policy_version
    rng = np.random.default_rng(0)
    n = averaged.spaces.action_size
    for _ in range(20):
        obs = rng.normal(size=averaged.spaces.obs_dim)
        mu = rng.random(n) * (rng.random(n) < 0.7)
        mu[rng.integers(n)] = 0.5  # at least one action allowed
        parts = np.array([p.probabilities(obs, mu) for p in policies])
        expected = np.zeros(n)
        allowed = mu > 0
        expected[allowed] = np.exp(np.log(parts[:, allowed]).mean(axis=0))
        expected /= expected.sum()
        got = averaged.probabilities(obs, mu)
        assert np.all(got[~allowed] == 0)
        assert got == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match='no policy'):
        average_policies([])
    with pytest.raises(ValueError, match='differ'):
        average_policies([policies[0], dataclasses.replace(policies[1], alpha=0.5)])


def test_the_average_of_the_candidates_is_written_and_scored_as_the_benchmark_does(kept_run,
                                                                                  capsys):
    assert select_main([str(kept_run), '--average', '--from', '0.9', '--episodes', '1']) == 0
    assert 'the geometric mean of 1 exports: ' in capsys.readouterr().out
    assert json.loads((kept_run / AVERAGE_RECORD).read_text())['averaged'] == \
        ['policy-0000240.pt']
    record = average_candidates(kept_run, from_share=0.5, first=3, episodes=2)
    assert record['averaged'] == ['policy-0000160.pt', 'policy-0000240.pt']
    assert json.loads((kept_run / AVERAGE_RECORD).read_text()) == record
    outcomes, _ = evaluate_run(kept_run, 2, 3, ('policy_sampled',), AVERAGED)
    assert sum(outcomes['policy_sampled']) == record['score']['successes']
    assert load_exported_policy(kept_run / AVERAGED).policy_version == \
        load_exported_policy(kept_run / 'policy.pt').policy_version


def test_ssq_train_deploys_the_average_of_the_last_exports_when_asked(tmp_path, capsys):
    """schedule.average_exports_from: policy.pt at the end is the geometric mean of the exports
    made from that share of the steps on (kept on disk without keep_policies), and the final
    evaluation is the average's."""
    data = tiny_config('discrete', average_exports_from=0.5)
    data['learner']['extraction']['discrete_policy'] = 'induced'
    config = load_train_config(write_config(tmp_path, data))
    metrics = Trainer(config, tmp_path / 'run', progress=True).run()
    run = tmp_path / 'run'
    kept = kept_policies(run)
    assert [step for step, _ in kept] == [80, 160, 240]
    records = [json.loads(line) for line in (run / 'log.jsonl').read_text().splitlines()]
    assert [r['exports'] for r in records if r['type'] == 'average'] == \
        [['policy-0000160.pt', 'policy-0000240.pt']]
    assert 'the geometric mean of the 2 exports of steps 160-240' in capsys.readouterr().err
    deployed = load_exported_policy(run / 'policy.pt')
    expected = load_exported_policy(average_policies(
        [load_exported_policy(path) for _, path in kept[1:]]))
    last = load_exported_policy(kept[-1][1])
    rng = np.random.default_rng(0)
    n = deployed.spaces.action_size
    gaps = []
    for _ in range(20):
        obs, mu = rng.normal(size=deployed.spaces.obs_dim), np.full(n, 1 / n)
        got = deployed.probabilities(obs, mu)
        assert got == pytest.approx(expected.probabilities(obs, mu), abs=1e-6)
        gaps.append(np.abs(got - last.probabilities(obs, mu)).max())
    assert max(gaps) > 1e-3  # the average is not the last export
    # the final evaluation ran the deployed file: the benchmark's evaluation of policy.pt on
    # the same held-out episodes agrees
    outcomes, _ = evaluate_run(run, 2, 0, ('policy',), 'policy.pt')
    assert np.mean(outcomes['policy']) == metrics['success_rate_policy']


def test_average_exports_from_needs_discrete_actions(tmp_path):
    data = tiny_config('continuous', average_exports_from=0.5)
    with pytest.raises(ConfigError, match='average_exports_from'):
        load_train_config(write_config(tmp_path, data))
