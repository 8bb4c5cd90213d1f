"""Validate a JointState-like message and reorder it into the configured joint order.

A robot driver publishes joints in its own order, sometimes with extra joints (a gripper). Nothing
is guessed: an unknown, missing or duplicated joint, arrays of the wrong length, NaN/inf, or a
stamp that is older than the last one or too far from the clock refuses the whole message with a
`JointStateError` naming the reason. Joints listed in `ignored_joints` are dropped on purpose.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ssq_ros.safety.status import SafetyStatus


class JointStateError(ValueError):
    """A joint state was refused; `status` names the reaction, the message says why.

    `sample` holds the validated values when only the timing was wrong (stamp off the clock or
    out of order): such a state must not drive a command, but the arm was in it, so a referee
    still judges it.
    """

    def __init__(self, status: SafetyStatus, reason: str,
                 sample: JointSample | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.sample = sample


@dataclass(frozen=True)
class JointSample:
    """One accepted joint state in the configured order; velocities are None if not reported."""

    positions: np.ndarray
    velocities: np.ndarray | None
    stamp: float


def reorder(names: Sequence[str], values: Sequence[float], joint_order: Sequence[str],
            what: str, ignored: frozenset[str] = frozenset()) -> np.ndarray:
    """`values` (one per name in `names`) rearranged into `joint_order`; raises JointStateError."""
    if len(values) != len(names):
        raise JointStateError(SafetyStatus.STATE_REJECTED_SIZE,
                              f'{what} has {len(values)} entries for {len(names)} joint names')
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in index:
            raise JointStateError(SafetyStatus.DUPLICATE_JOINT, f'joint {name!r} appears twice')
        index[name] = i
    wanted = set(joint_order)
    unknown = [n for n in names if n not in wanted and n not in ignored]
    if unknown:
        raise JointStateError(SafetyStatus.UNKNOWN_JOINT,
                              f'unknown joint {unknown[0]!r} (configured: {list(joint_order)})')
    missing = [n for n in joint_order if n not in index]
    if missing:
        raise JointStateError(SafetyStatus.MISSING_JOINT, f'joint {missing[0]!r} is missing')
    try:
        out = np.array([values[index[n]] for n in joint_order], dtype=float)
    except (TypeError, ValueError) as exc:
        raise JointStateError(SafetyStatus.STATE_REJECTED_NONFINITE,
                              f'{what} is not numeric: {exc}') from exc
    if not np.all(np.isfinite(out)):
        bad = joint_order[int(np.flatnonzero(~np.isfinite(out))[0])]
        raise JointStateError(SafetyStatus.STATE_REJECTED_NONFINITE,
                              f'{what} of joint {bad!r} is not finite')
    return out


class JointStateReader:
    """Accepts joint states in any order and returns them in `joint_order`, or refuses them.

    `position_bounds` (low, high), if given, refuses positions outside them: a driver that
    reports a joint far beyond its limits has a different robot config or other units.
    `max_stamp_age` > 0 refuses stamps further than that from `now` (either direction, so a
    clock that jumped is caught too); 0 turns the check off for machines without a shared clock.
    Stamps must strictly increase: a repeated or older stamp is a replay, not fresh data.
    `is_repeat` tells the last accepted state sent again (same stamp, same values) from that.
    """

    def __init__(self, joint_order: Sequence[str], *, require_velocity: bool = True,
                 max_stamp_age: float = 0.0, ignored_joints: Sequence[str] = (),
                 position_bounds: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        if len(set(joint_order)) != len(joint_order) or not joint_order:
            raise ValueError(f'joint order must list distinct joints, got {list(joint_order)}')
        overlap = set(joint_order) & set(ignored_joints)
        if overlap:
            raise ValueError(f'joints both configured and ignored: {sorted(overlap)}')
        self.joint_order = tuple(joint_order)
        self.require_velocity = require_velocity
        self.max_stamp_age = max_stamp_age
        self.ignored = frozenset(ignored_joints)
        self.position_bounds = position_bounds
        self.last_stamp: float | None = None
        self._last: JointSample | None = None

    def is_repeat(self, names: Sequence[str], positions: Sequence[float],
                  velocities: Sequence[float], stamp: float, now: float) -> bool:
        """The last accepted state, sent again unchanged and still within `max_stamp_age` (a
        lockstep simulator re-sends the state it got no command for). Anything else with its
        stamp is not a repeat: `accept` refuses it with the reason."""
        last = self._last
        if last is None or stamp != last.stamp or (
                self.max_stamp_age > 0 and abs(now - stamp) > self.max_stamp_age):
            return False
        try:
            q = reorder(names, positions, self.joint_order, 'position', self.ignored)
            qd = None if len(velocities) == 0 and last.velocities is None else \
                reorder(names, velocities, self.joint_order, 'velocity', self.ignored)
        except JointStateError:
            return False
        return bool(np.array_equal(q, last.positions)) and (
            (qd is None and last.velocities is None) or
            (qd is not None and last.velocities is not None and
             bool(np.array_equal(qd, last.velocities))))

    @classmethod
    def for_robot(cls, robot: Any, position_tolerance: float, **options: Any
                  ) -> JointStateReader:
        """A reader in `robot`'s joint order (a RobotModel) refusing positions further than
        `position_tolerance` outside its URDF limits; `options` as for the constructor."""
        bounds = (np.asarray(robot.position_lower) - position_tolerance,
                  np.asarray(robot.position_upper) + position_tolerance)
        return cls(robot.joint_names, position_bounds=bounds, **options)

    def accept(self, names: Sequence[str], positions: Sequence[float],
               velocities: Sequence[float], stamp: float, now: float) -> JointSample:
        """Validate and reorder one message; raises JointStateError with the reason."""
        if not math.isfinite(stamp):
            raise JointStateError(SafetyStatus.STATE_REJECTED_NONFINITE, 'stamp is not finite')
        q = reorder(names, positions, self.joint_order, 'position', self.ignored)
        if self.position_bounds is not None:
            low, high = self.position_bounds
            outside = np.flatnonzero((q < low) | (q > high))
            if outside.size:
                i = int(outside[0])
                raise JointStateError(SafetyStatus.STATE_IMPLAUSIBLE,
                                      f'position {q[i]:.4g} of joint {self.joint_order[i]!r} is '
                                      f'outside the plausible range [{low[i]:.4g}, '
                                      f'{high[i]:.4g}]')
        if len(velocities) == 0 and not self.require_velocity:
            qd = None
        else:
            qd = reorder(names, velocities, self.joint_order, 'velocity', self.ignored)
        sample = JointSample(q, qd, stamp)
        if self.max_stamp_age > 0 and abs(now - stamp) > self.max_stamp_age:
            direction = 'old' if stamp < now else 'far in the future'
            raise JointStateError(SafetyStatus.STATE_STAMP_OFF_CLOCK,
                                  f'stamp {stamp:.3f} is {abs(now - stamp):.3f} s {direction} '
                                  f'(limit {self.max_stamp_age} s)', sample)
        if self.last_stamp is not None and stamp <= self.last_stamp:
            raise JointStateError(SafetyStatus.STATE_OUT_OF_ORDER,
                                  f'stamp {stamp:.6f} is not newer than the last accepted '
                                  f'{self.last_stamp:.6f}', sample)
        self.last_stamp, self._last = stamp, sample
        return sample
