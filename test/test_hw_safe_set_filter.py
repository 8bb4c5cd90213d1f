"""The hardware interface's whole-safe-set check, without ROS: real pinocchio kinematics, the real
support check and, for the closed loops, real MuJoCo physics with the referee counting.

A foreign command stream (a script steering the hand into the fixture, or random well-formed
commands) goes through the same `CommandGate` the node runs; the referee must never count an
unsafe state, and nothing the support check refuses may leave the gate.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ssq_ros.safety.command_filter import CommandGate, CommandLimitsConfig, JointLimits
from ssq_ros.safety.safe_set_filter import SCALE_LADDER, SafeSetFilter
from ssq_ros.safety.status import SafetyStatus
from ssq_ros.safety.support import SupportCheck, swept_path
from ssq_ros.sim.env import make_setup
from ssq_ros.sim.simulator import ArmSimulator

HAND_SPEED = 0.2  # m/s toward the target, as the foreign node of the issue did


@pytest.fixture(scope='module')
def setup():
    return make_setup()


def make_filter(setup, period, delay=0.0):
    support = SupportCheck(setup.safe_set, setup.support.config,
                           SafeSetFilter.check_period(period, delay))
    return SafeSetFilter(support)


def make_gate(setup, period, shielded=True):
    # Full URDF speeds: the clamps leave the safety to the safe-set check.
    limits = JointLimits.from_robot(setup.robot, CommandLimitsConfig(velocity_scale=1.0,
                                                                     acceleration_scale=0.5))
    shield = make_filter(setup, period) if shielded else None
    return CommandGate(limits, period, state_timeout=1.0, command_timeout=1.0,
                       safe_set_filter=shield)


def toward(setup, q, target, speed=HAND_SPEED):
    """Damped least squares joint velocities moving the hand at `speed` toward `target`."""
    kin = setup.safe_set.kinematics
    error = target - kin.ee_position(q)
    direction = error / max(np.linalg.norm(error), 1e-9)
    jac = kin.ee_jacobian(q)[:3]
    return jac.T @ np.linalg.solve(jac @ jac.T + 1e-4 * np.eye(3), speed * direction)


def run_closed_loop(setup, gate, command_at, steps):
    """Drive the simulated arm through `gate` for `steps` control periods.

    Returns the referee's unsafe count and minimum margin, the gate's reactions, and the
    moving commands that left the gate with the states they were checked at.
    """
    sim = ArmSimulator(setup.robot, setup.scene, setup.config.physics)
    sim.reset(setup.robot.home)
    period = setup.config.physics.control_period
    unsafe, worst, reactions, sent = 0, np.inf, [], []
    for k in range(steps):
        now = k * period
        q, qdot = sim.q, sim.qdot
        gate.update_state(q, now, qdot)
        gate.submit(command_at(k, q), now)
        out = gate.step(now)
        reactions += out.statuses
        if np.any(out.velocity):
            sent.append((q, qdot, out.velocity))
        verdict = sim.step(out.velocity)
        unsafe += int(verdict.unsafe)
        worst = min(worst, verdict.min_margin)
    return unsafe, worst, reactions, sent


def fixture_centre(setup):
    zone = next(z for z in setup.safe_set.config.keep_out_boxes if z.name == 'fixture')
    return np.array(zone.center)


def test_a_foreign_script_steering_into_the_fixture_is_braked_at_its_boundary(setup):
    period = setup.config.physics.control_period
    target = fixture_centre(setup)
    steps = int(25.0 / period)  # the 25 s of the experiment that reached the fixture centre

    def command_at(k, q):
        return toward(setup, q, target)

    unsafe, worst, reactions, sent = run_closed_loop(setup, make_gate(setup, period),
                                                     command_at, steps)
    braked = reactions.count(SafetyStatus.SAFE_SET_STOP)
    scaled = reactions.count(SafetyStatus.SAFE_SET_SCALE)
    print(f'shielded: {unsafe} unsafe of {steps} periods, referee min margin {worst:.4f} m; '
          f'{scaled} scaled, {braked} braked')
    assert unsafe == 0 and worst >= 0.0
    assert braked + scaled > 0, 'the script never reached the boundary: the test proves nothing'
    # Nothing the support check refuses left the gate (lead 0: checked at the measured state).
    support = make_filter(setup, period).support
    for q, qdot, velocity in sent:
        assert support.is_safe(q, qdot, velocity[None])[0]
    # The same script without the check: the arm enters the zone (the test can fail).
    unsafe_raw, worst_raw, _, _ = run_closed_loop(
        setup, make_gate(setup, period, shielded=False), command_at, steps)
    print(f'unshielded: {unsafe_raw} unsafe, referee min margin {worst_raw:.4f} m')
    assert unsafe_raw > 0


# A command stream: segments of (direction in joint space, periods it is held).
SEGMENTS = st.lists(st.tuples(st.lists(st.floats(-1.0, 1.0), min_size=7, max_size=7),
                              st.integers(2, 25)), min_size=3, max_size=8)


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(segments=SEGMENTS)
def test_random_well_formed_commands_never_leave_the_safe_set(setup, segments):
    period = setup.config.physics.control_period
    vmax = setup.robot.velocity_limit
    stream = [np.array(d) * vmax for d, hold in segments for _ in range(hold)]
    unsafe, worst, _, sent = run_closed_loop(setup, make_gate(setup, period),
                                             lambda k, q: stream[k], len(stream))
    assert unsafe == 0, f'referee min margin {worst}'
    support = make_filter(setup, period).support
    for q, qdot, velocity in sent:
        assert support.is_safe(q, qdot, velocity[None])[0]


def test_a_safe_command_passes_unchanged_and_a_refused_one_is_scaled_or_braked(setup):
    shield = make_filter(setup, 0.01, 0.01)
    home, rest = setup.robot.home, np.zeros(setup.robot.dof)
    small = 0.05 * setup.safe_set.velocity_limit * np.array([1, 0, 0, 0, 0, 0, 0])
    result = shield.filter(home, rest, small, rest, 0.0)
    assert result.scale == 1.0 and not result.refused and result.explain() is None
    np.testing.assert_array_equal(result.velocity, small)
    # Over a velocity limit: refused at full size, passed at a fraction of the ladder.
    fast = 1.5 * setup.safe_set.velocity_limit * np.array([1, 0, 0, 0, 0, 0, 0])
    result = shield.filter(home, rest, fast, rest, 0.0)
    assert 0.0 < result.scale < 1.0 and result.scale in SCALE_LADDER
    assert result.refused and result.explain().constraint.startswith('joint_velocity')
    np.testing.assert_allclose(result.velocity, result.scale * fast)
    # Hold is passed as it is.
    assert shield.filter(home, rest, rest, rest, 0.0).scale == 1.0
    p50, p99, count = shield.timing_ms()
    assert count == 3 and 0.0 < p50 <= p99


def test_prediction_follows_the_previous_command_for_the_lead(setup):
    shield = make_filter(setup, 0.01, 0.02)
    q, rest = setup.robot.home, np.zeros(setup.robot.dof)
    previous = 0.3 * setup.safe_set.velocity_limit
    q_pred, qdot_pred = shield.support.predict(q, rest, previous, 0.05)
    positions, velocities, _ = swept_path(q, rest, previous[None], 0.05, shield.support.rate,
                                          1, 1)
    np.testing.assert_allclose(q_pred, positions[0, 0])
    np.testing.assert_allclose(qdot_pred, velocities[0, 0])
    assert np.all(np.sign(q_pred - q) == np.sign(previous))
    np.testing.assert_array_equal(shield.support.predict(q, rest, previous, 0.0)[0], q)


def test_a_state_past_the_boundary_gets_only_braking(setup):
    """Started inside the fixture (as if pushed there), every command toward it is braked."""
    shield = make_filter(setup, 0.01, 0.01)
    target = fixture_centre(setup)
    q = setup.robot.home.copy()
    kin = setup.safe_set.kinematics
    for _ in range(400):  # walk the hand into the zone along the kinematics alone
        if not setup.safe_set.evaluate(q, np.zeros_like(q)).safe:
            break
        q = q + 0.02 * toward(setup, q, target, speed=1.0)
    assert not setup.safe_set.evaluate(q, np.zeros_like(q)).safe, kin.ee_position(q)
    command = toward(setup, q, target)
    result = shield.filter(q, np.zeros_like(q), command, np.zeros_like(q), 0.0)
    assert result.scale == 0.0 and not np.any(result.velocity)
    assert result.refused and not result.explain().safe


def test_gate_needs_velocities_and_matching_sizes(setup):
    period = 0.01
    gate = make_gate(setup, period)
    with pytest.raises(ValueError, match='velocities'):
        gate.update_state(setup.robot.home, 0.0)
    small_limits = JointLimits(lower=np.zeros(2), upper=np.ones(2), velocity=np.ones(2),
                               acceleration=np.ones(2))
    with pytest.raises(ValueError, match='7 joints'):
        CommandGate(small_limits, period, 0.1, 0.1, safe_set_filter=make_filter(setup, period))


def test_more_than_one_commander_stops_the_arm_unless_allowed(setup):
    period = 0.01
    for allowed in (False, True):
        gate = make_gate(setup, period)
        gate = CommandGate(gate.limits, period, 1.0, 1.0, safe_set_filter=gate.safe_set_filter,
                           allow_multiple_commanders=allowed)
        rest = np.zeros(setup.robot.dof)
        gate.update_state(setup.robot.home, 0.0, rest)
        gate.set_command_publishers(2)
        gate.submit(0.05 * setup.safe_set.velocity_limit, 0.0)
        out = gate.step(0.0)
        if allowed:
            assert SafetyStatus.MULTIPLE_COMMANDERS_STOP not in out.statuses
            assert np.any(out.velocity)
        else:
            assert out.statuses == (SafetyStatus.MULTIPLE_COMMANDERS_STOP,) and out.is_stop
            assert not np.any(out.velocity)
        gate.set_command_publishers(1)
        gate.submit(0.05 * setup.safe_set.velocity_limit, 0.001)
        assert np.any(gate.step(0.001).velocity)


def test_actuation_delay_makes_the_check_look_further_ahead(setup):
    """The same command near the fixture: accepted with no delay, refused with a long one."""
    period = 0.01
    target = fixture_centre(setup)
    rest = np.zeros(setup.robot.dof)
    q = setup.robot.home.copy()
    fast = make_filter(setup, period, 0.0)
    delayed = make_filter(setup, period, 0.3)
    # Approach until the undelayed check first scales the command down.
    for _ in range(2000):
        command = toward(setup, q, target)
        if fast.filter(q, rest, command, rest, 0.0).scale < 1.0:
            break
        q = q + period * command
    else:
        pytest.fail('never reached the boundary')
    q = q - 30 * period * command  # a little way back: fine for the undelayed check
    command = toward(setup, q, target)
    assert fast.filter(q, rest, command, rest, 0.0).scale == 1.0
    assert delayed.filter(q, rest, command, command, 0.3).scale < 1.0
