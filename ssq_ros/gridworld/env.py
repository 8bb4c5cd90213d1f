"""Cliff walk as an explicit tabular MDP, plus the masked random walk behavior mu on it.

Row 0 is the top. The start is the bottom-left cell, the goal the bottom-right one and the cells
between them are the cliff: unsafe and absorbing (reward `cliff_reward`). Every other step costs 1.
With `slip > 0` an action goes to one of its two perpendicular directions with probability
slip/2 each, so the safe action set shrinks to actions that cannot slip into the cliff.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssq_ros.learning.behavior import DiscreteSafeBehavior

ACTIONS = ('up', 'right', 'down', 'left')
_MOVES = np.array([(-1, 0), (0, 1), (1, 0), (0, -1)])


@dataclass(frozen=True)
class GridWorld:
    """Explicit MDP: transitions[s, a, s'], rewards[s, a, s'], terminal and unsafe states."""

    rows: int
    cols: int
    transitions: np.ndarray  # (S, A, S)
    rewards: np.ndarray      # (S, A, S)
    terminal: np.ndarray     # (S,) bool; goal and cliff absorb
    unsafe: np.ndarray       # (S,) bool; the cliff
    start: int
    goal: int

    @property
    def n_states(self) -> int:
        return self.rows * self.cols

    @property
    def n_actions(self) -> int:
        return len(ACTIONS)

    def expected_rewards(self) -> np.ndarray:
        """R(s, a) = sum_s' P(s'|s,a) r(s, a, s')."""
        return np.einsum('ijk,ijk->ij', self.transitions, self.rewards)

    def observation(self, state: int) -> np.ndarray:
        """One-hot state vector, the critic's input."""
        obs = np.zeros(self.n_states, np.float32)
        obs[state] = 1.0
        return obs

    def step(self, state: int, action: int, rng: np.random.Generator) -> tuple[int, float, bool]:
        """Sample s' ~ P(.|s, a); returns (s', reward, s' is terminal)."""
        if self.terminal[state]:
            raise ValueError(f'state {state} is terminal: reset the episode')
        if not 0 <= action < self.n_actions:
            raise ValueError(f'action {action} is not in [0, {self.n_actions})')
        cdf = np.cumsum(self.transitions[state, action])
        next_state = int(np.searchsorted(cdf, rng.random() * cdf[-1], side='right'))
        next_state = min(next_state, self.n_states - 1)
        return (next_state, float(self.rewards[state, action, next_state]),
                bool(self.terminal[next_state]))

    def cell(self, state: int) -> tuple[int, int]:
        return divmod(state, self.cols)


def cliff_walk(rows: int = 4, cols: int = 12, slip: float = 0.0,
               cliff_reward: float = -100.0) -> GridWorld:
    """The cliff walk; `slip` in [0, 1) is the probability of a perpendicular move."""
    if rows < 2 or cols < 3:
        raise ValueError(f'the cliff walk needs at least 2 rows and 3 columns, got {rows}x{cols}')
    if not 0.0 <= slip < 1.0:
        raise ValueError(f'slip must be in [0, 1), got {slip}')
    n_states = rows * cols
    start, goal = (rows - 1) * cols, rows * cols - 1
    unsafe = np.zeros(n_states, bool)
    unsafe[start + 1:goal] = True
    terminal = unsafe.copy()
    terminal[goal] = True
    transitions = np.zeros((n_states, 4, n_states))
    rewards = np.full((n_states, 4, n_states), -1.0)
    rewards[:, :, unsafe] = cliff_reward
    for state in range(n_states):
        if terminal[state]:
            transitions[state, :, state] = 1.0  # absorbing; never stepped from
            rewards[state] = 0.0
            continue
        row, col = divmod(state, cols)
        for action in range(4):
            outcomes = [(action, 1.0 - slip), ((action + 1) % 4, slip / 2),
                        ((action + 3) % 4, slip / 2)]
            for direction, prob in outcomes:
                if prob == 0.0:
                    continue
                r = min(max(row + _MOVES[direction][0], 0), rows - 1)
                c = min(max(col + _MOVES[direction][1], 0), cols - 1)
                transitions[state, action, r * cols + c] += prob
    return GridWorld(rows, cols, transitions, rewards, terminal, unsafe, start, goal)


def safe_action_mask(world: GridWorld) -> np.ndarray:
    """(S, A) True where the action cannot lead into an unsafe state (all True at terminals).

    Raises ValueError when some safe non-terminal state has no safe action, i.e. no behavior
    supported on the safe set could stay safe from there.
    """
    allowed = world.transitions[:, :, world.unsafe].sum(axis=-1) == 0.0
    allowed[world.terminal] = True
    stuck = np.flatnonzero(~allowed.any(axis=1))
    if stuck.size:
        raise ValueError(f'no safe action in states {stuck.tolist()}')
    return allowed


def masked_random_walk(world: GridWorld) -> np.ndarray:
    """mu(a|s): uniform over the safe actions of each state, (S, A)."""
    return DiscreteSafeBehavior(world.n_actions).distribution(safe_action_mask(world))
