"""ssq-identify: estimate the servo model of the support check from a recording.

The support check models the arm's velocity controller as a synchronised ramp toward each
command at `deceleration_fraction` x the acceleration limits, acting `actuation_latency` after
the command is sent, with a first-order lag `tracking_time_constant` behind the ramp
(ssq_ros/safety/support.py, ssq_ros/safety/tracking.py). This command fits those three numbers to
a recording of what was sent and what was measured (hardware_interface's `record_path`, a
JSON-lines servo log) by least squares over a grid: every candidate model is driven by the sent
commands from the first measured state and its velocities are compared with the measured ones
(RMS over joints and samples); the best candidate's neighbourhood is searched again on a grid
five times finer. The position residual is reported with the model put back at the measured
state every `--anchor` seconds. It prints the estimates, their residuals and the lines to paste
into the safe-set yaml's `support` section.

MCAP bags are not read: record with `record_path` (docs/hardware.md, "Tracking at run time").
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import numpy as np

from ssq_ros.safety.tracking import ServoLog, lag_factor, read_servo_log, servo_step


@dataclass(frozen=True)
class ServoFit:
    """The best model and its residuals."""

    fraction: float
    latency: float
    time_constant: float
    velocity_rms: float
    position_rms: float
    ideal_velocity_rms: float
    """velocity RMS of the model the support check would use without identification (the
    fraction given, no latency, no lag), for comparison"""


def model_residuals(log: ServoLog, acceleration: np.ndarray, fractions: np.ndarray,
                    latencies: np.ndarray, time_constants: np.ndarray, dt: float = 0.002,
                    anchor: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Velocity and position RMS (K,) of K candidate models (fractions, latencies,
    time_constants: (K,) each) against the recording. The velocity model runs freely from the
    first measured state; positions are put back at the measured ones every `anchor` s."""
    fractions = np.asarray(fractions, dtype=float)
    latencies = np.asarray(latencies, dtype=float)
    count, n = len(fractions), log.commands.shape[1]
    rates = fractions[:, None] * acceleration[None, :]
    times = log.times
    grid = np.arange(times[0], times[-1] + dt / 2, dt)
    # The command acting at each grid time, per distinct latency (K x G indices into commands,
    # -1 before the first command acts).
    unique, which = np.unique(latencies, return_inverse=True)
    index = np.stack([np.searchsorted(log.send_times + lat, grid, side='right') - 1
                      for lat in unique])[which]
    commands = np.concatenate([log.velocities[:1], log.commands])  # row 0: keep v0
    alpha = lag_factor(np.asarray(time_constants, dtype=float), dt)[:, None]
    sample_at = np.searchsorted(grid, times - dt / 2)  # nearest grid step at or after
    sample_at = np.minimum(sample_at, len(grid) - 1)
    samples_by_step: dict[int, list[int]] = {}
    for i, k in enumerate(sample_at):
        samples_by_step.setdefault(int(k), []).append(i)
    anchor_every = max(1, int(round(anchor / dt)))
    ramp = np.broadcast_to(log.velocities[0], (count, n)).copy()
    lagged = ramp.copy()
    position = np.broadcast_to(log.positions[0], (count, n)).copy()
    velocity_sq = np.zeros(count)
    position_sq = np.zeros(count)
    compared = 0
    last_anchor = 0
    for k in range(len(grid)):
        for i in samples_by_step.get(k, ()):
            velocity_sq += ((lagged - log.velocities[i]) ** 2).sum(axis=1)
            position_sq += ((position - log.positions[i]) ** 2).sum(axis=1)
            compared += 1
            if k - last_anchor >= anchor_every:
                position[:] = log.positions[i]
                last_anchor = k
        before = lagged
        ramp, lagged = servo_step(ramp, lagged, commands[index[:, k] + 1], rates, alpha, dt)
        position = position + 0.5 * (before + lagged) * dt
    scale = max(compared * n, 1)
    return np.sqrt(velocity_sq / scale), np.sqrt(position_sq / scale)


def _grid(low: float, high: float, step: float) -> np.ndarray:
    return np.round(np.arange(low, high + step / 2, step), 10)


def fit_servo(log: ServoLog, acceleration: np.ndarray, fractions: np.ndarray | None = None,
              max_latency: float = 0.1, max_time_constant: float = 0.1, dt: float = 0.002,
              anchor: float = 0.5, nominal_fraction: float = 0.5) -> ServoFit:
    """Grid search, then a five times finer grid around the best; see the module doc."""
    acceleration = np.asarray(acceleration, dtype=float)
    fractions = _grid(0.25, 1.0, 0.125) if fractions is None else np.asarray(fractions)
    latencies = _grid(0.0, max_latency, max(max_latency / 10, dt))
    taus = _grid(0.0, max_time_constant, max(max_time_constant / 10, dt))
    f, lat, tau = (a.ravel() for a in np.meshgrid(fractions, latencies, taus, indexing='ij'))
    velocity, _ = model_residuals(log, acceleration, f, lat, tau, dt, anchor)
    best = int(np.argmin(velocity))
    steps = (fractions[1] - fractions[0] if len(fractions) > 1 else 0.0,
             latencies[1] - latencies[0], taus[1] - taus[0])
    centre = (f[best], lat[best], tau[best])
    fine = [np.clip(c + s * np.linspace(-1, 1, 11), low, high)
            for c, s, low, high in zip(centre, steps, (0.01, 0.0, 0.0),
                                       (1.0, max_latency, max_time_constant), strict=True)]
    # The latency lives on the integration grid: its fine steps are multiples of dt.
    fine[1] = np.unique(np.round(fine[1] / dt) * dt)
    f, lat, tau = (a.ravel() for a in np.meshgrid(*(np.unique(x) for x in fine), indexing='ij'))
    velocity, position = model_residuals(log, acceleration, f, lat, tau, dt, anchor)
    best = int(np.argmin(velocity))
    ideal, _ = model_residuals(log, acceleration, np.array([nominal_fraction]), np.zeros(1),
                               np.zeros(1), dt, anchor)
    return ServoFit(float(f[best]), float(lat[best]), float(tau[best]), float(velocity[best]),
                    float(position[best]), float(ideal[0]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog='ssq-identify', description='Estimate actuation latency, first-order lag and '
        'the achieved ramp fraction from a servo log (hardware_interface record_path).')
    parser.add_argument('log', help='JSON-lines servo log written by hardware_interface')
    parser.add_argument('--config', default='', help="experiment yaml naming the robot and "
                        "safe set ('' is train_sim.yaml)")
    parser.add_argument('--robot', default='', help='robot yaml (acceleration limits); '
                        'default: the one --config names')
    parser.add_argument('--max-latency', type=float, default=0.1, help='[s] searched')
    parser.add_argument('--max-time-constant', type=float, default=0.1, help='[s] searched')
    parser.add_argument('--dt', type=float, default=0.002, help='model step [s]')
    parser.add_argument('--anchor', type=float, default=0.5,
                        help='[s] between re-anchoring the position residual')
    args = parser.parse_args(argv)

    from ssq_ros.safety.robot import load_robot
    from ssq_ros.safety.support import load_support_config
    from ssq_ros.training.config import load_run_config, resolve_config_file

    try:
        experiment = load_run_config(args.config)
        robot = load_robot(args.robot or str(resolve_config_file(experiment.robot)))
        support = load_support_config(resolve_config_file(experiment.safe_set))
        log = read_servo_log(args.log)
    except (OSError, ValueError) as exc:
        print(f'ssq-identify: {exc}', file=sys.stderr)
        sys.exit(2)
    if tuple(log.joints) != tuple(robot.joint_names):
        print(f'ssq-identify: the log is for joints {log.joints}, the robot yaml names '
              f'{robot.joint_names}', file=sys.stderr)
        sys.exit(2)
    fit = fit_servo(log, robot.acceleration_limit, max_latency=args.max_latency,
                    max_time_constant=args.max_time_constant, dt=args.dt, anchor=args.anchor,
                    nominal_fraction=support.deceleration_fraction)
    print(f'{args.log}: {len(log.send_times)} commands, {len(log.times)} joint states over '
          f'{log.times[-1] - log.times[0]:.1f} s')
    print(f'  ramp fraction     {fit.fraction:.3f} of the acceleration limits')
    print(f'  actuation latency {fit.latency * 1e3:.1f} ms')
    print(f'  lag (time const.) {fit.time_constant * 1e3:.1f} ms')
    print(f'  residuals: velocity RMS {fit.velocity_rms:.4f} rad/s (the current model, '
          f'fraction {support.deceleration_fraction:g}, no latency or lag: '
          f'{fit.ideal_velocity_rms:.4f}); position RMS {fit.position_rms:.5f} rad over '
          f'{args.anchor:g} s from each anchor')
    fraction = min(support.deceleration_fraction, fit.fraction)
    print('\nsupport section of the safe-set yaml (latency rounded up to the model step; '
          'keep deceleration_fraction at or below the fitted fraction):')
    print(f'  deceleration_fraction: {fraction:g}')
    print(f'  actuation_latency: {np.ceil(fit.latency / args.dt - 1e-9) * args.dt:.3f}')
    print(f'  tracking_time_constant: {fit.time_constant:.3f}')
    print('\nconfig/hardware.yaml (hardware_interface; its look-ahead covers at least the '
          'latency, plus transport):')
    print(f'    actuation_delay: {np.ceil(fit.latency / args.dt - 1e-9) * args.dt:.3f}')


if __name__ == '__main__':
    main()
