"""Fixed-capacity ring buffer of transitions that carry mu's support at the next state.

Discrete actions: the action is an index and the support is mu's probability vector at s'.
Continuous actions: the action is a vector and the support is the K samples of mu drawn at s'.
The learner therefore never needs the robot's kinematics to compute its target.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ssq_ros.storage import atomic_write

_FORMAT_VERSION = 1
_ARRAYS = ('obs', 'action', 'reward', 'next_obs', 'done', 'next_support')


class ReplayFileError(ValueError):
    """A replay file is missing, corrupt, or was written for a different buffer layout."""


class Batch(NamedTuple):
    """A minibatch as float32 tensors (the discrete action as int64)."""

    obs: torch.Tensor           # (B, obs_dim)
    action: torch.Tensor        # (B,) int64 or (B, action_dim)
    reward: torch.Tensor        # (B,)
    next_obs: torch.Tensor      # (B, obs_dim)
    done: torch.Tensor          # (B,) 1.0 where s' is terminal (not for time-limit cuts)
    next_support: torch.Tensor  # (B, n_actions) probabilities or (B, K, action_dim) samples


class SequenceBatch(NamedTuple):
    """n consecutive transitions from each of B sampled starts, as float32 tensors (the discrete
    action as int64). Step 0 is the sampled transition; step k > 0 follows it in the same
    episode where `valid[:, k]` is 1 (it stops at a terminal step, at an episode's end, and at
    the ring's newest slot)."""

    obs: torch.Tensor           # (B, n, obs_dim)
    action: torch.Tensor        # (B, n) int64 or (B, n, action_dim)
    reward: torch.Tensor        # (B, n)
    next_obs: torch.Tensor      # (B, n, obs_dim)
    done: torch.Tensor          # (B, n)
    next_support: torch.Tensor  # (B, n, n_actions) or (B, n, K, action_dim)
    valid: torch.Tensor         # (B, n) 1.0 / 0.0, valid[:, 0] == 1, non-increasing along n

    def first(self) -> Batch:
        """Step 0 of every sequence: the one-step batch of the sampled transitions."""
        return Batch(*(getattr(self, name)[:, 0] for name in _ARRAYS))


class ReplayBuffer:
    """Ring buffer; build it with `ReplayBuffer.discrete` or `ReplayBuffer.continuous`."""

    def __init__(self, capacity: int, obs_dim: int, action_shape: tuple[int, ...],
                 support_shape: tuple[int, ...]):
        for name, value in (('capacity', capacity), ('obs_dim', obs_dim)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f'{name} must be a positive integer, got {value!r}')
        self.capacity = int(capacity)
        self.obs_dim = int(obs_dim)
        self.action_shape = tuple(int(n) for n in action_shape)
        self.support_shape = tuple(int(n) for n in support_shape)
        self.is_discrete = self.action_shape == ()
        action_dtype = np.int64 if self.is_discrete else np.float32
        self.arrays = {
            'obs': np.zeros((self.capacity, self.obs_dim), np.float32),
            'action': np.zeros((self.capacity, *self.action_shape), action_dtype),
            'reward': np.zeros(self.capacity, np.float32),
            'next_obs': np.zeros((self.capacity, self.obs_dim), np.float32),
            'done': np.zeros(self.capacity, np.float32),
            'next_support': np.zeros((self.capacity, *self.support_shape), np.float32),
        }
        self.position = 0  # next slot to write
        self.size = 0

    @classmethod
    def discrete(cls, capacity: int, obs_dim: int, n_actions: int) -> ReplayBuffer:
        return cls(capacity, obs_dim, (), (n_actions,))

    @classmethod
    def continuous(cls, capacity: int, obs_dim: int, action_dim: int,
                   num_samples: int) -> ReplayBuffer:
        return cls(capacity, obs_dim, (action_dim,), (num_samples, action_dim))

    def __len__(self) -> int:
        return self.size

    def add(self, obs, action, reward, next_obs, done, next_support) -> None:
        """Append one transition, overwriting the oldest once full; bad values are refused."""
        self.add_batch(np.asarray(obs)[None], np.asarray(action)[None],
                       np.asarray(reward, dtype=float).reshape(1), np.asarray(next_obs)[None],
                       np.asarray(done, dtype=float).reshape(1), np.asarray(next_support)[None])

    def add_batch(self, obs, action, reward, next_obs, done, next_support) -> None:
        """Append N transitions given as arrays with a leading dimension N."""
        values = dict(zip(_ARRAYS, (obs, action, reward, next_obs, done, next_support),
                          strict=True))
        count = None
        for name in _ARRAYS:
            target = self.arrays[name]
            value = np.asarray(values[name])
            if value.ndim != target.ndim or value.shape[1:] != target.shape[1:]:
                raise ValueError(f'{name}: expected shape (N, *{target.shape[1:]}), '
                                 f'got {value.shape}')
            count = value.shape[0] if count is None else count
            if value.shape[0] != count:
                raise ValueError(f'{name}: {value.shape[0]} rows, expected {count}')
            if self.is_discrete and name == 'action':
                if not np.issubdtype(value.dtype, np.integer) or np.any(value < 0) \
                        or np.any(value >= self.support_shape[0]):
                    raise ValueError(f'action: expected integer indices in '
                                     f'[0, {self.support_shape[0]}), got {value}')
            elif not np.all(np.isfinite(value.astype(float))):
                raise ValueError(f'{name}: contains NaN or inf')
            values[name] = value
        if not np.all(np.isin(values['done'], (0.0, 1.0))):
            raise ValueError('done: expected 0 or 1')
        if self.is_discrete:
            probs = values['next_support']
            if np.any(probs < 0) or np.any(np.abs(probs.sum(axis=1) - 1.0) > 1e-4):
                raise ValueError('next_support: expected probability vectors (>= 0, sum 1)')
        index = (self.position + np.arange(count)) % self.capacity
        if count > self.capacity:  # only the newest `capacity` rows survive
            index, keep = index[-self.capacity:], slice(count - self.capacity, None)
        else:
            keep = slice(None)
        for name in _ARRAYS:
            self.arrays[name][index] = values[name][keep]
        self.position = int((self.position + count) % self.capacity)
        self.size = min(self.size + count, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        """Uniform minibatch (with replacement) as torch tensors."""
        if self.size == 0:
            raise ValueError('cannot sample from an empty replay buffer')
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f'batch_size must be a positive integer, got {batch_size!r}')
        index = rng.integers(self.size, size=int(batch_size))
        return self.batch_at(index)

    def sample_sequences(self, batch_size: int, n_steps: int,
                         rng: np.random.Generator) -> SequenceBatch:
        """Uniform starts (with replacement), each with the n_steps - 1 transitions that
        followed it (`sequences_at`)."""
        if self.size == 0:
            raise ValueError('cannot sample from an empty replay buffer')
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f'batch_size must be a positive integer, got {batch_size!r}')
        return self.sequences_at(rng.integers(self.size, size=int(batch_size)), n_steps)

    def sequences_at(self, index: np.ndarray, n_steps: int) -> SequenceBatch:
        """The transitions at slots `index` and the n_steps - 1 slots after each. Slot i + 1
        continues slot i only when it was written after it (not past the ring's newest slot),
        slot i is not terminal, and its next state is exactly slot i + 1's state: the
        transitions need no episode ids, and a time-limit cut, a new episode or a transition
        that arrived out of order (the graph) ends the sequence there."""
        if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) \
                or n_steps < 1:
            raise ValueError(f'n_steps must be a positive integer, got {n_steps!r}')
        index = np.asarray(index, dtype=np.int64)
        offsets = np.arange(int(n_steps))
        slots = (index[:, None] + offsets[None, :]) % self.capacity           # (B, n)
        newest = (self.position - 1) % self.capacity
        ahead = (newest - index) % self.capacity        # slots written after each start
        if self.size < self.capacity:
            ahead = np.minimum(ahead, self.size - 1 - index)
        valid = np.zeros(slots.shape, bool)
        valid[:, 0] = True
        arrays = self.arrays
        for k in range(1, int(n_steps)):
            previous, current = slots[:, k - 1], slots[:, k]
            valid[:, k] = (valid[:, k - 1] & (ahead >= k) & (arrays['done'][previous] == 0)
                           & np.all(arrays['next_obs'][previous] == arrays['obs'][current],
                                    axis=-1))
        # invalid steps repeat the start (never an unwritten slot): finite, and masked out
        slots = np.where(valid, slots, index[:, None])
        tensors = [torch.from_numpy(arrays[name][slots]) for name in _ARRAYS]
        return SequenceBatch(*tensors, torch.from_numpy(valid.astype(np.float32)))

    def batch_at(self, index: np.ndarray) -> Batch:
        """The transitions at the given slots, as torch tensors."""
        return Batch(*(torch.from_numpy(self.arrays[name][index]) for name in _ARRAYS))

    def save(self, path: str | Path) -> Path:
        """Write the buffer (and its ring position) atomically as an .npz file."""
        layout = np.array([_FORMAT_VERSION, self.capacity, self.obs_dim, self.position,
                           self.size], np.int64)
        shapes = np.array([len(self.action_shape), *self.action_shape,
                           len(self.support_shape), *self.support_shape], np.int64)
        return atomic_write(path, lambda f: np.savez(f, layout=layout, shapes=shapes,
                                                     **self.arrays))

    def load(self, path: str | Path) -> None:
        """Replace this buffer's contents by a file written by `save` for the same layout."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                stored = {name: data[name] for name in ('layout', 'shapes', *_ARRAYS)}
        except FileNotFoundError as exc:
            raise ReplayFileError(f'{path}: replay file not found') from exc
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            raise ReplayFileError(f'{path}: corrupt replay file ({exc})') from exc
        version, capacity, obs_dim, position, size = (int(v) for v in stored['layout'])
        if version != _FORMAT_VERSION:
            raise ReplayFileError(f'{path}: replay format {version}, expected {_FORMAT_VERSION}')
        mine = (self.capacity, self.obs_dim, self.action_shape, self.support_shape)
        shapes = [int(v) for v in stored['shapes']]
        theirs = (capacity, obs_dim, tuple(shapes[1:1 + shapes[0]]),
                  tuple(shapes[2 + shapes[0]:]))
        if theirs != mine:
            raise ReplayFileError(f'{path}: written for (capacity, obs_dim, action shape, '
                                  f'support shape) = {theirs}, this buffer is {mine}')
        if not (0 <= size <= capacity and 0 <= position < capacity):
            raise ReplayFileError(f'{path}: ring position {position} / size {size} invalid')
        for name in _ARRAYS:
            if stored[name].shape != self.arrays[name].shape:
                raise ReplayFileError(f'{path}: array {name} has shape {stored[name].shape}, '
                                      f'expected {self.arrays[name].shape}')
        for name in _ARRAYS:
            self.arrays[name][...] = stored[name]
        self.position, self.size = position, size
