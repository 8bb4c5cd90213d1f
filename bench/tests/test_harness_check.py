"""bench_harness_check runs SAC on Reacher-v5 end to end (a few hundred steps: the numbers in
bench/results/harness_check.json come from the full run)."""
import json

from bench import bench_harness_check


def test_harness_check_trains_evaluates_and_writes_its_result(tmp_path):
    out = tmp_path / 'harness.json'
    assert bench_harness_check.main(['--steps', '300', '--episodes', '3', '--out', str(out),
                                     '--no-progress']) == 0
    result = json.loads(out.read_text())
    run = result['runs'][0]
    assert result['env'] == 'Reacher-v5' and run['steps'] == 300
    # 50-step episodes of -distance - control cost: negative, and a random policy's is far
    # below the published SAC result
    assert run['mean_return'] < 0 and run['random_mean_return'] < -20
    assert result['published']['mean_return'] == -5.08
