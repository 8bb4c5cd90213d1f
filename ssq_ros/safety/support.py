"""The support check: which joint-velocity commands keep the arm in S now and able to stop in S.

Model of the arm between two control steps (the assumption every guarantee rests on, see
docs/safety.md): the velocity controller moves the joint velocity from its current value qdot
toward the command v along a straight line in velocity space at the deceleration `a` (per joint,
synchronised so the direction is kept), holds it, and after the period brakes the same way to
zero. A moving candidate v is accepted iff every sampled state of that path, over the control
period and the braking that follows, keeps its position margins above the tracking allowance
(0 at the measured state, growing to `tracking_allowance` at the period's end: room for the
servo lagging or leading the model) and its velocity margins >= 0. The braking path of an
accepted command is exactly the path of the hold command (v = 0) at the next state, so hold
stays accepted from every state the accepted commands lead to, with the allowance left for the
tracking error; hold itself is judged against -hold_tolerance (see `SupportCheck.is_safe`).
Between samples the path may stray from the nearer sample by at most half the chord plus its
bulge off the chord (a bound from the joints' speeds and accelerations and the arm's lever
length); commands whose bound exceeds `sample_gap_limit` are refused, so every point of an
accepted path keeps a margin of at least -(sample_gap_limit + hold_tolerance), which the safe
set's clearances exceed. Self-collision margins, where two spheres move, are judged with the
bound twice over (see `SupportCheck.evaluate`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssq_ros.config import ConfigError, load, spec
from ssq_ros.safety.safe_set import SafeSet, Verdict


@dataclass(frozen=True)
class SupportConfig:
    deceleration_fraction: float = spec(
        0.5, doc='velocity ramp and braking rate as a fraction of the acceleration limits; the '
                 'velocity controller must ramp at least this fast', low=0.01, high=1.0)
    period_samples: int = spec(3, doc='states checked along the control period', low=1, high=50)
    braking_samples: int = spec(4, doc='states checked along the braking path', low=1, high=50)
    sample_gap_limit: float = spec(
        0.01, doc='a command is refused if its path may stray more than this between checked '
                  'samples [m or rad]; with hold_tolerance it must stay below the clearance',
        low=1e-4, high=0.1)
    hold_tolerance: float = spec(
        0.01, doc='the hold command is accepted down to this negative margin [m or rad]: its '
                  'path is the braking path already checked, off by the tracking error',
        low=0.0, high=0.1)
    tracking_allowance: float = spec(
        0.003, doc='every other command must keep its sampled position margins above this '
                   '[m or rad], growing linearly from 0 at the current state to the full value '
                   'at the end of the period and along the braking: the room for the velocity '
                   'controller lagging or leading the model path', low=0.0, high=0.1)
    actuation_latency: float = spec(
        0.0, doc='time [s] from sending a command until the velocity controller starts acting '
                 'on it; until then the arm keeps ramping toward the previous command. The '
                 'check judges a command from the state predicted that far ahead along the '
                 'ramp model (`SupportCheck.predict`); 0 judges it from the measured state. '
                 'ssq-identify estimates it from a recording', low=0.0, high=0.5)
    tracking_time_constant: float = spec(
        0.0, doc='first-order lag [s] of the velocity servo behind the ramp model. A lagged '
                 'joint trails the model by tau x (its velocity change since the measured '
                 'state), at most tau x max(|v - qdot|, |qdot|) per joint; moving commands keep '
                 'that much more margin (x the lever bound on Cartesian margins, twice on '
                 'self-collision ones). 0 is an ideal servo; ssq-identify estimates it',
        low=0.0, high=0.5)


def load_support_config(path: str | Path) -> SupportConfig:
    """The `support` section of a safe-set yaml."""
    return load(SupportConfig, path, 'support')


def ramp_time(start: np.ndarray, target: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """Time (N,) to move velocities start -> target (N, n) with |change_i| / rate_i <= t."""
    return (np.abs(target - start) / rate).max(axis=-1)


def ramp_displacement(start: np.ndarray, target: np.ndarray, duration: np.ndarray,
                      times: np.ndarray) -> np.ndarray:
    """Displacement (N, T, n) at `times` (T,) of a linear velocity ramp start -> target (N, n)
    lasting `duration` (N,), then holding target."""
    t = times[None, :]
    ramp = duration[:, None]
    # np.where evaluates both branches: t * t / (2 ramp) divides by 0 or overflows for a ramp
    # shorter than every sample time, where the other branch is the one kept.
    with np.errstate(divide='ignore', invalid='ignore', over='ignore'):
        shaped = np.where(t < ramp, t * t / (2.0 * ramp), t - ramp / 2.0)
    shaped = np.where(ramp > 0, shaped, t)  # an instant switch when start == target
    return start[:, None, :] * t[..., None] + (target - start)[:, None, :] * shaped[..., None]


def ramp_state(q: np.ndarray, qdot: np.ndarray, command: np.ndarray, span: float,
               rate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """State (n,), (n,) `span` seconds along one command's ramp from (q, qdot): the first period
    sample of `swept_path` with period `span`, by the same arithmetic, without its batching."""
    ramp = float((np.abs(command - qdot) / rate).max())
    if ramp <= 0.0:
        return q + qdot * span, qdot.copy()
    shaped = span * span / (2.0 * ramp) if span < ramp else span - ramp / 2.0
    q = q + (qdot * span + (command - qdot) * shaped)
    return q, qdot + (command - qdot) * min(1.0, span / ramp)


def swept_path(q: np.ndarray, qdot: np.ndarray, commands: np.ndarray, period: float,
               rate: np.ndarray, period_samples: int, braking_samples: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions and velocities (N, P+B, n) of each command's model path: P states over the
    period (ramp toward the command), then B states of braking to rest; and the duration
    (N, P+B) of the stretch of path that ends at each sample."""
    commands = np.atleast_2d(commands)
    start = np.broadcast_to(qdot, commands.shape)
    ramp = ramp_time(start, commands, rate)
    times = period * np.arange(1, period_samples + 1) / period_samples
    positions = q + ramp_displacement(start, commands, ramp, times)
    with np.errstate(over='ignore'):  # a ramp of a few denormals: times / ramp is inf, then 1
        progress = np.minimum(1.0, np.divide(times, ramp[:, None], out=np.ones((len(ramp),
                                             len(times))), where=ramp[:, None] > 0))
    velocities = start[:, None, :] + (commands - start)[:, None, :] * progress[..., None]
    end_position, end_velocity = positions[:, -1], velocities[:, -1]
    stop = ramp_time(end_velocity, np.zeros_like(end_velocity), rate)
    fractions = np.arange(1, braking_samples + 1) / braking_samples
    # Synchronised braking from w over time t_s travels w * t_s * (f - f^2 / 2) at fraction f.
    travel = stop[:, None] * (fractions - fractions ** 2 / 2.0)[None, :]
    brake_positions = end_position[:, None, :] + end_velocity[:, None, :] * travel[..., None]
    brake_velocities = end_velocity[:, None, :] * (1.0 - fractions)[None, :, None]
    durations = np.concatenate([np.full((len(ramp), period_samples), period / period_samples),
                                np.repeat(stop[:, None] / braking_samples, braking_samples, 1)],
                               axis=1)
    return (np.concatenate([positions, brake_positions], axis=1),
            np.concatenate([velocities, brake_velocities], axis=1), durations)


def allowance_profile(allowance: float, period_samples: int, braking_samples: int
                      ) -> np.ndarray:
    """Margin (P+B,) a moving command's path must keep at each sample: the tracking error
    starts at 0 at the measured state and grows over the period, so the requirement ramps
    linearly to `allowance` at the period's end and stays there along the braking."""
    ramp = np.arange(1, period_samples + 1) / period_samples
    return allowance * np.concatenate([ramp, np.ones(braking_samples)])


def stretch_speed(qdot: np.ndarray, velocities: np.ndarray) -> np.ndarray:
    """Largest joint speed (N, M, n) over the stretch of path ending at each sample.

    Along the model path the velocity is piecewise linear and its magnitude peaks at the ends of
    a stretch (where the ramp ends inside a stretch, the velocity it reaches is the command, the
    value at the stretch's end), so the bound is max(|v_start|, |v_end|).
    """
    before = np.concatenate([np.broadcast_to(qdot, velocities[:, :1].shape), velocities[:, :-1]],
                            axis=1)
    return np.maximum(np.abs(before), np.abs(velocities))


def chord_deviation(lever: float, rate: np.ndarray, speed: np.ndarray,
                    durations: np.ndarray) -> np.ndarray:
    """Bound (N, M) on how far any sphere centre strays from the straight chord between the two
    samples of a stretch: |p''| * dt^2 / 8, with |p''| <= lever * (sum|q''| + 2 (sum|q'|)^2)
    for a serial chain (joint accelerations bounded by `rate`, speeds by `speed` (N, M, n))."""
    acceleration = lever * (rate.sum() + 2.0 * speed.sum(axis=-1) ** 2)
    return acceleration * durations ** 2 / 8.0


class SupportCheck:
    """Decides, at one state, which joint-velocity commands are in the safe support."""

    def __init__(self, safe_set: SafeSet, config: SupportConfig, period: float):
        robot = safe_set.robot
        if not np.all(np.isfinite(robot.acceleration_limit)):
            raise ConfigError('robot.acceleration_limits: the support check needs finite '
                              'acceleration limits for every joint (braking distance)')
        if not (np.isfinite(period) and period > 0):
            raise ValueError(f'control period must be positive and finite, got {period!r}')
        slack = config.sample_gap_limit + config.hold_tolerance
        room = min(safe_set.config.cartesian_clearance, safe_set.config.joint_position_margin)
        if len(safe_set.self_collision):
            room = min(room, safe_set.config.self_collision.clearance)
        if slack >= room:
            raise ConfigError(f'support: sample_gap_limit + hold_tolerance ({slack}) must stay '
                              f'below the safe set\'s clearances and joint margin ({room}), or '
                              'the checked path could reach the real limits')
        self.safe_set = safe_set
        self.config = config
        self.period = float(period)
        self.rate = robot.acceleration_limit * config.deceleration_fraction
        self.dof = robot.dof
        self._allowance = allowance_profile(config.tracking_allowance, config.period_samples,
                                            config.braking_samples)
        lever = safe_set.kinematics.lever_bound
        # Lag allowance per unit of joint-space lag (tau x speed change): joint columns take a
        # joint's own, Cartesian ones the lever bound times the sum, self-collision twice that.
        names = safe_set.names
        self._joint_columns = slice(0, self.dof)
        self._cartesian_weight = np.zeros(len(names))
        self._cartesian_weight[2 * self.dof:] = lever
        self._cartesian_weight[safe_set.self_collision_columns] = 2.0 * lever

    @property
    def commands_in_flight(self) -> int:
        """How many of the last commands sent the arm may still be following when a new one is
        judged: a command sent k periods ago acts from actuation_latency - k x period on, so the
        last ceil(actuation_latency / period) of them (at least one) decide the lead."""
        return max(1, math.ceil(self.config.actuation_latency / self.period - 1e-9))

    def predict(self, q: np.ndarray, qdot: np.ndarray, previous: np.ndarray, lead: float
                ) -> tuple[np.ndarray, np.ndarray]:
        """State (q, qdot) `lead` seconds after (q, qdot) while the arm ramps toward the
        commands still in flight, along the ramp model (the state a command sent now starts
        from; `lead` = the actuation latency plus the measured state's age).

        `previous` is the last command (n,), or the last commands (m, n), oldest first, sent one
        control period apart: the newest acts over the last period of the lead, the one before
        over the period before that, and the oldest over whatever is left (a latency of more
        than one period has several commands in flight at once)."""
        q, qdot = np.asarray(q, dtype=float), np.asarray(qdot, dtype=float)
        previous = np.atleast_2d(np.asarray(previous, dtype=float))
        spans, left = [], float(lead)
        for index in range(len(previous) - 1, -1, -1):  # newest first, back from the lead's end
            span = left if index == 0 else min(self.period, left)
            spans.append((previous[index], span))
            left -= span
            if left <= 0.0:
                break
        for command, span in reversed(spans):
            if span > 0.0:
                q, qdot = ramp_state(q, qdot, command, span, self.rate)
        return q, qdot

    def lag_allowance(self, qdot: np.ndarray, commands: np.ndarray,
                      previous: np.ndarray | None = None) -> np.ndarray:
        """Extra margin (N, C) a moving command's path keeps for a first-order servo lag.

        A velocity y lagging its input u (tau y' = u - y) trails the input's path by
        integral(u - y) = tau (y(t) - y(0)); y stays in the convex hull of the inputs (the
        measured velocity, the previous command, the command and 0 of the braking), so each
        joint trails the model by at most tau x max(|v - qdot|, |previous - qdot|, |qdot|)."""
        tau = self.config.tracking_time_constant
        change = np.maximum(np.abs(commands - qdot), np.abs(qdot))
        if previous is not None:
            previous = np.atleast_2d(np.asarray(previous, dtype=float))
            change = np.maximum(change, np.abs(previous - qdot).max(axis=0))
        joint = tau * change
        extra = joint.sum(axis=1)[:, None] * self._cartesian_weight[None, :]
        extra[:, self._joint_columns] = joint
        return extra

    def _check_state(self, q: np.ndarray, qdot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = np.asarray(q, dtype=float)
        qdot = np.asarray(qdot, dtype=float)
        for name, value in (('q', q), ('qdot', qdot)):
            if value.shape != (self.dof,):
                raise ValueError(f'{name} must have shape ({self.dof},), got {value.shape}')
            if not np.all(np.isfinite(value)):
                raise ValueError(f'{name} contains NaN or inf')
        return q, qdot

    def _check_commands(self, commands: np.ndarray) -> np.ndarray:
        commands = np.asarray(commands, dtype=float)
        if commands.ndim != 2 or commands.shape[1] != self.dof:
            raise ValueError(f'commands must have shape (N, {self.dof}), got {commands.shape}')
        return commands

    def evaluate(self, q: np.ndarray, qdot: np.ndarray, commands: np.ndarray,
                 previous: np.ndarray | None = None, lead: float | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Worst margin (N, C) of each constraint over each command's sampled path, less the
        tracking allowance (and the lag allowance) for moving commands, and the bound (N,) on
        how far the path strays between samples [m or rad].

        The path starts `lead` seconds after the measured state (default: the configured
        actuation_latency), from the state `predict` gives for the arm following `previous` (the
        last command, or the last `commands_in_flight` of them, oldest first)
        until then (default: the measured velocity, i.e. a servo that had reached its command).
        Malformed input raises ValueError; `is_safe` rejects bad rows instead.
        """
        q, qdot = self._check_state(q, qdot)
        commands = self._check_commands(commands)
        measured_qdot = qdot
        if lead is None:
            lead = self.config.actuation_latency
        if previous is not None:
            previous = np.asarray(previous, dtype=float)
            if previous.shape[-1:] != (self.dof,) or previous.ndim not in (1, 2) \
                    or not len(previous) or not np.all(np.isfinite(previous)):
                raise ValueError(f'previous must be {self.dof} finite values, or (m, '
                                 f'{self.dof}) of them (the commands in flight, oldest first)')
        if lead > 0.0:
            q, qdot = self.predict(q, qdot, qdot if previous is None else previous, lead)
        positions, velocities, durations = swept_path(
            q, qdot, commands, self.period, self.rate, self.config.period_samples,
            self.config.braking_samples)
        count, samples = positions.shape[:2]
        kinematics = self.safe_set.kinematics
        # One FK batch for the current state (row 0, the chords' start) and every sample.
        all_spheres = kinematics.sphere_positions(
            np.concatenate([q[None], positions.reshape(-1, self.dof)]))
        spheres = all_spheres[1:]
        margins = self.safe_set.margins(positions.reshape(-1, self.dof),
                                        velocities.reshape(-1, self.dof), spheres)
        margins = margins.reshape(count, samples, -1)
        # Moving commands keep the tracking allowance on every position margin (m or rad; the
        # velocity margins are rad/s and the servo does not overshoot them); hold is judged on
        # its own terms in `is_safe`.
        velocity_columns = slice(self.dof, 2 * self.dof)
        moving = np.any(commands != 0.0, axis=1)
        required = np.where(moving[:, None], self._allowance[None, :], 0.0)
        positional = np.ones(margins.shape[-1], dtype=bool)
        positional[velocity_columns] = False
        margins = (margins - required[..., None] * positional).min(axis=1)
        if self.config.tracking_time_constant > 0.0:
            margins -= moving[:, None] * self.lag_allowance(measured_qdot, commands, previous)
        # The command itself must respect the velocity limits, even where the ramp would not
        # reach it within this period: repeated, it would be reached.
        margins[:, velocity_columns] = np.minimum(
            margins[:, velocity_columns], self.safe_set.velocity_limit - np.abs(commands))
        # Stretches between consecutive samples, the first from the current state: any point
        # is within half the chord plus the bulge off the chord of one end.
        start = all_spheres[:1]
        spheres = spheres.reshape(count, samples, *spheres.shape[1:])
        spheres = np.concatenate([np.broadcast_to(start, (count, 1, *start.shape[1:])),
                                  spheres], axis=1)
        steps = np.diff(spheres, axis=1)
        chord = np.sqrt(np.einsum('nmsi,nmsi->nms', steps, steps).max(axis=-1))
        speed = stretch_speed(qdot, velocities)
        cartesian_gap = 0.5 * chord + chord_deviation(kinematics.lever_bound, self.rate,
                                                       speed, durations)
        joints = np.concatenate([np.broadcast_to(q, (count, 1, self.dof)), positions], axis=1)
        joint_gap = (0.5 * np.abs(np.diff(joints, axis=1))
                     + self.rate * durations[..., None] ** 2 / 8.0).max(axis=-1)
        gap = np.maximum(cartesian_gap, joint_gap).max(axis=1)
        # Self-collision margins depend on two spheres that both move. Their difference
        # r = c_i - c_j is a curve whose chord between two samples is at most the sum of the
        # two spheres' chords and whose bulge off it at most the sum of their bulges, so r
        # strays at most 2 x `gap` from its value at the nearer sample, and the pair's margin
        # (1-Lipschitz in r) drops at most 2 x `gap` between samples, where a zone or table
        # margin drops at most `gap`. The second `gap` is taken off their sampled minimum
        # here: with `gap` <= sample_gap_limit every point of an accepted path keeps these
        # margins above -sample_gap_limit too, like every other one. Only pairs near contact
        # feel it, and moving apart raises the sampled margins, so the arm does not stall.
        margins[:, self.safe_set.self_collision_columns] -= gap[:, None]
        return margins, gap

    def margins(self, q: np.ndarray, qdot: np.ndarray, commands: np.ndarray,
                previous: np.ndarray | None = None, lead: float | None = None) -> np.ndarray:
        """Worst margin (N,) over all constraints at the samples of each command's path, less the
        tracking allowance for moving commands (accepted moving commands have it >= 0)."""
        return self.evaluate(q, qdot, commands, previous, lead)[0].min(axis=1)

    def is_safe(self, q: np.ndarray, qdot: np.ndarray, commands: np.ndarray,
                previous: np.ndarray | None = None, lead: float | None = None) -> np.ndarray:
        """(N,) booleans: command i keeps the arm in S for the period and can stop in S.

        A moving command is accepted iff every sampled state of its path keeps its position
        margins above the tracking allowance (ramped over the period, see `allowance_profile`)
        and its velocity margins >= 0, and the path strays at most `sample_gap_limit` between
        samples. The hold command (all zeros) is judged against -hold_tolerance instead: its
        path is the braking already checked with the allowance one step earlier, so it stays
        accepted under the tracking errors the allowance absorbs. Malformed rows (NaN, inf) are
        rejected. `previous` and `lead`: see `evaluate`.
        """
        commands = self._check_commands(commands)
        finite = np.all(np.isfinite(commands), axis=1)
        result = np.zeros(len(commands), dtype=bool)
        if finite.any():
            rows = commands[finite]
            margins, gap = self.evaluate(q, qdot, rows, previous, lead)
            threshold = np.where(np.all(rows == 0.0, axis=1), -self.config.hold_tolerance, 0.0)
            result[finite] = (margins.min(axis=1) >= threshold) & (
                gap <= self.config.sample_gap_limit)
        return result

    def hold_is_safe(self, q: np.ndarray, qdot: np.ndarray, previous: np.ndarray | None = None,
                     lead: float | None = None) -> bool:
        """Whether the hold command (brake to rest) is accepted at this state."""
        return bool(self.is_safe(q, qdot, np.zeros((1, self.dof)), previous, lead)[0])

    def explain(self, q: np.ndarray, qdot: np.ndarray, command: np.ndarray,
                previous: np.ndarray | None = None, lead: float | None = None) -> Verdict:
        """The tightest constraint along one command's path (for status messages); a path
        inside S at its samples but too fast for them is reported as 'sample_gap'."""
        margins, gap = self.evaluate(q, qdot, np.asarray(command, dtype=float)[None], previous,
                                     lead)
        margins, gap = margins[0], float(gap[0])
        index = int(np.argmin(margins))
        sampled = margins.copy()  # without the second gap the self-collision margins carry
        sampled[self.safe_set.self_collision_columns] += gap
        if sampled.min() >= 0.0 and gap > self.config.sample_gap_limit:
            return Verdict(False, self.config.sample_gap_limit - gap, 'sample_gap')
        return Verdict(bool(margins[index] >= 0.0), float(margins[index]),
                       self.safe_set.names[index])


class CommandsInFlight:
    """The last `count` commands sent one control period apart, oldest first: what the arm may
    still be following when the next one is judged (`SupportCheck.predict`'s `previous`, with
    `count` = `SupportCheck.commands_in_flight`). All zeros at rest, as at an episode's start."""

    def __init__(self, dof: int, count: int):
        if count < 1:
            raise ValueError(f'count must be at least 1, got {count}')
        self._commands = np.zeros((count, dof))

    def reset(self) -> None:
        self._commands[:] = 0.0

    def push(self, command: np.ndarray) -> None:
        self._commands = np.roll(self._commands, -1, axis=0)
        self._commands[-1] = command

    @property
    def commands(self) -> np.ndarray:
        """(count, dof), oldest first."""
        return self._commands.copy()
