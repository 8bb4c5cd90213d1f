"""The run-time tracking check: synthetic traces of good, lagging, slipping and broken servos."""
import numpy as np
import pytest

from ssq_ros.safety.tracking import (
    TrackingConfig,
    TrackingMonitor,
    command_in_force,
    servo_response,
)

JOINTS = ('j1', 'j2', 'j3')
RATE = np.array([5.0, 4.0, 6.0])
PERIOD, STATE_PERIOD, DURATION = 0.01, 0.005, 3.0
CONFIG = TrackingConfig(enabled=True)


def commands(seed=0):
    """Piecewise-constant velocity commands, a new random target every 0.25 s."""
    rng = np.random.default_rng(seed)
    send = np.arange(0.0, DURATION, PERIOD)
    targets = rng.uniform(-0.6, 0.6, (int(DURATION / 0.25) + 1, len(JOINTS)))
    return send, targets[(send / 0.25).astype(int)]


def trace(latency=0.0, tau=0.0, rate=RATE, seed=0):
    send, values = commands(seed)
    times = np.arange(0.0, DURATION, STATE_PERIOD)
    q, v = servo_response(times, send, values, np.zeros(3), np.zeros(3), np.array([latency]),
                          np.array([tau]), np.asarray(rate)[None], dt=0.0005)
    return send, values, times, q[0], v[0]


def replay(monitor, send, values, times, q, v):
    """Feed commands and states in time order; the first fault, or None."""
    events = sorted([(t, 0, i) for i, t in enumerate(send)]
                    + [(t, 1, i) for i, t in enumerate(times)])
    for t, kind, i in events:
        if kind == 0:
            monitor.sent(t, values[i])
        else:
            fault = monitor.measured(t, q[i], v[i])
            if fault is not None:
                return t, fault
    return None


def test_command_in_force_waits_for_the_latency():
    send = np.array([0.0, 0.1])
    values = np.array([[1.0], [2.0]])
    acting = command_in_force(send, values, np.array([0.0, 0.01, 0.02, 0.11, 0.13]), 0.02,
                              np.array([9.0]))
    assert acting[:, 0].tolist() == [9.0, 9.0, 1.0, 1.0, 2.0]


@pytest.mark.parametrize('latency,tau', [(0.0, 0.0), (0.02, 0.0), (0.01, 0.03)])
def test_a_servo_that_follows_the_model_passes(latency, tau):
    monitor = TrackingMonitor(JOINTS, RATE, latency, tau, CONFIG)
    assert replay(monitor, *trace(latency, tau)) is None
    assert monitor.worst_position.max() < 0.1 * CONFIG.position_bound
    assert monitor.worst_velocity.max() < 0.1 * CONFIG.velocity_bound


def test_a_lagging_servo_trips_on_the_joint_that_lags():
    monitor = TrackingMonitor(JOINTS, RATE, 0.0, 0.0, CONFIG)
    result = replay(monitor, *trace(tau=0.25))
    assert result is not None
    t, fault = result
    assert fault.kind in ('position', 'velocity') and fault.error > fault.bound
    assert fault.joint in JOINTS and t <= 1.0
    assert 'exceeds the bound' in str(fault)


def test_a_servo_slower_than_the_modelled_ramp_trips():
    monitor = TrackingMonitor(JOINTS, RATE, 0.0, 0.0, CONFIG)
    assert replay(monitor, *trace(rate=RATE * 0.1)) is not None


def test_a_slipping_joint_trips_and_names_it():
    send, values, times, q, v = trace()
    slipped = q.copy()
    slipped[:, 1] += np.clip(times - 1.0, 0.0, None) * 0.4  # drifts at 0.4 rad/s after 1 s
    monitor = TrackingMonitor(JOINTS, RATE, 0.0, 0.0, CONFIG)
    t, fault = replay(monitor, send, values, times, slipped, v)
    assert fault.joint == 'j2' and fault.kind == 'position' and 1.0 < t < 1.6


def test_a_joint_that_does_not_move_trips():
    send, values, times, q, v = trace()
    frozen = np.zeros_like(q)
    monitor = TrackingMonitor(JOINTS, RATE, 0.0, 0.0, CONFIG)
    assert replay(monitor, send, values, times, frozen, np.zeros_like(v)) is not None


def test_nan_never_passes():
    send, values, times, q, v = trace()
    for array in (q, v):
        bad = array.copy()
        bad[150, 2] = np.nan
        monitor = TrackingMonitor(JOINTS, RATE, 0.0, 0.0, CONFIG)
        args = (bad, v) if array is q else (q, bad)
        t, fault = replay(monitor, send, values, times, *args)
        assert fault.kind == 'nonfinite' and t == times[150]
    monitor = TrackingMonitor(JOINTS, RATE, 0.0, 0.0, CONFIG)
    monitor.sent(0.0, np.array([np.nan, 0.0, 0.0]))
    faults = [monitor.measured(t, np.zeros(3), np.zeros(3)) for t in times[:100]]
    assert any(f is not None and f.kind == 'nonfinite' for f in faults)


def test_reset_forgets_the_history():
    send, values, times, q, v = trace()
    monitor = TrackingMonitor(JOINTS, RATE, 0.0, 0.0, CONFIG)
    frozen = np.zeros(3)
    for t, c in zip(send[:50], values[:50], strict=True):
        monitor.sent(t, c)
        monitor.measured(t, frozen, frozen)
    monitor.reset()
    assert all(monitor.measured(t, frozen, frozen) is None for t in np.arange(1.0, 2.0, 0.005))


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError):
        TrackingMonitor(JOINTS, RATE[:2], 0.0, 0.0, CONFIG)
    with pytest.raises(ValueError):
        TrackingMonitor(JOINTS, RATE, -0.1, 0.0, CONFIG)
