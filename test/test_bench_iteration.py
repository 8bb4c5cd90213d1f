"""bench_iteration's summary: per-method medians over rounds, and each pair's ratio taken
within a round (the pairs ran back to back) before the median."""
import pytest

from bench import bench_iteration


def test_ratios_are_taken_within_a_round():
    def round_of(ssq_d, dqn, ssq_c, sac):
        return {m: {'seconds_per_env_step': v} for m, v in
                zip(bench_iteration.METHODS, (ssq_d, dqn, ssq_c, sac), strict=True)}
    # the second round ran on a machine twice as busy: the ratios stay
    rounds = [round_of(0.004, 0.002, 0.010, 0.005), round_of(0.008, 0.004, 0.030, 0.010)]
    summary = bench_iteration.summarise(rounds)
    assert summary['seconds_per_env_step']['dqn'] == pytest.approx(0.003)
    assert summary['ratios']['ssq_discrete/dqn']['median'] == pytest.approx(2.0)
    assert summary['ratios']['ssq_discrete/dqn']['range'] == pytest.approx([2.0, 2.0])
    assert summary['ratios']['ssq_continuous/sac']['median'] == pytest.approx(2.5)
    assert summary['ratios']['ssq_continuous/sac']['range'] == pytest.approx([2.0, 3.0])


def test_bad_arguments_are_named(capsys):
    for argv, message in ((['--rounds', '0'], 'rounds'), (['--steps', '900'], 'warm-up')):
        with pytest.raises(SystemExit):
            bench_iteration.main(argv)
        assert message in capsys.readouterr().err


def test_the_page_shows_each_methods_step_and_the_pairs():
    from bench import make_benchmarks_doc

    rounds = [{m: {'seconds_per_env_step': v, 'updates': 4001} for m, v in
               zip(bench_iteration.METHODS, (0.004, 0.002, 0.010, 0.005), strict=True)}]
    iteration = {'command': '.venv/bin/python -m bench.bench_iteration', 'task': 'wall',
                 'steps': 5000, 'rounds': rounds, 'machine': {},
                 **bench_iteration.summarise(rounds)}
    text = '\n'.join(make_benchmarks_doc.iteration_section(iteration))
    assert '| 4.00 | 4001 |' in text and '| 5.00 | 4001 |' in text
    assert '| ssq_discrete/dqn | 2.00x (2.00-2.00) |' in text
    assert 'for 5000 env steps on the wall task, rounds: 1' in text


def test_one_pair_alone_is_summarised_without_the_other():
    rounds = [{'ssq_discrete': {'seconds_per_env_step': 0.006},
               'dqn': {'seconds_per_env_step': 0.002}}]
    summary = bench_iteration.summarise(rounds)
    assert set(summary['seconds_per_env_step']) == {'ssq_discrete', 'dqn'}
    assert set(summary['ratios']) == {'ssq_discrete/dqn'}
    assert summary['ratios']['ssq_discrete/dqn']['median'] == pytest.approx(3.0)
