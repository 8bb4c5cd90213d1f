"""Actions the learner chooses and the joint-velocity commands they become.

Cartesian end-effector velocities (a discrete set of primitives or a continuous 3-D vector) are
mapped to joint velocities by damped least squares, plus a null-space term that pulls the arm
toward its home posture so the redundant joint does not drift. A joint-velocity action space is
the option for learners that want the joints directly. In both, the zero action is exactly the
zero command (hold), and every command is scaled as a whole (direction kept) to the joint
velocity limits.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssq_ros.config import spec
from ssq_ros.safety.kinematics import Kinematics


@dataclass(frozen=True)
class ActionConfig:
    space: str = spec('cartesian', doc='continuous actions: cartesian (3-D end-effector '
                      'velocity) or joint (joint velocities)', choices=('cartesian', 'joint'))
    speed: float = spec(0.25, doc='primitive speed and continuous bound per axis [m/s]',
                        low=1e-3, high=2.0)
    slow_speed: float = spec(0.05, doc='speed of the slow primitives [m/s]; 0 = none',
                             low=0.0, high=2.0)
    damping: float = spec(0.05, doc='damped-least-squares damping [m]', low=1e-4, high=1.0)
    posture_gain: float = spec(0.5, doc='null-space pull toward the home posture [1/s]',
                               low=0.0, high=10.0)
    joint_speed_fraction: float = spec(0.9, doc='commands are scaled to this fraction of the '
                                       'safe-set velocity limits', low=0.01, high=1.0)


AXES = (('x', 0), ('y', 1), ('z', 2))


def primitive_directions(speed: float, slow_speed: float) -> tuple[tuple[str, ...], np.ndarray]:
    """Names and Cartesian velocities (A, 3) of the discrete primitives; index 0 is hold."""
    names, vectors = ['hold'], [np.zeros(3)]
    for label, value in (('', speed), (' slow', slow_speed)):
        if value <= 0:
            continue
        for axis, index in AXES:
            for sign in (1.0, -1.0):
                vector = np.zeros(3)
                vector[index] = sign * value
                names.append(f'{"+" if sign > 0 else "-"}{axis}{label}')
                vectors.append(vector)
    return tuple(names), np.array(vectors)


def damped_pseudo_inverse(jacobian: np.ndarray, damping: float) -> np.ndarray:
    """J^T (J J^T + damping^2 I)^-1, shape (..., n, m) for (..., m, n): bounded near
    singularities."""
    rows = jacobian.shape[-2]
    transposed = np.swapaxes(jacobian, -1, -2)
    return transposed @ np.linalg.inv(jacobian @ transposed + damping ** 2 * np.eye(rows))


def scale_to_limits(commands: np.ndarray, limit: np.ndarray) -> np.ndarray:
    """Shrink each row (N, n) uniformly so that |command_i| <= limit_i; direction is kept."""
    ratio = np.abs(commands) / limit
    worst = ratio.max(axis=-1, keepdims=True)
    return commands / np.maximum(worst, 1.0)


class CartesianActions:
    """End-effector velocity actions of one robot, mapped to joint-velocity commands."""

    def __init__(self, kinematics: Kinematics, config: ActionConfig, velocity_limit: np.ndarray):
        self.kinematics = kinematics
        self.config = config
        self.limit = np.asarray(velocity_limit, dtype=float) * config.joint_speed_fraction
        self.home = kinematics.robot.home
        self.names, self.directions = primitive_directions(config.speed, config.slow_speed)
        self.hold_index = 0
        self.dim = 3
        self.low = np.full(3, -config.speed)
        self.high = np.full(3, config.speed)

    def to_joint(self, q: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Joint-velocity commands (N, n) for Cartesian velocities (N, 3) at configuration q."""
        actions = self._check(actions)
        q = np.asarray(q, dtype=float)
        return self._commands(q[None], self.kinematics.ee_jacobian(q)[None], actions[None])[0]

    def to_joint_each(self, qs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Commands (B, n) for one Cartesian velocity (B, 3) at each configuration (B, n)."""
        actions = self._check(actions)
        qs = self.kinematics.check_configurations(qs)
        if len(qs) != len(actions):
            raise ValueError(f'{len(qs)} configurations but {len(actions)} actions')
        return self._commands(qs, self.kinematics.ee_jacobians(qs), actions[:, None])[:, 0]

    @staticmethod
    def _check(actions: np.ndarray) -> np.ndarray:
        actions = np.asarray(actions, dtype=float)
        if actions.ndim != 2 or actions.shape[1] != 3:
            raise ValueError(f'Cartesian actions must have shape (N, 3), got {actions.shape}')
        if not np.all(np.isfinite(actions)):
            raise ValueError('Cartesian actions contain NaN or inf')
        return actions

    def _commands(self, qs: np.ndarray, jacobians: np.ndarray, actions: np.ndarray
                  ) -> np.ndarray:
        """Commands (B, N, n) for actions (B, N, 3) at configurations (B, n) with their
        Jacobians (B, 3, n)."""
        pseudo = damped_pseudo_inverse(jacobians, self.config.damping)
        null = np.eye(jacobians.shape[-1]) - pseudo @ jacobians
        posture = (null @ (self.config.posture_gain * (self.home - qs))[..., None])[..., 0]
        # The posture term fades with the action so that the zero action is exactly hold.
        weight = np.minimum(1.0, np.linalg.norm(actions, axis=-1) / self.config.speed)
        commands = actions @ np.swapaxes(pseudo, -1, -2) + weight[..., None] * posture[:, None]
        return scale_to_limits(commands, self.limit)

    def settle(self, q: np.ndarray, targets: np.ndarray, period: float,
               max_steps: int = 200, tolerance: float = 1e-3) -> np.ndarray:
        """The postures (M, n) these actions bring the arm to when they drive the hand straight
        from `q` to each of `targets` (M, 3) at `speed`, one `period` at a time, kinematically
        (no obstacles, joint positions kept inside the limits); (n,) for one target (3,). The
        redundant joints end where the null-space pull leaves them, which a policy over these
        actions cannot choose differently. All targets advance together, as one batch."""
        targets = np.asarray(targets, dtype=float)
        single = targets.ndim == 1
        targets = np.atleast_2d(targets)
        robot = self.kinematics.robot
        qs = np.repeat(np.asarray(q, dtype=float)[None], len(targets), axis=0)
        moving = np.arange(len(targets))
        for _ in range(max_steps):
            offset = targets[moving] - self.kinematics.ee_position(qs[moving])
            distance = np.linalg.norm(offset, axis=1)
            still = distance >= tolerance
            moving, offset, distance = moving[still], offset[still], distance[still]
            if not moving.size:
                break
            speed = np.minimum(self.config.speed, distance / period)
            velocity = offset * (speed / distance)[:, None]
            qs[moving] = np.clip(qs[moving] + period * self.to_joint_each(qs[moving], velocity),
                                 robot.position_lower, robot.position_upper)
        return qs[0] if single else qs

    def discrete_commands(self, q: np.ndarray) -> np.ndarray:
        """Joint-velocity commands (A, n) of every primitive, in `names` order."""
        return self.to_joint(q, self.directions)


class JointActions:
    """Joint velocities as the action itself, bounded by the scaled velocity limits."""

    def __init__(self, config: ActionConfig, velocity_limit: np.ndarray):
        self.limit = np.asarray(velocity_limit, dtype=float) * config.joint_speed_fraction
        self.dim = self.limit.size
        self.low, self.high = -self.limit, self.limit.copy()

    def to_joint(self, q: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """The actions (N, n), clipped to the limits; the configuration does not matter."""
        actions = np.asarray(actions, dtype=float)
        if actions.ndim != 2 or actions.shape[1] != self.dim:
            raise ValueError(f'joint actions must have shape (N, {self.dim}), got '
                             f'{actions.shape}')
        if not np.all(np.isfinite(actions)):
            raise ValueError('joint actions contain NaN or inf')
        return np.clip(actions, self.low, self.high)
