"""Tracking at run time: does the arm follow the servo model the support check assumes?

The support check's guarantee rests on one assumption (docs/safety.md, "The assumption it rests
on"): the velocity controller ramps toward each command at no less than the modelled rate, after
the modelled actuation latency, lagging at most by the modelled time constant. `TrackingMonitor`
checks it on the measured states, the way a drive's following-error check does: it replays the
sent commands through the same model (`servo_step`: a synchronised ramp at `rate` toward the
command in force `latency` after it was sent, then a first-order lag `time_constant`), anchored
at a measured state, and compares the model's position and velocity with the measured ones.

Sliding window: a new replay is anchored at the measured state every half window; the replays
aged between half a window and a whole one are compared at every measured state (so every
comparison spans W/2..W seconds of sent commands), position by the difference at that state,
velocity by the mean absolute difference over the replay's states. A joint beyond its bound, or
any non-finite value, is a `TrackingFault`; the caller stops the arm (hardware_interface latches
TRACKING_FAULT_STOP until /ssq/estop_reset, like a driver's protective stop).

`servo_response` runs the same model vectorised over candidate parameters (ssq-identify fits
latency, lag and ramp rate to a recording with it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ssq_ros.config import spec


@dataclass(frozen=True)
class TrackingConfig:
    """The run-time tracking check of hardware_interface (`tracking.*` parameters)."""

    enabled: bool = spec(False, doc='compare the measured motion with the servo model of the '
                         'support check and stop the arm (TRACKING_FAULT_STOP, latched until '
                         '/ssq/estop_reset) when it departs by more than the bounds; '
                         'config/hardware.yaml turns it on')
    window: float = spec(0.4, doc='length [s] of the stretch of sent commands one comparison '
                         'replays (between half of it and all of it)', low=0.02, high=10.0)
    position_bound: float = spec(0.08, doc='largest difference [rad or m] of a joint\'s measured '
                                 'position from the model\'s over the window', low=1e-4,
                                 high=1.0)
    velocity_bound: float = spec(0.25, doc='largest mean absolute difference [rad/s or m/s] of a '
                                 'joint\'s measured velocity from the model\'s over the window',
                                 low=1e-4, high=10.0)
    max_step: float = spec(0.002, doc='longest integration step [s] of the model replay',
                           low=1e-4, high=0.05)


@dataclass(frozen=True)
class TrackingFault:
    """The first joint whose measured motion departed from the model beyond its bound."""

    joint: str
    kind: str  # 'position', 'velocity' or 'nonfinite'
    error: float
    bound: float

    def __str__(self) -> str:
        if self.kind == 'nonfinite':
            return f'{self.joint}: non-finite tracking error'
        unit = 'rad/s' if self.kind == 'velocity' else 'rad'
        return (f'{self.joint}: {self.kind} tracking error {self.error:.4f} {unit} exceeds the '
                f'bound {self.bound:.4f} {unit}')


def servo_step(ramp: np.ndarray, lagged: np.ndarray, command: np.ndarray, rate: np.ndarray,
               alpha: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """One step dt of the servo model for (..., n) states: the ramp moves toward `command`
    along a straight line at `rate` (synchronised, the direction kept), then the lagged velocity
    follows the ramp with smoothing factor `alpha` (..., 1) = 1 - exp(-dt / tau) (1: no lag)."""
    change = command - ramp
    with np.errstate(divide='ignore', invalid='ignore'):
        need = (np.abs(change) / rate).max(axis=-1, keepdims=True)
        fraction = np.where(need > dt, dt / need, 1.0)
    ramp = ramp + change * fraction
    return ramp, lagged + (ramp - lagged) * alpha


def lag_factor(time_constant: np.ndarray | float, dt: float) -> np.ndarray:
    """1 - exp(-dt / tau), and 1 where tau == 0."""
    tau = np.asarray(time_constant, dtype=float)
    with np.errstate(divide='ignore'):
        return np.where(tau > 0.0, -np.expm1(-dt / np.where(tau > 0.0, tau, 1.0)), 1.0)


def command_in_force(send_times: np.ndarray, commands: np.ndarray, times: np.ndarray,
                     latency: float, before: np.ndarray) -> np.ndarray:
    """The command (T, n) acting at each time: the last one sent at least `latency` earlier;
    `before` where none was."""
    index = np.searchsorted(send_times + latency, times, side='right') - 1
    out = commands[np.maximum(index, 0)]
    out[index < 0] = before
    return out


def servo_response(times: np.ndarray, send_times: np.ndarray, commands: np.ndarray,
                   q0: np.ndarray, v0: np.ndarray, latencies: np.ndarray,
                   time_constants: np.ndarray, rates: np.ndarray, dt: float = 0.001,
                   anchors: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Positions and velocities (K, T, n) at `times` of K candidate servo models driven by the
    sent `commands` (M, n) at `send_times` (M,), from (q0, v0) at times[0].

    `latencies`, `time_constants` (K,), `rates` (K, n). Before the first command acts the arm
    keeps v0. With `anchors` (indices into `times`, positions, velocities), the model is put
    back at the measured state at those samples (so a position comparison spans one anchor
    interval, not the whole recording).
    """
    times = np.asarray(times, dtype=float)
    latencies = np.asarray(latencies, dtype=float)
    count, n = len(latencies), len(q0)
    grid = np.arange(times[0], times[-1] + dt, dt)
    acting = np.stack([command_in_force(send_times, commands, grid, lat, v0)
                       for lat in latencies])  # (K, G, n)
    alpha = lag_factor(time_constants, dt)[:, None]
    ramp = np.broadcast_to(v0, (count, n)).copy()
    lagged = ramp.copy()
    position = np.broadcast_to(q0, (count, n)).copy()
    grid_q = np.empty((count, len(grid), n))
    grid_v = np.empty((count, len(grid), n))
    anchor_at = {}
    if anchors is not None:
        for index, q, v in zip(*anchors, strict=True):
            anchor_at[int(round((times[index] - times[0]) / dt))] = (q, v)
    for k in range(len(grid)):
        if k in anchor_at:
            q, v = anchor_at[k]
            position[:] = q
            ramp[:] = v
            lagged[:] = v
        grid_q[:, k], grid_v[:, k] = position, lagged
        before = lagged
        ramp, lagged = servo_step(ramp, lagged, acting[:, k], rates, alpha, dt)
        position = position + 0.5 * (before + lagged) * dt
    where = np.clip(np.round((times - times[0]) / dt).astype(int), 0, len(grid) - 1)
    return grid_q[:, where], grid_v[:, where]


class _Replay:
    """The model anchored at one measured state, advanced with the sent commands."""

    def __init__(self, t: float, q: np.ndarray, qdot: np.ndarray) -> None:
        self.start = self.t = t
        self.position = q.copy()
        self.ramp = qdot.copy()
        self.lagged = qdot.copy()
        self.velocity_error = np.zeros_like(q)
        self.samples = 0


class TrackingMonitor:
    """Compares measured states with the servo model replayed from the sent commands.

    Feed it every sent command (`sent`) and every accepted measured state (`measured`, which
    returns a `TrackingFault` or None). `reset` forgets the history (after a gap in the states
    or an e-stop reset). Times are seconds on one monotonic clock.
    """

    def __init__(self, joint_names: tuple[str, ...] | list[str], rate: np.ndarray,
                 latency: float, time_constant: float, config: TrackingConfig) -> None:
        self.joint_names = tuple(joint_names)
        self.rate = np.asarray(rate, dtype=float)
        if self.rate.shape != (len(self.joint_names),) or not np.all(self.rate > 0):
            raise ValueError('tracking: one positive finite ramp rate per joint is needed')
        if not (latency >= 0.0 and time_constant >= 0.0):
            raise ValueError('tracking: latency and time constant must be >= 0')
        self.latency = float(latency)
        self.time_constant = float(time_constant)
        self.config = config
        self.worst_position = np.zeros(len(self.joint_names))
        """Largest position error of each joint compared since the last `reset` [rad or m]."""
        self.worst_velocity = np.zeros(len(self.joint_names))
        """Largest mean velocity error of each joint compared since the last `reset`."""
        self.reset()

    def reset(self) -> None:
        self._commands: list[tuple[float, np.ndarray]] = []
        self._replays: list[_Replay] = []

    def sent(self, t: float, velocity: np.ndarray) -> None:
        """A command sent to the controller at time t (it acts `latency` later)."""
        self._commands.append((float(t), np.array(velocity, dtype=float)))

    def _acting(self, t: float, fallback: np.ndarray) -> np.ndarray:
        acting = fallback
        for sent_at, command in self._commands:
            if sent_at + self.latency <= t:
                acting = command
            else:
                break
        return acting

    def _advance(self, replay: _Replay, t: float) -> None:
        """Step the replay to time t, switching commands where they start to act."""
        alpha_cache: dict[float, np.ndarray] = {}
        acting = self._acting(replay.t, replay.lagged)  # no command yet: keeps its velocity
        switches = [s + self.latency for s, _ in self._commands
                    if replay.t < s + self.latency <= t]
        for end in switches + [t]:
            while replay.t < end - 1e-12:
                dt = min(self.config.max_step, end - replay.t)
                if dt not in alpha_cache:
                    alpha_cache[dt] = lag_factor(self.time_constant, dt)
                before = replay.lagged
                replay.ramp, replay.lagged = servo_step(replay.ramp, replay.lagged, acting,
                                                        self.rate, alpha_cache[dt], dt)
                replay.position = replay.position + 0.5 * (before + replay.lagged) * dt
                replay.t += dt
            replay.t = end
            acting = self._acting(end, acting)

    def measured(self, t: float, q: np.ndarray, qdot: np.ndarray) -> TrackingFault | None:
        """Compare the measured state at time t with the replays old enough to judge."""
        q = np.asarray(q, dtype=float)
        qdot = np.asarray(qdot, dtype=float)
        if not (np.all(np.isfinite(q)) and np.all(np.isfinite(qdot)) and np.isfinite(t)):
            return TrackingFault(self.joint_names[0], 'nonfinite', float('nan'), 0.0)
        window = self.config.window
        fault = None
        for replay in self._replays:
            if t <= replay.t:
                continue
            self._advance(replay, t)
            replay.velocity_error += np.abs(replay.lagged - qdot)
            replay.samples += 1
            if t - replay.start < window / 2:
                continue
            position_error = np.abs(replay.position - q)
            velocity_error = replay.velocity_error / replay.samples
            fault = fault or self._judge(position_error, velocity_error)
        self._replays = [r for r in self._replays if t - r.start < window]
        if not self._replays or t - self._replays[-1].start >= window / 2:
            replay = _Replay(t, q, qdot)
            if self._replays and self._replays[-1].t == t:
                # With a lag the servo's ramp runs ahead of the measured velocity: carry the
                # model's lead over to the new anchor (the first starts with none, at rest).
                newest = self._replays[-1]
                replay.ramp = qdot + (newest.ramp - newest.lagged)
            self._replays.append(replay)
        # Forget commands no replay needs: keep the one in force at the oldest replay's start.
        oldest = self._replays[0].start
        while len(self._commands) > 1 and self._commands[1][0] + self.latency <= oldest:
            self._commands.pop(0)
        return fault

    def _judge(self, position_error: np.ndarray, velocity_error: np.ndarray
               ) -> TrackingFault | None:
        self.worst_position = np.fmax(self.worst_position, position_error)
        self.worst_velocity = np.fmax(self.worst_velocity, velocity_error)
        for kind, error, bound in (('position', position_error, self.config.position_bound),
                                   ('velocity', velocity_error, self.config.velocity_bound)):
            if not np.all(np.isfinite(error)):
                joint = int(np.argmax(~np.isfinite(error)))
                return TrackingFault(self.joint_names[joint], 'nonfinite', float('nan'), bound)
            joint = int(np.argmax(error / bound))
            if error[joint] > bound:
                return TrackingFault(self.joint_names[joint], kind, float(error[joint]), bound)
        return None


SERVO_LOG_FORMAT = 'ssq-servo-log/1'


class ServoRecorder:
    """Writes a servo log: JSON lines of what was sent and what was measured, for ssq-identify.

    First line {"format": "ssq-servo-log/1", "joints": [...]}; then
    {"t": s, "sent": [velocities], "decided": s} per command sent to the controller ("decided":
    the time the gate computed it for, its watchdogs included; the send follows the safe-set
    check) and
    {"t": s, "position": [...], "velocity": [...]} per accepted joint state, t on one
    monotonic clock.
    """

    def __init__(self, path: str, joint_names: tuple[str, ...] | list[str]) -> None:
        self._file = open(path, 'w', encoding='utf-8', buffering=1 << 16)  # noqa: SIM115
        self._write({'format': SERVO_LOG_FORMAT, 'joints': list(joint_names)})

    def _write(self, record: dict) -> None:
        import json
        self._file.write(json.dumps(record, separators=(',', ':')) + '\n')

    def sent(self, t: float, velocity: np.ndarray, decided: float | None = None) -> None:
        record = {'t': float(t), 'sent': [float(x) for x in velocity]}
        if decided is not None:
            record['decided'] = float(decided)
        self._write(record)

    def measured(self, t: float, position: np.ndarray, velocity: np.ndarray) -> None:
        self._write({'t': float(t), 'position': [float(x) for x in position],
                     'velocity': [float(x) for x in velocity]})

    def close(self) -> None:
        self._file.close()


@dataclass(frozen=True)
class ServoLog:
    """A recording: sent commands (M,), (M, n) and measured states (T,), (T, n), (T, n)."""

    joints: tuple[str, ...]
    send_times: np.ndarray
    commands: np.ndarray
    times: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray
    decide_times: np.ndarray
    """(M,) when each sent command was decided (NaN where the recorder did not say)"""


def read_servo_log(path: str) -> ServoLog:
    """Read a `ServoRecorder` file; ValueError if it is not one or holds too little."""
    import json
    send_times, commands, times, positions, velocities, decided = [], [], [], [], [], []
    with open(path, encoding='utf-8') as f:
        header = json.loads(f.readline() or '{}')
        if header.get('format') != SERVO_LOG_FORMAT:
            raise ValueError(f'{path}: not a servo log ({SERVO_LOG_FORMAT} header missing)')
        for number, line in enumerate(f, start=2):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                if number > 2 and not line.endswith('\n'):
                    break  # a recording cut off mid-line (killed node): keep what came before
                raise ValueError(f'{path}:{number}: {exc}') from exc
            if 'sent' in record:
                send_times.append(record['t'])
                commands.append(record['sent'])
                decided.append(record.get('decided', math.nan))
            else:
                times.append(record['t'])
                positions.append(record['position'])
                velocities.append(record['velocity'])
    if len(send_times) < 2 or len(times) < 10:
        raise ValueError(f'{path}: too short to identify anything ({len(send_times)} commands, '
                         f'{len(times)} states)')
    return ServoLog(tuple(header['joints']), np.array(send_times), np.array(commands, float),
                    np.array(times), np.array(positions, float), np.array(velocities, float),
                    np.array(decided, float))
