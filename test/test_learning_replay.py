"""Replay buffer: ring semantics, torch batches, atomic save/load, bad files and bad input."""
import os

import numpy as np
import pytest
import torch

from ssq_ros.learning.replay import ReplayBuffer, ReplayFileError
from ssq_ros.storage import atomic_write


def fill_discrete(buffer: ReplayBuffer, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        buffer.add(obs=[i, 0.0], action=i % 3, reward=float(i), next_obs=[i + 1, 0.0],
                   done=i % 2 == 0, next_support=[0.5, 0.0, 0.5])


def test_ring_overwrites_oldest_and_tracks_position():
    buffer = ReplayBuffer.discrete(capacity=4, obs_dim=2, n_actions=3)
    fill_discrete(buffer, 6)
    assert len(buffer) == 4 and buffer.position == 2
    assert sorted(buffer.arrays['reward'].tolist()) == [2.0, 3.0, 4.0, 5.0]


def test_add_batch_larger_than_capacity_keeps_the_newest_rows():
    buffer = ReplayBuffer.discrete(capacity=3, obs_dim=1, n_actions=2)
    n = 5
    buffer.add_batch(np.arange(n)[:, None], np.zeros(n, np.int64), np.arange(n, dtype=float),
                     np.arange(n)[:, None], np.zeros(n), np.tile([1.0, 0.0], (n, 1)))
    assert len(buffer) == 3 and buffer.position == 2
    assert sorted(buffer.arrays['reward'].tolist()) == [2.0, 3.0, 4.0]


def test_sample_returns_torch_tensors_of_the_right_shapes():
    buffer = ReplayBuffer.continuous(capacity=10, obs_dim=3, action_dim=2, num_samples=5)
    for i in range(7):
        buffer.add(np.full(3, i), np.full(2, 0.1 * i), -1.0, np.full(3, i + 1), False,
                   np.zeros((5, 2)))
    batch = buffer.sample(16, np.random.default_rng(0))
    assert batch.obs.shape == (16, 3) and batch.action.shape == (16, 2)
    assert batch.next_support.shape == (16, 5, 2)
    assert all(t.dtype == torch.float32 for t in batch)
    assert torch.all(batch.obs[:, 0] < 7)  # only filled slots are sampled
    discrete = ReplayBuffer.discrete(4, 2, 3)
    fill_discrete(discrete, 2)
    assert discrete.sample(4, np.random.default_rng(0)).action.dtype == torch.int64


def test_save_load_round_trip_keeps_contents_and_ring_position(tmp_path):
    buffer = ReplayBuffer.discrete(capacity=4, obs_dim=2, n_actions=3)
    fill_discrete(buffer, 6)
    path = buffer.save(tmp_path / 'replay.npz')
    restored = ReplayBuffer.discrete(capacity=4, obs_dim=2, n_actions=3)
    restored.load(path)
    assert (restored.position, restored.size) == (buffer.position, buffer.size)
    for name, array in buffer.arrays.items():
        np.testing.assert_array_equal(restored.arrays[name], array)
    fill_discrete(restored, 1, start=6)  # continues where the saved buffer stopped
    assert restored.arrays['reward'][2] == 6.0
    assert [p.name for p in tmp_path.iterdir()] == ['replay.npz']  # no temp file left


def test_failed_write_leaves_the_previous_file_intact(tmp_path):
    path = tmp_path / 'replay.npz'
    buffer = ReplayBuffer.discrete(capacity=4, obs_dim=2, n_actions=3)
    fill_discrete(buffer, 3)
    buffer.save(path)
    before = path.read_bytes()

    def crash_half_way(file):
        file.write(b'partial')
        raise RuntimeError('killed mid-write')

    with pytest.raises(RuntimeError, match='killed'):
        atomic_write(path, crash_half_way)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ['replay.npz']


def test_loading_corrupt_missing_or_mismatched_files_is_a_clear_error(tmp_path):
    buffer = ReplayBuffer.discrete(capacity=4, obs_dim=2, n_actions=3)
    with pytest.raises(ReplayFileError, match='not found'):
        buffer.load(tmp_path / 'absent.npz')
    corrupt = tmp_path / 'corrupt.npz'
    corrupt.write_bytes(b'PK\x03\x04 this is not a zip archive')
    with pytest.raises(ReplayFileError, match='corrupt'):
        buffer.load(corrupt)
    fill_discrete(buffer, 2)
    good = buffer.save(tmp_path / 'good.npz')
    truncated = tmp_path / 'truncated.npz'
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ReplayFileError, match='corrupt'):
        buffer.load(truncated)
    with pytest.raises(ReplayFileError, match='this buffer is'):
        ReplayBuffer.discrete(capacity=5, obs_dim=2, n_actions=3).load(good)
    with pytest.raises(ReplayFileError, match='this buffer is'):
        ReplayBuffer.continuous(capacity=4, obs_dim=2, action_dim=3, num_samples=1).load(good)


@pytest.mark.parametrize('change, message', [
    (dict(obs=[np.nan, 0.0]), 'obs'),
    (dict(obs=[0.0, 0.0, 0.0]), 'obs'),
    (dict(action=3), 'action'),
    (dict(action=1.0), 'action'),
    (dict(reward=np.inf), 'reward'),
    (dict(done=0.5), 'done'),
    (dict(next_support=[0.5, 0.5, 0.5]), 'next_support'),
    (dict(next_support=[1.5, -0.5, 0.0]), 'next_support'),
])
def test_bad_transitions_are_refused_and_leave_the_buffer_unchanged(change, message):
    buffer = ReplayBuffer.discrete(capacity=4, obs_dim=2, n_actions=3)
    transition = dict(obs=[0.0, 0.0], action=1, reward=0.0, next_obs=[0.0, 1.0], done=False,
                      next_support=[0.5, 0.0, 0.5])
    transition.update(change)
    with pytest.raises(ValueError, match=message):
        buffer.add(**transition)
    assert len(buffer) == 0 and buffer.position == 0


def test_constructor_and_sampling_reject_bad_arguments():
    with pytest.raises(ValueError, match='capacity'):
        ReplayBuffer.discrete(capacity=0, obs_dim=2, n_actions=3)
    buffer = ReplayBuffer.discrete(4, 2, 3)
    with pytest.raises(ValueError, match='empty'):
        buffer.sample(2, np.random.default_rng(0))
    fill_discrete(buffer, 1)
    with pytest.raises(ValueError, match='batch_size'):
        buffer.sample(0, np.random.default_rng(0))


def _chain(buffer, starts_and_lengths):
    """Episodes of 2-d states counting up by 1, rewards = the global step index."""
    step = 0
    for start, length, terminal in starts_and_lengths:
        obs = np.array([start, 0.0], np.float32)
        for t in range(length):
            done = float(terminal and t == length - 1)
            buffer.add(obs, step % 3, float(step), obs + 1, done, np.array([0.5, 0.5, 0.0]))
            obs, step = obs + 1, step + 1


def test_sequences_stop_at_terminals_new_episodes_and_the_newest_slot():
    buffer = ReplayBuffer.discrete(16, 2, 3)
    # slots 0-2: an episode cut by the time limit; 3-4: one that ends terminal; 5-7: a third
    _chain(buffer, [(0.0, 3, False), (50.0, 2, True), (90.0, 3, False)])
    seq = buffer.sequences_at(np.array([0, 1, 3, 4, 5, 7]), 3)
    assert seq.valid.tolist() == [[1, 1, 1],   # 0 1 2 in one episode
                                  [1, 1, 0],   # 2 is the episode's last transition
                                  [1, 1, 0],   # 4 is terminal: nothing after it
                                  [1, 0, 0],   # terminal
                                  [1, 1, 1],
                                  [1, 0, 0]]   # the newest slot: nothing written after it
    assert seq.reward[0].tolist() == [0.0, 1.0, 2.0]
    # invalid steps repeat the start (never the unwritten zero rows)
    assert seq.reward[5].tolist() == [7.0, 7.0, 7.0]
    assert torch.all(seq.next_support.sum(-1) == 1)
    first = seq.first()
    assert first.reward.tolist() == [0.0, 1.0, 3.0, 4.0, 5.0, 7.0]
    assert seq.obs.shape == (6, 3, 2) and seq.next_support.shape == (6, 3, 3)


def test_sequences_across_the_ring_wrap_stop_at_the_newest_slot():
    buffer = ReplayBuffer.discrete(4, 2, 3)
    _chain(buffer, [(0.0, 6, False)])  # slots hold steps 4 5 2 3; newest = slot 1 (step 5)
    seq = buffer.sequences_at(np.array([2, 3, 0, 1]), 3)
    assert seq.reward[:, 0].tolist() == [2.0, 3.0, 4.0, 5.0]
    assert seq.valid.tolist() == [[1, 1, 1], [1, 1, 1], [1, 1, 0], [1, 0, 0]]
    assert seq.reward[0].tolist() == [2.0, 3.0, 4.0]


def test_sequences_of_one_step_are_the_transitions():
    buffer = ReplayBuffer.discrete(8, 2, 3)
    _chain(buffer, [(0.0, 5, False)])
    seq = buffer.sample_sequences(4, 1, np.random.default_rng(0))
    assert seq.valid.shape == (4, 1) and torch.all(seq.valid == 1)
    with pytest.raises(ValueError, match='n_steps'):
        buffer.sequences_at(np.array([0]), 0)
