"""Flat, labelled layouts of a transition and of an episode summary (docs/topics.md).

A transition travels as one float vector cut into named segments, in this order:

    seq (1)  phase (1)  episode (1)  obs (D)  action (1 | d)  reward (1)  next_obs (D)
    done (1)  next_support (n | K*d)

`phase` is the index of the `RunPhase` it was collected in (train or eval_behavior), `action` an
index (discrete) or a vector, `next_support` mu's probabilities over the n actions at s' or K
samples of mu at s', row-major. `FlatLayout` carries the labels and sizes; a message whose labels,
sizes or values do not fit is refused with a ValueError naming the field, before anything uses it.

`HeldTransitions` is the sender's side of the acknowledgement protocol: what it sent and the
learner has not acknowledged yet, to send again to a learner that restarted.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from ssq_ros.graph_logic.phases import RunPhase
from ssq_ros.task.spaces import TaskSpaces

PHASE_CODES = {phase: float(i) for i, phase in enumerate(RunPhase)}
_PHASES_BY_CODE = {code: phase for phase, code in PHASE_CODES.items()}


@dataclass(frozen=True)
class FlatLayout:
    """Named segments of a flat vector: `fields` in order with their `sizes`."""

    fields: tuple[str, ...]
    sizes: tuple[int, ...]

    @property
    def length(self) -> int:
        return sum(self.sizes)

    def pack(self, values: dict[str, object]) -> np.ndarray:
        """One float vector from `values` (a value per field, flattened row-major)."""
        parts = []
        for name, size in zip(self.fields, self.sizes, strict=True):
            part = np.asarray(values[name], dtype=float).reshape(-1)
            if part.size != size:
                raise ValueError(f'{name}: expected {size} values, got {part.size}')
            parts.append(part)
        return np.concatenate(parts)

    def unpack(self, labels: list[str], sizes: list[int], data) -> dict[str, np.ndarray]:
        """Segments of `data` by name, after checking labels, sizes, length and finiteness."""
        if tuple(labels) != self.fields:
            raise ValueError(f'layout labels {list(labels)} differ from {list(self.fields)}')
        if tuple(int(s) for s in sizes) != self.sizes:
            raise ValueError(f'layout sizes {list(sizes)} differ from the expected '
                             f'{list(self.sizes)} for fields {list(self.fields)}')
        data = np.asarray(data, dtype=float)
        if data.shape != (self.length,):
            raise ValueError(f'{data.size} values, expected {self.length}')
        out, start = {}, 0
        for name, size in zip(self.fields, self.sizes, strict=True):
            segment = data[start:start + size]
            if not np.all(np.isfinite(segment)):
                raise ValueError(f'{name}: contains NaN or inf')
            out[name], start = segment, start + size
        return out


def transition_layout(spaces: TaskSpaces) -> FlatLayout:
    action = 1 if spaces.discrete else spaces.action_size
    support = int(np.prod(spaces.support_shape()))
    return FlatLayout(
        ('seq', 'phase', 'episode', 'obs', 'action', 'reward', 'next_obs', 'done',
         'next_support'),
        (1, 1, 1, spaces.obs_dim, action, 1, spaces.obs_dim, 1, support))


def decision_layout(spaces: TaskSpaces) -> FlatLayout:
    """The executor's action at a measured state: its stamp [s] and the action."""
    return FlatLayout(('stamp', 'action'), (1, 1 if spaces.discrete else spaces.action_size))


EPISODE_LAYOUT = FlatLayout(('phase', 'episode', 'return', 'success', 'length'),
                            (1, 1, 1, 1, 1))


@dataclass(frozen=True)
class Transition:
    """One transition of mu as the learner stores it, with where it came from."""

    seq: int
    phase: RunPhase
    episode: int
    obs: np.ndarray
    action: int | np.ndarray
    reward: float
    next_obs: np.ndarray
    done: bool
    next_support: np.ndarray


@dataclass(frozen=True)
class EpisodeSummary:
    phase: RunPhase
    episode: int
    episode_return: float
    success: bool
    length: int


def _phase(code: float) -> RunPhase:
    if code not in _PHASES_BY_CODE:
        raise ValueError(f'phase: {code} is not a run phase code')
    return _PHASES_BY_CODE[code]


def _count(name: str, value: float) -> int:
    if value < 0 or value != int(value):
        raise ValueError(f'{name}: {value} is not a non-negative integer')
    return int(value)


def pack_transition(spaces: TaskSpaces, t: Transition) -> np.ndarray:
    return transition_layout(spaces).pack({
        'seq': t.seq, 'phase': PHASE_CODES[t.phase], 'episode': t.episode, 'obs': t.obs,
        'action': t.action, 'reward': t.reward, 'next_obs': t.next_obs,
        'done': float(t.done), 'next_support': t.next_support})


def unpack_transition(spaces: TaskSpaces, labels: list[str], sizes: list[int],
                      data) -> Transition:
    """Decode and check a transition; a ValueError names the field that is wrong."""
    parts = transition_layout(spaces).unpack(labels, sizes, data)
    action: int | np.ndarray = parts['action']
    if spaces.discrete:
        index = float(parts['action'][0])
        if index != int(index) or not 0 <= index < spaces.action_size:
            raise ValueError(f'action: {index} is not an index in [0, {spaces.action_size})')
        action = int(index)
    done = float(parts['done'][0])
    if done not in (0.0, 1.0):
        raise ValueError(f'done: expected 0 or 1, got {done}')
    support = parts['next_support'].reshape(spaces.support_shape())
    if spaces.discrete and (np.any(support < 0) or abs(support.sum() - 1.0) > 1e-4):
        raise ValueError('next_support: not a probability vector')
    return Transition(_count('seq', parts['seq'][0]), _phase(parts['phase'][0]),
                      _count('episode', parts['episode'][0]), parts['obs'], action,
                      float(parts['reward'][0]), parts['next_obs'], bool(done), support)


def pack_episode(summary: EpisodeSummary) -> np.ndarray:
    return EPISODE_LAYOUT.pack({'phase': PHASE_CODES[summary.phase],
                                'episode': summary.episode, 'return': summary.episode_return,
                                'success': float(summary.success), 'length': summary.length})


def unpack_episode(labels: list[str], sizes: list[int], data) -> EpisodeSummary:
    parts = EPISODE_LAYOUT.unpack(labels, sizes, data)
    success = float(parts['success'][0])
    if success not in (0.0, 1.0):
        raise ValueError(f'success: expected 0 or 1, got {success}')
    return EpisodeSummary(_phase(parts['phase'][0]), _count('episode', parts['episode'][0]),
                          float(parts['return'][0]), bool(success),
                          _count('length', parts['length'][0]))


class HeldTransitions:
    """Sent transitions (any message object) the learner has not acknowledged, by `seq`, with
    when each was last sent; at most `capacity` (the oldest are dropped, counted in
    `dropped`). Acknowledgements are per transition: one the learner never received (sent
    while no learner was there) stays held until it is sent again and acknowledged."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f'capacity must be >= 1, got {capacity}')
        self.capacity = capacity
        self._held: OrderedDict[int, list[Any]] = OrderedDict()  # seq -> [message, sent_at]
        self.dropped = 0
        self.resent = 0

    def __len__(self) -> int:
        return len(self._held)

    @property
    def first_seq(self) -> int | None:
        return next(iter(self._held), None)

    @property
    def last_seq(self) -> int | None:
        return next(reversed(self._held), None)

    def add(self, seq: int, message: Any, now: float) -> None:
        self._held[seq] = [message, now]
        while len(self._held) > self.capacity:
            self._held.popitem(last=False)
            self.dropped += 1

    def acknowledge(self, seq: int) -> bool:
        """The learner has `seq`; False if it was not held (acknowledged twice, or a
        predecessor's number)."""
        return self._held.pop(seq, None) is not None

    def due(self, now: float, older_than: float) -> list[tuple[int, Any]]:
        """(seq, message) of the held transitions last sent at least `older_than` ago, oldest
        first; they count as sent again at `now`."""
        out = []
        for seq, entry in self._held.items():
            if now - entry[1] >= older_than:
                entry[1] = now
                out.append((seq, entry[0]))
        self.resent += len(out)
        return out
