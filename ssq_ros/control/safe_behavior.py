"""The arm's safe behavior controller: mu, supported only on commands the support check accepts.

At a state (q, qdot) it builds mu's support from the end-effector actions (the discrete
primitives, or K rejection-sampled continuous actions), asks the support check which joint
commands keep the arm in S and let it stop in S, and hands that to the learning core's behavior
policy. The result (`Decision`) carries everything the trainer and the ROS nodes need: the
allowed mask and probability vector (discrete) or the K safe samples (continuous), the chosen
action and its joint-velocity command. A mild preference toward the goal keeps exploration
useful; mu need not be good, only safe.

If the support check accepts no action at all (only possible when the model assumption was
broken, e.g. by a collision), the decision is the hold command with `fallback=True`, and the
caller should report it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssq_ros.config import ConfigError, spec
from ssq_ros.learning.behavior import ContinuousSafeBehavior, DiscreteSafeBehavior
from ssq_ros.safety.actions import CartesianActions, JointActions
from ssq_ros.safety.support import SupportCheck

# Hand speed [m/s] above which mu's persistence follows the hand's heading (the primitives
# move it at 0.05 or 0.25 m/s; below this the arm is holding or turning).
_MOVING_SPEED = 0.01


@dataclass(frozen=True)
class BehaviorConfig:
    hold_weight: float = spec(0.3, doc='exploration weight of hold relative to a motion '
                              'primitive (discrete)', low=0.0)
    goal_preference: float = spec(2.0, doc='mu(a) grows by exp(goal_preference * cos) of the '
                                  'angle between the action and the goal direction', low=0.0,
                                  high=20.0)
    persistence: float = spec(0.0, doc='discrete, task-agnostic exploration: mu(a) grows by '
                              'exp(persistence * cos) of the angle between the action and the '
                              "hand's current velocity (from q and qdot), so mu keeps going "
                              'where it goes and covers more of the workspace than a random '
                              'walk; 0 disables', low=0.0, high=20.0)
    sigma_fraction: float = spec(0.6, doc='continuous: Gaussian sigma as a fraction of the '
                                 'action bound', low=0.01, high=10.0)
    nominal_fraction: float = spec(0.5, doc='continuous: Gaussian mean = this fraction of the '
                                   'bound toward the goal', low=0.0, high=1.0)
    num_samples: int = spec(8, doc='continuous: K safe samples of mu per state', low=1,
                            high=4096)
    max_attempts: int = spec(4, doc='continuous: batches of K tried before hold fills the rest',
                             low=1, high=100)


@dataclass(frozen=True)
class Decision:
    """mu at one state and the action drawn from it."""

    action: int | np.ndarray
    command: np.ndarray
    probs: np.ndarray | None = None
    """Discrete: mu(.|s) over every primitive (0 where not allowed)."""
    allowed: np.ndarray | None = None
    """Discrete: which primitives the support check accepted."""
    samples: np.ndarray | None = None
    """Continuous: K actions of mu (its Monte-Carlo support at this state)."""
    fallback: bool = False
    """No action was accepted; the command is hold."""


class SafeBehaviorController:
    """mu for one arm: discrete primitives or continuous actions, shielded by `support`."""

    def __init__(self, support: SupportCheck, actions: CartesianActions | JointActions,
                 config: BehaviorConfig, discrete: bool):
        if discrete and not isinstance(actions, CartesianActions):
            raise ConfigError('actions.space: the discrete behavior needs cartesian actions')
        self.support = support
        self.actions = actions
        self.config = config
        self.discrete = discrete
        self.kinematics = support.safe_set.kinematics
        self.dof = support.safe_set.robot.dof
        if discrete:
            weights = np.ones(len(actions.names))
            weights[actions.hold_index] = config.hold_weight
            if config.hold_weight <= 0:
                raise ConfigError('behavior.hold_weight: must be positive, hold is the action '
                                  'that is always safe')
            self.behavior = DiscreteSafeBehavior(len(actions.names), weights)
            self.action_count = len(actions.names)
            self._direction_norms = np.linalg.norm(actions.directions, axis=1)
        else:
            bound = actions.high
            self.behavior = ContinuousSafeBehavior(actions.low, actions.high,
                                                   config.sigma_fraction * bound,
                                                   config.num_samples, config.max_attempts)
            self.action_dim = actions.dim

    def _goal_direction(self, q: np.ndarray, goal: np.ndarray | None) -> np.ndarray | None:
        if goal is None:
            return None
        offset = np.asarray(goal, dtype=float) - self.kinematics.ee_position(q)
        norm = np.linalg.norm(offset)
        return offset / norm if norm > 1e-9 else None

    def _cosines(self, unit: np.ndarray) -> np.ndarray:
        """cos of the angle between each primitive's hand direction and `unit` (0 for hold)."""
        norms = self._direction_norms
        return np.divide(self.actions.directions @ unit, norms, out=np.zeros(len(norms)),
                         where=norms > 0)

    def _hand_heading(self, q: np.ndarray, qdot: np.ndarray) -> np.ndarray | None:
        """Unit direction of the hand's velocity J(q) qdot; None while it (nearly) stands."""
        velocity = self.kinematics.ee_jacobian(q) @ np.asarray(qdot, dtype=float)
        speed = np.linalg.norm(velocity)
        return velocity / speed if speed > _MOVING_SPEED else None

    def discrete_support(self, q: np.ndarray, qdot: np.ndarray, goal: np.ndarray | None = None,
                         shield: bool = True, previous: np.ndarray | None = None
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        """(allowed (A,), probs (A,), commands (A, n), fallback) at one state.

        `shield=False` allows every primitive: only for baselines that measure what the
        support check prevents, never for acting on a robot. `previous`: the command the arm
        follows until the next one acts, or the last few oldest first (the support check's
        actuation latency, `SupportCheck.predict`).
        """
        commands = self.actions.discrete_commands(q)
        allowed = self.support.is_safe(q, qdot, commands, previous) if shield else \
            np.ones(len(commands), dtype=bool)
        fallback = not allowed.any()
        if fallback:
            allowed[self.actions.hold_index] = True
        preference = np.ones(len(commands))
        direction = self._goal_direction(q, goal)
        if direction is not None and self.config.goal_preference > 0:
            preference *= np.exp(self.config.goal_preference * self._cosines(direction))
        # the Jacobian only when asked for: this runs at every control step
        heading = self._hand_heading(q, qdot) if self.config.persistence > 0 else None
        if heading is not None:
            preference *= np.exp(self.config.persistence * self._cosines(heading))
        probs = self.behavior.distribution(allowed, preference)
        return allowed, probs, commands, fallback

    def continuous_support(self, q: np.ndarray, qdot: np.ndarray, rng: np.random.Generator,
                           goal: np.ndarray | None = None, previous: np.ndarray | None = None
                           ) -> tuple[np.ndarray, bool]:
        """(K safe samples of mu (K, d), whether any row is the hold fallback)."""
        nominal = np.zeros(self.action_dim)
        direction = self._goal_direction(q, goal)
        if direction is not None and isinstance(self.actions, CartesianActions):
            nominal = self.config.nominal_fraction * self.actions.high * direction

        def is_safe(batch: np.ndarray) -> np.ndarray:
            return self.support.is_safe(q, qdot, self.actions.to_joint(q, batch), previous)

        hold = np.zeros(self.action_dim)
        samples = self.behavior.support_samples(nominal, is_safe, rng, hold)
        return samples, self.behavior.fallback_rows > 0

    def act(self, q: np.ndarray, qdot: np.ndarray, rng: np.random.Generator,
            goal: np.ndarray | None = None, shield: bool = True,
            previous: np.ndarray | None = None) -> Decision:
        """mu at (q, qdot) and one action drawn from it, with its joint-velocity command.

        `shield=False` (discrete only) is the same distribution without the support check, the
        baseline the evidence compares against; never use it on a robot. `previous`: the
        command last sent, or the last few oldest first (`CommandsInFlight`), which the arm
        follows for the support check's actuation latency (None: the arm holds its measured
        velocity meanwhile).
        """
        q = np.asarray(q, dtype=float)
        qdot = np.asarray(qdot, dtype=float)
        if self.discrete:
            allowed, probs, commands, fallback = self.discrete_support(q, qdot, goal, shield,
                                                                       previous)
            action = self.behavior.sample(probs, rng)
            return Decision(action=action, command=commands[action].copy(), probs=probs,
                            allowed=allowed, fallback=fallback)
        if not shield:
            raise ValueError('the unshielded baseline exists for the discrete behavior only')
        samples, used_hold = self.continuous_support(q, qdot, rng, goal, previous)
        action = self.behavior.sample(samples, rng)
        command = self.actions.to_joint(q, action[None])[0]
        fallback = used_hold and not np.any(np.any(samples != 0.0, axis=1))
        return Decision(action=action, command=command, samples=samples, fallback=fallback)

    def command_for(self, q: np.ndarray, action: int | np.ndarray) -> np.ndarray:
        """The joint-velocity command of an action (e.g. one chosen by a learned policy)."""
        if self.discrete:
            index = int(action)
            if not 0 <= index < self.action_count:
                raise ValueError(f'discrete action {action!r} outside 0..{self.action_count - 1}')
            return self.actions.to_joint(q, self.actions.directions[index:index + 1])[0]
        return self.actions.to_joint(q, np.asarray(action, dtype=float)[None])[0]
