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


def test_dqn_harness_check_runs_both_configurations_with_everything_allowed(tmp_path):
    """--algo dqn: the suite's MaskedDQN on CartPole-v1, with the zoo's and the suite's
    settings, behind a support that allows every action."""
    out = tmp_path / 'harness_dqn.json'
    assert bench_harness_check.main(['--algo', 'dqn', '--steps', '1200', '--episodes', '2',
                                     '--configurations', 'zoo', 'suite',
                                     '--out', str(out), '--no-progress']) == 0
    result = json.loads(out.read_text())
    assert result['env'] == 'CartPole-v1' and result['published']['mean_return'] == 500.0
    runs = {run['configuration']: run for run in result['runs']}
    assert set(runs) == {'zoo', 'suite'}
    # SB3's own DQN on the same seed, added to the same file
    assert bench_harness_check.main(['--algo', 'dqn', '--steps', '1200', '--episodes', '2',
                                     '--configurations', 'zoo_sb3', '--merge',
                                     '--out', str(out), '--no-progress']) == 0
    merged = json.loads(out.read_text())['runs']
    assert [run['configuration'] for run in merged] == ['zoo', 'suite', 'zoo_sb3']
    assert runs['zoo']['hyperparameters']['train_freq'] == 256
    assert runs['suite']['hyperparameters']['n_steps'] == 8
    for run in runs.values():  # CartPole pays 1 per step alive, at most 500
        assert 1 <= run['mean_return'] <= 500 and 1 <= run['random_mean_return'] < 100


def test_everything_allowed_is_the_layout_masked_dqn_reads():
    import gymnasium as gym
    import numpy as np

    env = bench_harness_check.EverythingAllowed(gym.make('CartPole-v1'), seed=0)
    obs, _ = env.reset(seed=0)
    assert obs.shape == env.observation_space.shape == (6,)
    assert np.all(obs[-2:] == 1.0)
    assert np.all(env.decision().probs == 0.5)
    _, _, _, _, info = env.step(1)
    assert info['executed_action'] == 1
