"""The last filter between the node graph and the arm: clamps, the whole safe set, watchdog,
a single commander and a latched e-stop.

Pure functions shape one joint-velocity command (velocity limits by scaling the whole vector so
the direction is kept, as MoveIt Servo does; acceleration limits relative to the last sent command;
position limits with a margin and a braking distance). `CommandGate` adds the state machine: a
fresh joint state and a fresh command are both needed to move, otherwise it commands a stop; an
e-stop latches until reset, and a reset resumes from the measured state with no command pending,
so an old command is never replayed. With a `SafeSetFilter` the shaped command then passes the
support check at the measured state (zones, workspace, table, limits), scaled down or braked to
rest where it fails; the check has the last word, and scaling a command down keeps every clamp
above satisfied.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ssq_ros.config import spec
from ssq_ros.safety.safe_set_filter import FilterResult, SafeSetFilter
from ssq_ros.safety.status import SafetyStatus
from ssq_ros.safety.support import CommandsInFlight

_EPS = 1e-12  # below this a change from clamping is floating-point noise, not a reaction


@dataclass(frozen=True)
class CommandLimitsConfig:
    """How much of the robot's limits the hardware interface lets the graph use."""

    velocity_scale: float = spec(0.25, doc='fraction of each joint velocity limit (URDF) the arm '
                                 'may use; start low on a new robot', low=0.01, high=1.0)
    acceleration_scale: float = spec(0.5, doc='fraction of each joint acceleration limit '
                                     '(robot.yaml) used between consecutive commands',
                                     low=0.01, high=1.0)
    position_margin: float = spec(0.05, doc='distance [rad or m] kept from each position limit',
                                  low=0.0, high=0.5)


@dataclass(frozen=True)
class JointLimits:
    """Effective per-joint limits, margins and scales already applied."""

    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray

    def __post_init__(self) -> None:
        arrays = (self.lower, self.upper, self.velocity, self.acceleration)
        if len({a.shape for a in arrays}) != 1 or self.lower.ndim != 1:
            raise ValueError(f'joint limits differ in shape: {[a.shape for a in arrays]}')
        if not all(np.all(np.isfinite(a)) for a in arrays):
            raise ValueError('joint limits must be finite')
        if np.any(self.lower >= self.upper):
            raise ValueError('every lower position limit must lie below the upper one '
                             '(is the position margin larger than half the range?)')
        if np.any(self.velocity <= 0) or np.any(self.acceleration <= 0):
            raise ValueError('velocity and acceleration limits must be positive')

    @property
    def size(self) -> int:
        return self.lower.size

    @classmethod
    def from_robot(cls, robot: Any, cfg: CommandLimitsConfig) -> JointLimits:
        """Limits of a `ssq_ros.safety.robot.RobotModel` with `cfg`'s margin and scales."""
        if not np.all(np.isfinite(robot.acceleration_limit)):
            raise ValueError('the robot yaml sets no acceleration_limits; the hardware '
                             'interface needs them to ramp commands and to brake in time')
        return cls(lower=np.asarray(robot.position_lower, float) + cfg.position_margin,
                   upper=np.asarray(robot.position_upper, float) - cfg.position_margin,
                   velocity=np.asarray(robot.velocity_limit, float) * cfg.velocity_scale,
                   acceleration=np.asarray(robot.acceleration_limit, float)
                   * cfg.acceleration_scale)


def scale_to_velocity_limits(velocity: np.ndarray, limit: np.ndarray) -> np.ndarray:
    """Scale the whole vector so every |v_i| <= limit_i; the direction of motion is kept."""
    speed = np.abs(velocity)
    with np.errstate(over='ignore'):  # a tiny speed gives ratio inf: no scaling needed
        ratio = np.divide(limit, speed, out=np.full_like(speed, np.inf), where=speed > 0)
    return velocity * min(1.0, float(ratio.min()))


def limit_acceleration(velocity: np.ndarray, previous: np.ndarray, limit: np.ndarray,
                       dt: float) -> np.ndarray:
    """Move from `previous` towards `velocity` by at most limit_i * dt per joint, in a straight
    line (the change is scaled as a whole)."""
    change = velocity - previous
    size = np.abs(change)
    with np.errstate(over='ignore'):
        ratio = np.divide(limit * dt, size, out=np.full_like(size, np.inf), where=size > 0)
    return previous + change * min(1.0, float(ratio.min()))


def braking_speed(distance: np.ndarray, deceleration: np.ndarray, horizon: float) -> np.ndarray:
    """Largest speed v >= 0 with v*horizon + v^2/(2*deceleration) <= distance (0 if distance<=0).

    Moving at v for `horizon` (until the next command can change it) and then braking at
    `deceleration` stops the joint within `distance`.
    """
    d = np.maximum(distance, 0.0)
    return deceleration * (np.sqrt(horizon ** 2 + 2.0 * d / deceleration) - horizon)


def clamp_to_position_limits(velocity: np.ndarray, position: np.ndarray, limits: JointLimits,
                             horizon: float) -> np.ndarray:
    """Per joint, cut any speed towards a limit that could not be braked before reaching it.

    A joint already past a limit may only move back; motion away from a limit is never cut.
    """
    towards_upper = braking_speed(limits.upper - position, limits.acceleration, horizon)
    towards_lower = braking_speed(position - limits.lower, limits.acceleration, horizon)
    return np.clip(velocity, -towards_lower, towards_upper)


def shape_command(command: np.ndarray, position: np.ndarray, previous: np.ndarray,
                  limits: JointLimits, horizon: float,
                  accel_dt: float) -> tuple[np.ndarray, tuple[SafetyStatus, ...]]:
    """Apply velocity, acceleration and then position limits; position has the last word.

    Returns the velocity to send and the reactions that changed it (empty if none did).
    """
    statuses = []
    velocity = scale_to_velocity_limits(command, limits.velocity)
    if np.any(np.abs(velocity - command) > _EPS):
        statuses.append(SafetyStatus.VELOCITY_LIMIT_SCALE)
    accelerated = limit_acceleration(velocity, previous, limits.acceleration, accel_dt)
    if np.any(np.abs(accelerated - velocity) > _EPS):
        statuses.append(SafetyStatus.ACCELERATION_LIMIT_CLAMP)
    clamped = clamp_to_position_limits(accelerated, position, limits, horizon)
    if np.any(np.abs(clamped - accelerated) > _EPS):
        statuses.append(SafetyStatus.POSITION_LIMIT_CLAMP)
    return clamped, tuple(statuses)


def check_command(command: Sequence[float], size: int) -> tuple[np.ndarray | None,
                                                                SafetyStatus | None]:
    """(command as an array, None) if it has `size` finite entries, else (None, the reason)."""
    if len(command) != size:
        return None, SafetyStatus.COMMAND_REJECTED_SIZE
    try:
        values = np.array(command, dtype=float)
    except (TypeError, ValueError):
        return None, SafetyStatus.COMMAND_REJECTED_NONFINITE
    if values.shape != (size,) or not np.all(np.isfinite(values)):
        return None, SafetyStatus.COMMAND_REJECTED_NONFINITE
    return values, None


@dataclass(frozen=True)
class GateOutput:
    """What to send now: joint velocities, the matching position target, and why.

    `position` is the measured position advanced by one control period at `velocity` (for
    position and trajectory controllers); it is None only before the first joint state.
    """

    velocity: np.ndarray
    position: np.ndarray | None
    statuses: tuple[SafetyStatus, ...]
    safe_set: FilterResult | None = None
    """What the safe-set check made of the shaped command (None where it did not run)."""

    @property
    def is_stop(self) -> bool:
        return any(s.stops_arm for s in self.statuses)


class CommandGate:
    """Watchdog, e-stop latch and clamps for one arm; time is passed in (seconds, monotonic).

    Moving needs a joint state newer than `state_timeout`, a valid command newer than
    `command_timeout` and, unless `allow_multiple_commanders`, at most one publisher of
    commands. Anything else produces a stop: zero velocity and, for position controllers, a
    hold at the last measured position. With `safe_set_filter`, joint states must carry
    velocities and every moving command is checked against the whole safe set.
    """

    def __init__(self, limits: JointLimits, period: float, state_timeout: float,
                 command_timeout: float, actuation_delay: float = 0.0,
                 safe_set_filter: SafeSetFilter | None = None,
                 allow_multiple_commanders: bool = False) -> None:
        if period <= 0 or state_timeout <= 0 or command_timeout <= 0:
            raise ValueError('period and timeouts must be positive')
        if not 0.0 <= actuation_delay < np.inf:
            raise ValueError(f'actuation_delay must be finite and >= 0, got {actuation_delay}')
        if safe_set_filter is not None and safe_set_filter.dof != limits.size:
            raise ValueError(f'the safe-set check is for {safe_set_filter.dof} joints, the '
                             f'limits for {limits.size}')
        self.limits = limits
        self.period = period
        self.actuation_delay = actuation_delay
        self.state_timeout = state_timeout
        self.command_timeout = command_timeout
        self.safe_set_filter = safe_set_filter
        self.allow_multiple_commanders = allow_multiple_commanders
        self._commanders = 0
        self._position: np.ndarray | None = None
        self._velocity: np.ndarray | None = None
        self._state_time = -np.inf
        self._command: np.ndarray | None = None
        self._command_time = -np.inf
        self._rejection: SafetyStatus | None = None
        self._sent = np.zeros(limits.size)
        self._sent_time: float | None = None
        # The commands the arm may still follow when a new one acts: those sent within the
        # actuation delay plus the oldest state age the watchdog lets through.
        self._in_flight = CommandsInFlight(
            limits.size, max(1, math.ceil((actuation_delay + state_timeout) / period - 1e-9)))
        self._estop_latched = False
        self._button_pressed = False
        self._fault: SafetyStatus | None = None

    @property
    def estopped(self) -> bool:
        return self._estop_latched

    @property
    def fault(self) -> SafetyStatus | None:
        """The latched fault stop (e.g. TRACKING_FAULT_STOP), None if none."""
        return self._fault

    def latch_fault(self, status: SafetyStatus) -> None:
        """Stop with `status` until `reset`, like a drive's protective stop; the pending
        command is dropped, never replayed."""
        self._fault = status
        self._command = None

    @property
    def measured_position(self) -> np.ndarray | None:
        """The last accepted measured position (a copy), None before the first."""
        return None if self._position is None else self._position.copy()

    def update_state(self, position: np.ndarray, now: float,
                     velocity: np.ndarray | None = None) -> None:
        """Record an accepted (validated, reordered) measured position and velocity.

        The safe-set check judges commands from the measured velocity too: with a
        `safe_set_filter`, a state without velocities is a ValueError.
        """
        if velocity is None and self.safe_set_filter is not None:
            raise ValueError('the safe-set check needs measured joint velocities')
        self._position = np.array(position, dtype=float)
        self._velocity = None if velocity is None else np.array(velocity, dtype=float)
        self._state_time = now

    def set_command_publishers(self, count: int) -> None:
        """How many publishers the command topic has now (from the ROS graph)."""
        self._commanders = int(count)

    def state_is_fresh(self, now: float) -> bool:
        return self._position is not None and now - self._state_time <= self.state_timeout

    def submit(self, command: Sequence[float], now: float) -> SafetyStatus | None:
        """Take a new joint-velocity command; returns the rejection reason, if refused.

        A refused command also drops the pending one (the arm stops until a valid command
        arrives); commands that arrive while e-stopped are discarded, never replayed later.
        """
        if self._estop_latched:
            return SafetyStatus.ESTOPPED
        if self._fault is not None:
            return self._fault
        values, reason = check_command(command, self.limits.size)
        if reason is not None:
            self._command, self._rejection = None, reason
            return reason
        self._command, self._command_time, self._rejection = values, now, None
        return None

    def estop(self) -> None:
        """Latch the e-stop: from now on only stop commands, until `reset`."""
        self._estop_latched = True
        self._command = None

    def set_button(self, pressed: bool) -> None:
        """An e-stop button: pressing latches; releasing does not reset."""
        self._button_pressed = pressed
        if pressed:
            self.estop()

    def reset(self, now: float) -> str | None:
        """Release the e-stop and a latched fault; returns why not if it cannot be released
        now.

        Motion resumes only with a command received after the reset, starting from zero velocity
        at the measured position.
        """
        if self._button_pressed:
            return 'the e-stop button is still pressed'
        if not self.state_is_fresh(now):
            return 'no fresh joint state: cannot resume from the measured position'
        self._estop_latched = False
        self._fault = None
        self._command, self._rejection = None, None
        self._sent = np.zeros(self.limits.size)
        self._in_flight.reset()
        return None

    def step(self, now: float) -> GateOutput:
        """The command to send at time `now`, and the reactions that shaped it."""
        stop_reason = self._stop_reason(now)
        if stop_reason is not None:
            return self._stop(stop_reason, now)
        if self._sent_time is None:
            accel_dt = self.period
        else:
            accel_dt = float(np.clip(now - self._sent_time, 0.0, self.period))
        # Until a later command can take effect the arm keeps this velocity: the rest of this
        # period, the age of the state it was planned from, and the controller's own delay.
        horizon = self.period + (now - self._state_time) + self.actuation_delay
        velocity, statuses = shape_command(self._command, self._position, self._sent,
                                           self.limits, horizon, accel_dt)
        checked = None
        if self.safe_set_filter is not None:
            lead = (now - self._state_time) + self.actuation_delay
            checked = self.safe_set_filter.filter(self._position, self._velocity, velocity,
                                                  self._in_flight.commands, lead)
            velocity = checked.velocity
            if checked.scale == 0.0:
                statuses = statuses + (SafetyStatus.SAFE_SET_STOP,)
            elif checked.scale < 1.0:
                statuses = statuses + (SafetyStatus.SAFE_SET_SCALE,)
        target = self._position + velocity * self.period
        return self._record(velocity, target, statuses, now, checked)

    def _stop_reason(self, now: float) -> SafetyStatus | None:
        if self._estop_latched:
            return SafetyStatus.ESTOPPED
        if self._fault is not None:
            return self._fault
        if self._position is None:
            return SafetyStatus.NO_STATE_YET
        if not self.state_is_fresh(now):
            return SafetyStatus.STALE_STATE_STOP
        if self._commanders > 1 and not self.allow_multiple_commanders:
            return SafetyStatus.MULTIPLE_COMMANDERS_STOP
        if self._rejection is not None:
            return self._rejection
        if self._command is None and self._command_time == -np.inf:
            return SafetyStatus.NO_COMMAND_YET
        if self._command is None or now - self._command_time > self.command_timeout:
            return SafetyStatus.STALE_COMMAND_STOP
        return None

    def _stop(self, reason: SafetyStatus, now: float) -> GateOutput:
        return self._record(np.zeros(self.limits.size), self._position, (reason,), now)

    def _record(self, velocity: np.ndarray, target: np.ndarray | None,
                statuses: tuple[SafetyStatus, ...], now: float,
                checked: FilterResult | None = None) -> GateOutput:
        self._sent, self._sent_time = velocity, now
        self._in_flight.push(velocity)
        return GateOutput(velocity.copy(), None if target is None else target.copy(), statuses,
                          checked)
