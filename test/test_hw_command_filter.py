"""Command shaping, watchdog and e-stop of the hardware filter, as pure functions (no ROS)."""
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssq_ros.paths import config_path
from ssq_ros.safety.command_filter import (
    CommandGate,
    CommandLimitsConfig,
    JointLimits,
    braking_speed,
    check_command,
    clamp_to_position_limits,
    limit_acceleration,
    scale_to_velocity_limits,
    shape_command,
)
from ssq_ros.safety.robot import load_robot
from ssq_ros.safety.status import SafetyStatus as S

LIMITS = JointLimits(lower=np.array([-1.0, -2.0, -0.5]), upper=np.array([1.0, 2.0, 0.5]),
                     velocity=np.array([1.0, 0.5, 2.0]), acceleration=np.array([4.0, 2.0, 8.0]))
PERIOD = 0.01


def test_velocity_scaling_keeps_direction_and_respects_every_limit():
    v = np.array([2.0, 0.25, -1.0])
    out = scale_to_velocity_limits(v, LIMITS.velocity)
    assert np.allclose(out, v / 2.0)  # joint 0 is twice over its limit: everything halves
    assert np.all(np.abs(out) <= LIMITS.velocity + 1e-12)
    assert np.array_equal(scale_to_velocity_limits(v / 4, LIMITS.velocity), v / 4)


def test_acceleration_limit_moves_straight_towards_the_command():
    prev = np.zeros(3)
    out = limit_acceleration(np.array([1.0, 1.0, 0.0]), prev, LIMITS.acceleration, PERIOD)
    # joint 1 may change by 2*0.01 = 0.02, so the whole change is scaled to 0.02
    assert np.allclose(out, [0.02, 0.02, 0.0])
    assert np.array_equal(limit_acceleration(prev, prev, LIMITS.acceleration, 0.0), prev)


def test_braking_speed_stops_exactly_at_the_distance():
    d, a, t = np.array([0.3]), np.array([2.0]), 0.05
    v = braking_speed(d, a, t)
    assert np.isclose(v * t + v ** 2 / (2 * a), d).all()
    assert braking_speed(np.array([-0.1, 0.0]), np.array([1.0, 1.0]), t).tolist() == [0, 0]


def test_position_clamp_only_cuts_motion_towards_a_limit():
    q = np.array([0.999, 1.99, 0.0])  # joint 0 at its limit, joint 1 near
    v = np.array([0.5, 0.5, 0.5])
    out = clamp_to_position_limits(v, q, LIMITS, PERIOD)
    assert out[0] == pytest.approx(4 * (np.sqrt(PERIOD ** 2 + 2 * 0.001 / 4) - PERIOD))
    assert out[1] < 0.5 and out[2] == 0.5
    away = clamp_to_position_limits(-v, q, LIMITS, PERIOD)
    assert np.array_equal(away, -v)
    beyond = clamp_to_position_limits(np.array([0.5, -0.5, 0.0]), np.array([1.2, 0, 0]),
                                      LIMITS, PERIOD)
    assert beyond[0] == 0.0 and beyond[1] == -0.5


def test_shape_command_names_each_reaction():
    q, prev = np.zeros(3), np.zeros(3)
    _, statuses = shape_command(np.array([0.01, 0, 0]), q, prev, LIMITS, PERIOD, PERIOD)
    assert statuses == ()
    _, statuses = shape_command(np.array([5.0, 0, 0]), q, prev, LIMITS, PERIOD, PERIOD)
    assert statuses == (S.VELOCITY_LIMIT_SCALE, S.ACCELERATION_LIMIT_CLAMP)
    near = np.array([0.9999, 0, 0])
    _, statuses = shape_command(np.array([0.03, 0, 0]), near, np.array([0.03, 0, 0]), LIMITS,
                                PERIOD, PERIOD)
    assert statuses == (S.POSITION_LIMIT_CLAMP,)


@pytest.mark.parametrize('command, reason', [
    ([0.0, 0.0], S.COMMAND_REJECTED_SIZE), ([0.0] * 4, S.COMMAND_REJECTED_SIZE),
    ([0.0, float('nan'), 0.0], S.COMMAND_REJECTED_NONFINITE),
    ([0.0, float('-inf'), 0.0], S.COMMAND_REJECTED_NONFINITE),
    (['a', 0.0, 0.0], S.COMMAND_REJECTED_NONFINITE),
    ([[1.0], 0.0, 0.0], S.COMMAND_REJECTED_NONFINITE),
])
def test_malformed_commands_are_refused_with_their_reason(command, reason):
    assert check_command(command, 3) == (None, reason)


finite = st.floats(-50, 50, allow_nan=False)


@settings(max_examples=400, deadline=None)
@given(cmd=st.lists(finite, min_size=3, max_size=3), prev_frac=st.lists(st.floats(-1, 1),
       min_size=3, max_size=3), q_frac=st.lists(st.floats(0, 1), min_size=3, max_size=3),
       horizon=st.floats(0.001, 0.2), accel_dt=st.floats(0, 0.02))
def test_shaped_command_is_always_within_limits_and_brakes_in_time(cmd, prev_frac, q_frac,
                                                                   horizon, accel_dt):
    q = LIMITS.lower + np.array(q_frac) * (LIMITS.upper - LIMITS.lower)
    prev = np.array(prev_frac) * LIMITS.velocity
    v, _ = shape_command(np.array(cmd), q, prev, LIMITS, horizon, accel_dt)
    assert np.all(np.isfinite(v))
    assert np.all(np.abs(v) <= LIMITS.velocity + 1e-9)
    # Moving at v for the horizon and then braking keeps every joint inside its limits.
    stop_at = q + v * horizon + np.sign(v) * v ** 2 / (2 * LIMITS.acceleration)
    assert np.all(stop_at <= LIMITS.upper + 1e-9) and np.all(stop_at >= LIMITS.lower - 1e-9)


def fresh_gate():
    return CommandGate(LIMITS, PERIOD, state_timeout=0.1, command_timeout=0.1)


def test_gate_stops_until_state_and_command_are_fresh():
    gate = fresh_gate()
    assert gate.step(0.0).statuses == (S.NO_STATE_YET,)
    assert gate.step(0.0).position is None
    gate.update_state(np.zeros(3), 0.0)
    assert gate.step(0.0).statuses == (S.NO_COMMAND_YET,)
    assert gate.submit([0.01, 0.0, 0.0], 0.0) is None
    out = gate.step(0.01)
    assert out.statuses == () and not out.is_stop and out.velocity[0] == pytest.approx(0.01)
    assert out.position[0] == pytest.approx(0.01 * PERIOD)
    # The command ages out: stop while the state is still fresh, holding the measured position.
    gate.update_state(np.array([0.002, 0, 0]), 0.09)
    out = gate.step(0.15)
    assert out.statuses == (S.STALE_COMMAND_STOP,) and out.is_stop
    assert np.array_equal(out.velocity, np.zeros(3)) and out.position[0] == 0.002
    # The state ages out: stop and hold the last measured position.
    gate.submit([0.01, 0, 0], 0.16)
    assert not gate.step(0.17).is_stop
    out = gate.step(0.2)
    assert out.statuses == (S.STALE_STATE_STOP,)
    assert np.array_equal(out.position, gate.measured_position)


def test_gate_refused_command_stops_until_a_valid_one():
    gate = fresh_gate()
    gate.update_state(np.zeros(3), 0.0)
    gate.submit([0.01, 0, 0], 0.0)
    assert gate.step(0.0).velocity[0] > 0
    assert gate.submit([float('nan'), 0, 0], 0.001) is S.COMMAND_REJECTED_NONFINITE
    assert gate.step(0.002).statuses == (S.COMMAND_REJECTED_NONFINITE,)
    assert gate.step(0.003).velocity.tolist() == [0, 0, 0]
    gate.submit([0.005, 0, 0], 0.004)
    assert not gate.step(0.005).is_stop


def test_estop_latches_discards_commands_and_resumes_from_measured_state():
    gate = fresh_gate()
    gate.update_state(np.zeros(3), 0.0)
    gate.submit([0.02, 0, 0], 0.0)
    assert gate.step(0.0).velocity[0] > 0
    gate.estop()
    assert gate.step(0.001).statuses == (S.ESTOPPED,)
    assert gate.submit([0.02, 0, 0], 0.002) is S.ESTOPPED
    assert gate.step(0.003).velocity.tolist() == [0, 0, 0]
    gate.set_button(True)
    gate.set_button(False)  # releasing the button does not reset
    assert gate.estopped
    assert 'fresh joint state' in gate.reset(0.5)  # state is 0.5 s old
    gate.update_state(np.array([0.1, 0, 0]), 0.5)
    assert gate.reset(0.5) is None and not gate.estopped
    # No old command is replayed after the reset.
    assert gate.step(0.51).is_stop
    gate.submit([0.02, 0, 0], 0.52)
    out = gate.step(0.52)
    assert out.statuses == () and out.position[0] == pytest.approx(0.1 + out.velocity[0] * PERIOD)


def test_a_latched_fault_stops_until_reset_and_never_replays_a_command():
    gate = fresh_gate()
    gate.update_state(np.zeros(3), 0.0)
    gate.submit([0.02, 0, 0], 0.0)
    assert gate.step(0.0).velocity[0] > 0
    gate.latch_fault(S.TRACKING_FAULT_STOP)
    assert gate.fault is S.TRACKING_FAULT_STOP and not gate.estopped
    out = gate.step(0.001)
    assert out.statuses == (S.TRACKING_FAULT_STOP,) and out.is_stop
    assert gate.submit([0.02, 0, 0], 0.002) is S.TRACKING_FAULT_STOP
    gate.update_state(np.zeros(3), 0.003)
    assert gate.step(0.003).velocity.tolist() == [0, 0, 0]
    assert gate.reset(0.003) is None and gate.fault is None
    assert gate.step(0.004).is_stop  # no command after the reset yet
    gate.submit([0.02, 0, 0], 0.005)
    assert not gate.step(0.005).is_stop


def test_reset_refused_while_button_held():
    gate = fresh_gate()
    gate.update_state(np.zeros(3), 0.0)
    gate.set_button(True)
    assert 'button' in gate.reset(0.0)
    gate.set_button(False)
    assert gate.reset(0.0) is None


def test_limits_from_the_robot_model_apply_margin_and_scales():
    robot = load_robot(config_path('robot.yaml'))
    cfg = CommandLimitsConfig(velocity_scale=0.5, acceleration_scale=0.25, position_margin=0.1)
    limits = JointLimits.from_robot(robot, cfg)
    assert np.allclose(limits.lower, robot.position_lower + 0.1)
    assert np.allclose(limits.upper, robot.position_upper - 0.1)
    assert np.allclose(limits.velocity, robot.velocity_limit * 0.5)
    assert np.allclose(limits.acceleration, robot.acceleration_limit * 0.25)
    unlimited = dataclasses.replace(robot, acceleration_limit=np.full(robot.dof, np.inf))
    with pytest.raises(ValueError, match='no acceleration_limits'):
        JointLimits.from_robot(unlimited, cfg)


def test_limits_validation():
    with pytest.raises(ValueError, match='lower position limit'):
        JointLimits(np.array([0.0]), np.array([0.0]), np.array([1.0]), np.array([1.0]))
    with pytest.raises(ValueError, match='positive'):
        JointLimits(np.array([0.0]), np.array([1.0]), np.array([0.0]), np.array([1.0]))
    with pytest.raises(ValueError, match='finite'):
        JointLimits(np.array([0.0]), np.array([np.nan]), np.array([1.0]), np.array([1.0]))


def test_actuation_delay_brakes_earlier_near_a_limit():
    """The arm keeps the sent velocity until the controller acts: a longer delay, a lower speed
    toward the limit, and enough to stop inside it when the delay is spent moving."""
    near_upper = LIMITS.upper - 0.02
    speeds = []
    for delay in (0.0, 0.05):
        gate = CommandGate(LIMITS, PERIOD, 0.1, 0.1, actuation_delay=delay)
        gate.update_state(near_upper, 0.0)
        gate.submit(LIMITS.velocity, 0.0)
        for k in range(1, 50):  # ramp up to whatever the clamp allows
            v = gate.step(k * 1e-3).velocity
            gate.update_state(near_upper, k * 1e-3)
        horizon = PERIOD + delay
        stop_at = near_upper + v * horizon + v ** 2 / (2 * LIMITS.acceleration)
        assert np.all(stop_at <= LIMITS.upper + 1e-9)
        speeds.append(v)
    assert np.all(speeds[1] < speeds[0])
    with pytest.raises(ValueError, match='actuation_delay'):
        CommandGate(LIMITS, PERIOD, 0.1, 0.1, actuation_delay=float('nan'))
