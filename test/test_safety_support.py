"""The support check: model path math, rejection of unsafe commands, hold always available."""
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssq_ros.config import ConfigError
from ssq_ros.paths import config_path
from ssq_ros.safety.robot import build_robot, load_robot
from ssq_ros.safety.safe_set import SafeSet, load_safe_set_config
from ssq_ros.safety.support import (
    CommandsInFlight,
    SupportCheck,
    allowance_profile,
    chord_deviation,
    load_support_config,
    ramp_displacement,
    stretch_speed,
    swept_path,
)

PERIOD = 0.05


@pytest.fixture(scope='module')
def support():
    robot = load_robot(config_path('robot.yaml'))
    safe_set = SafeSet(robot, load_safe_set_config(config_path('safe_set.yaml')))
    return SupportCheck(safe_set, load_support_config(config_path('safe_set.yaml')), PERIOD)


def test_ramp_displacement_integrates_a_linear_velocity_ramp():
    start, target = np.array([[0.2, -0.4]]), np.array([[1.0, 0.4]])
    duration = np.array([0.3])
    times = np.linspace(0.0, 0.6, 601)
    displacement = ramp_displacement(start, target, duration, times)[0]
    velocity = start + (target - start) * np.minimum(1.0, times / 0.3)[:, None]
    numeric = np.cumsum(velocity, axis=0) * (times[1] - times[0])
    assert np.allclose(displacement, numeric - velocity[0] * (times[1] - times[0]), atol=2e-3)
    instant = ramp_displacement(target, target, np.array([0.0]), times)[0]
    assert np.allclose(instant, target * times[:, None])


def test_braking_ends_at_rest_after_the_braking_distance():
    rate = np.array([2.0, 4.0])
    q, command = np.zeros(2), np.array([[1.0, 1.0]])
    positions, velocities, durations = swept_path(q, command, command, PERIOD, rate, 3, 5)
    assert np.allclose(velocities[0, -1], 0.0)
    assert np.allclose(velocities[0, :3], command)  # already at the command: no ramp
    # Synchronised braking stops both joints in 1.0/2.0 s: travel 1.0 * 0.5 / 2 = 0.25.
    assert np.allclose(positions[0, -1], PERIOD * command[0] + 0.25)
    assert np.allclose(durations[0], [PERIOD / 3] * 3 + [0.5 / 5] * 5)


def test_a_ramp_of_a_few_denormals_is_an_instant_switch_without_numpy_warnings():
    """A command a denormal away from the velocity (the fuzz campaign found one) ramps in no
    time: the path holds the command from the first sample, and nothing overflows."""
    commands = np.array([[1e-310, 0.0], [0.5, 0.1]])
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        positions, velocities, _ = swept_path(np.zeros(2), np.zeros(2), commands, PERIOD,
                                              np.array([1.0, 1.0]), 4, 4)
    assert np.all(np.isfinite(positions))
    assert np.array_equal(velocities[0, :4], np.broadcast_to(commands[0], (4, 2)))
    assert np.allclose(velocities[1, :4, 0], [0.0125, 0.025, 0.0375, 0.05])


def test_chord_deviation_bounds_the_bulge_between_samples(support):
    """Sphere centres on a 40x denser path stay within the bound of the coarse chords."""
    rng = np.random.default_rng(0)
    robot, kin = support.safe_set.robot, support.safe_set.kinematics
    q = robot.home + rng.uniform(-0.3, 0.3, 7)
    qdot = rng.uniform(-0.5, 0.5, 7)
    commands = rng.uniform(-1, 1, (10, 7))
    coarse = swept_path(q, qdot, commands, PERIOD, support.rate, 1, 1)
    fine = swept_path(q, qdot, commands, PERIOD, support.rate, 40, 40)
    bound = chord_deviation(kin.lever_bound, support.rate, stretch_speed(qdot, coarse[1]),
                            coarse[2])
    start = kin.sphere_positions(q)[0]
    for row in range(10):
        ends = np.concatenate([start[None], kin.sphere_positions(coarse[0][row])])
        dense = kin.sphere_positions(fine[0][row])
        for k, stretch in enumerate((dense[:40], dense[40:])):
            a, b = ends[k], ends[k + 1]
            t = np.clip(np.sum((stretch - a) * (b - a), -1) / np.maximum(
                np.sum((b - a) ** 2, -1), 1e-18), 0, 1)
            off_chord = np.linalg.norm(stretch - (a + t[..., None] * (b - a)), axis=-1)
            assert off_chord.max() <= bound[row, k] + 1e-12


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2 ** 31))
def test_accepted_paths_are_safe_everywhere_not_only_at_samples(support, seed):
    """Commands the coarse check accepts keep every state of a 40x denser path within the
    sample gap of S (and so inside the clearance, far from the real limits)."""
    rng = np.random.default_rng(seed)
    safe_set = support.safe_set
    q = np.array([0.0, -0.251, 0.0, -2.186, 0.0, 2.044, 0.785]) + rng.uniform(-0.2, 0.2, 7)
    qdot = rng.uniform(-0.3, 0.3, 7) * safe_set.velocity_limit
    commands = rng.uniform(-1, 1, (32, 7)) * safe_set.velocity_limit
    accepted = commands[support.is_safe(q, qdot, commands)]
    if not len(accepted):
        return
    positions, velocities, _ = swept_path(q, qdot, accepted, PERIOD, support.rate, 150, 150)
    dense = safe_set.margins(positions.reshape(-1, 7), velocities.reshape(-1, 7))
    assert dense.min() >= -support.config.sample_gap_limit


def test_commands_into_a_keep_out_zone_are_rejected(support):
    kin, safe_set = support.safe_set.kinematics, support.safe_set
    # The hand 10 cm above the fixture, already moving down: going on is rejected, while
    # braking (hold) and reversing are accepted.
    q = np.array([0.0, -0.251, 0.0, -2.186, 0.0, 2.044, 0.785])
    assert np.allclose(kin.ee_position(q), [0.5, 0.0, 0.4], atol=2e-3)
    down = np.linalg.pinv(kin.ee_jacobian(q)) @ np.array([0.0, 0.0, -1.0])
    down *= 0.9 * safe_set.velocity_limit.min() / np.abs(down).max()
    qdot = 0.6 * down
    assert safe_set.evaluate(q, qdot).safe
    verdict = support.explain(q, qdot, down)
    assert not verdict.safe and verdict.constraint == 'keep_out:fixture'
    ok = support.is_safe(q, qdot, np.stack([down, np.zeros(7), -down]))
    assert list(ok) == [False, True, True]
    # Faster still, not even braking at the configured deceleration stops in time.
    assert not support.hold_is_safe(q, down)


def test_too_fast_and_malformed_commands_are_rejected(support):
    home = support.safe_set.robot.home
    fast = np.zeros(7)
    fast[0] = support.safe_set.velocity_limit[0] * 1.05
    slow = fast / 2
    bad = np.full(7, np.nan)
    ok = support.is_safe(home, np.zeros(7), np.stack([fast, slow, bad, np.zeros(7)]))
    assert list(ok) == [False, True, False, True]
    assert support.explain(home, np.zeros(7), fast).constraint == 'joint_velocity:ssq_joint1'
    with pytest.raises(ValueError, match='shape'):
        support.is_safe(home, np.zeros(7), np.zeros((2, 6)))
    with pytest.raises(ValueError, match='qdot contains NaN'):
        support.is_safe(home, np.full(7, np.nan), np.zeros((1, 7)))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2 ** 31))
def test_hold_stays_safe_after_any_accepted_command(support, seed):
    """From the state an accepted command leads to, the hold command is accepted too."""
    rng = np.random.default_rng(seed)
    robot, safe_set = support.safe_set.robot, support.safe_set
    q = np.clip(robot.home + rng.uniform(-0.6, 0.6, 7), safe_set.position_lower,
                safe_set.position_upper)
    qdot = rng.uniform(-0.5, 0.5, 7) * safe_set.velocity_limit
    commands = rng.uniform(-1, 1, (64, 7)) * safe_set.velocity_limit
    accepted = commands[support.is_safe(q, qdot, commands)]
    positions, velocities, _ = swept_path(q, qdot, accepted, PERIOD, support.rate,
                                       support.config.period_samples,
                                       support.config.braking_samples)
    step = support.config.period_samples - 1
    for q_next, qdot_next in zip(positions[:, step], velocities[:, step], strict=True):
        assert support.hold_is_safe(q_next, qdot_next)
        # The allowance the moving command kept is what hold has left for tracking errors.
        assert support.margins(q_next, qdot_next, np.zeros((1, 7)))[0] >= 0.0


def test_allowance_ramps_over_the_period_and_holds_along_the_braking():
    assert np.allclose(allowance_profile(0.003, 3, 2), [0.001, 0.002, 0.003, 0.003, 0.003])
    assert np.allclose(allowance_profile(0.0, 3, 4), 0.0)


def test_moving_commands_keep_the_tracking_allowance_and_hold_does_not(support):
    """Same paths, allowance on and off: moving commands lose exactly the allowance on the
    position margins (not on the velocity ones), hold loses nothing."""
    rng = np.random.default_rng(4)
    safe_set = support.safe_set
    q = safe_set.robot.home + rng.uniform(-0.2, 0.2, 7)
    qdot = rng.uniform(-0.3, 0.3, 7) * safe_set.velocity_limit
    commands = np.concatenate([np.zeros((1, 7)),
                               rng.uniform(-0.5, 0.5, (8, 7)) * safe_set.velocity_limit])
    bare = SupportCheck(safe_set, replace(support.config, tracking_allowance=0.0), PERIOD)
    with_allowance, without = support.evaluate(q, qdot, commands)[0], \
        bare.evaluate(q, qdot, commands)[0]
    velocity = slice(7, 14)
    assert np.allclose(with_allowance[0], without[0])
    assert np.allclose(with_allowance[1:, velocity], without[1:, velocity])
    position = np.ones(with_allowance.shape[1], dtype=bool)
    position[velocity] = False
    shortfall = without[1:][:, position] - with_allowance[1:][:, position]
    assert np.all(shortfall > 0) and np.all(shortfall <= support.config.tracking_allowance + 1e-12)


def test_hold_at_rest_in_a_safe_state_passes(support):
    rng = np.random.default_rng(3)
    safe_set = support.safe_set
    qs = rng.uniform(safe_set.position_lower, safe_set.position_upper, (300, 7))
    safe = safe_set.margins(qs, np.zeros((300, 7))).min(axis=1) >= 0
    assert safe.sum() > 10
    for q in qs[safe]:
        assert support.hold_is_safe(q, np.zeros(7))


def test_missing_acceleration_limits_are_refused(support):
    robot = support.safe_set.robot
    unlimited = build_robot(replace(robot.config, acceleration_limits=None))
    safe_set = SafeSet(unlimited, support.safe_set.config)
    with pytest.raises(ConfigError, match='acceleration_limits'):
        SupportCheck(safe_set, support.config, PERIOD)
    with pytest.raises(ValueError, match='period'):
        SupportCheck(support.safe_set, support.config, 0.0)
    with pytest.raises(ConfigError, match='sample_gap_limit'):
        SupportCheck(support.safe_set, replace(support.config, sample_gap_limit=0.025), PERIOD)


def test_paths_too_fast_for_their_samples_are_refused(support):
    coarse = SupportCheck(support.safe_set, replace(support.config, period_samples=1,
                                                    braking_samples=1), PERIOD)
    fast = support.safe_set.velocity_limit * np.array([1, 1, 1, 1, 0, 0, 0]) * 0.9
    home = support.safe_set.robot.home
    assert coarse.explain(home, fast, fast).constraint == 'sample_gap'
    assert not coarse.is_safe(home, fast, fast[None])[0]


# --- actuation latency and servo lag (issue 16 part 3) --------------------------------------

def test_defaults_reproduce_the_previous_check_bitwise(support):
    """test/data/support_reference.npz holds margins, gaps and filtered commands computed by the
    check before it modelled latency and lag (commit b584fa1); the defaults (both 0) must give
    the very same numbers, and the safe-set filter the same commands."""
    from ssq_ros.safety.safe_set_filter import SafeSetFilter
    ref = np.load(Path(__file__).parent / 'data' / 'support_reference.npz')
    assert support.config.actuation_latency == 0.0
    assert support.config.tracking_time_constant == 0.0
    wide = SupportCheck(support.safe_set, support.config, 0.06)
    for i in range(len(ref['q'])):
        margins, gap = support.evaluate(ref['q'][i], ref['qdot'][i], ref['commands'][i])
        assert np.array_equal(margins, ref['margins'][i])
        assert np.array_equal(gap, ref['gap'][i])
        result = SafeSetFilter(wide).filter(ref['q'][i], ref['qdot'][i], ref['commands'][i][1],
                                            ref['previous'][i], float(ref['lead'][i]))
        assert np.array_equal(result.velocity, ref['filtered'][i])


def test_latency_judges_from_the_state_predicted_under_the_previous_command(support):
    latency = 0.02
    late = SupportCheck(support.safe_set, replace(support.config, actuation_latency=latency),
                        PERIOD)
    rng = np.random.default_rng(3)
    for _ in range(10):
        q = rng.uniform(-0.5, 0.5, support.dof)
        qdot = rng.uniform(-0.3, 0.3, support.dof)
        previous = rng.uniform(-0.3, 0.3, support.dof)
        commands = rng.uniform(-0.5, 0.5, (5, support.dof))
        q_act, qdot_act = support.predict(q, qdot, previous, latency)
        assert np.array_equal(late.margins(q, qdot, commands, previous),
                              support.margins(q_act, qdot_act, commands))
        # Without the previous command the arm is taken to keep its measured velocity.
        q_keep, qdot_keep = support.predict(q, qdot, qdot, latency)
        assert np.allclose(q_keep, q + qdot * latency) and np.allclose(qdot_keep, qdot)
        assert np.array_equal(late.margins(q, qdot, commands),
                              support.margins(q_keep, qdot_keep, commands))
        # An explicit lead overrides the configured latency (the hardware interface's own).
        assert np.array_equal(late.margins(q, qdot, commands, previous, 0.0),
                              support.margins(q, qdot, commands))


@pytest.mark.parametrize('latency, count', [(0.0, 1), (0.02, 1), (PERIOD, 1), (0.052, 2),
                                             (0.1, 2), (0.2, 4)])
def test_the_commands_in_flight_are_the_last_latency_over_period(support, latency, count):
    late = SupportCheck(support.safe_set, replace(support.config, actuation_latency=latency),
                        PERIOD)
    assert late.commands_in_flight == count


def test_prediction_follows_each_command_in_flight_for_its_period(support):
    """Latency 120 ms at 50 ms periods: the command sent 3 periods ago acts for the first 20 ms
    of the lead, the one of 2 periods ago for the next 50, the last one for the last 50."""
    rng = np.random.default_rng(4)
    q, qdot = rng.uniform(-0.5, 0.5, support.dof), rng.uniform(-0.3, 0.3, support.dof)
    in_flight = rng.uniform(-0.4, 0.4, (3, support.dof))
    expected_q, expected_qdot = q, qdot
    for command, span in zip(in_flight, (0.02, PERIOD, PERIOD), strict=True):
        positions, velocities, _ = swept_path(expected_q, expected_qdot, command[None], span,
                                              support.rate, 1, 1)
        expected_q, expected_qdot = positions[0, 0], velocities[0, 0]
    predicted_q, predicted_qdot = support.predict(q, qdot, in_flight, 0.12)
    np.testing.assert_allclose(predicted_q, expected_q, atol=1e-12)
    np.testing.assert_allclose(predicted_qdot, expected_qdot, atol=1e-12)
    # One command in flight is the single-command prediction, bit for bit.
    one = support.predict(q, qdot, in_flight[-1], 0.03)
    assert all(np.array_equal(a, b) for a, b in
               zip(one, support.predict(q, qdot, in_flight[-1:], 0.03), strict=True))
    # A lead shorter than the history leaves the oldest commands out: they acted before.
    short = support.predict(q, qdot, in_flight, 0.04)
    assert all(np.array_equal(a, b) for a, b in
               zip(short, support.predict(q, qdot, in_flight[-1], 0.04), strict=True))
    with pytest.raises(ValueError, match='commands in flight'):
        support.margins(q, qdot, np.zeros((1, support.dof)), np.zeros((2, support.dof + 1)))


def test_commands_in_flight_keep_the_last_ones_oldest_first():
    history = CommandsInFlight(2, 3)
    assert np.array_equal(history.commands, np.zeros((3, 2)))
    for value in (1.0, 2.0, 3.0, 4.0):
        history.push(np.full(2, value))
    assert np.array_equal(history.commands[:, 0], [2.0, 3.0, 4.0])
    history.reset()
    assert not history.commands.any()
    with pytest.raises(ValueError):
        CommandsInFlight(2, 0)


def test_lag_allowance_is_taken_from_moving_commands_only(support):
    tau = 0.02
    lagged = SupportCheck(support.safe_set,
                          replace(support.config, tracking_time_constant=tau), PERIOD)
    q, qdot = np.zeros(support.dof), np.full(support.dof, 0.1)
    commands = np.array([np.zeros(support.dof), np.full(support.dof, 0.3),
                         np.full(support.dof, -0.2)])
    ideal, _ = support.evaluate(q, qdot, commands)
    slow, _ = lagged.evaluate(q, qdot, commands)
    assert np.array_equal(slow[0], ideal[0])  # hold
    extra = lagged.lag_allowance(qdot, commands[1:])
    assert np.allclose(ideal[1:] - slow[1:], extra)
    joint = tau * np.maximum(np.abs(commands[1:] - qdot), np.abs(qdot))
    assert np.allclose(extra[:, :support.dof], joint)
    assert np.all(extra[:, support.dof:2 * support.dof] == 0.0)  # velocity columns
    lever = support.safe_set.kinematics.lever_bound
    assert np.allclose(extra[:, 2 * support.dof], lever * joint.sum(axis=1))


@pytest.mark.parametrize('seed', range(5))
def test_a_lagged_servo_stays_within_the_lag_allowance_of_the_model(support, seed):
    """Integrate tau y' = u - y on the model's velocity path (ramp to v, then braking): the
    lagged joint positions stay within the per-joint lag allowance of the model's."""
    rng = np.random.default_rng(seed)
    tau, dt = 0.03, 1e-4
    qdot = rng.uniform(-0.4, 0.4, support.dof)
    command = rng.uniform(-0.6, 0.6, support.dof)
    rate = support.rate
    times = np.arange(0.0, PERIOD + 2.0, dt)
    progress = np.clip(times / max(np.max(np.abs(command - qdot) / rate), 1e-9), 0, 1)
    model_v = qdot + np.outer(progress, command - qdot)
    end = model_v[int(PERIOD / dt)]
    stop = np.max(np.abs(end) / rate)
    after = np.clip((times - PERIOD) / max(stop, 1e-9), 0, 1)[:, None]
    model_v = np.where(times[:, None] <= PERIOD, model_v, end * (1 - after))
    y = qdot.copy()
    deviation = np.zeros(support.dof)
    trail = np.zeros(support.dof)
    for k in range(len(times) - 1):
        y = y + (model_v[k] - y) * dt / tau
        trail += (model_v[k] - y) * dt
        deviation = np.maximum(deviation, np.abs(trail))
    bound = tau * np.maximum(np.abs(command - qdot), np.abs(qdot))
    assert np.all(deviation <= bound + 1e-6)


def test_latency_and_lag_are_validated(tmp_path):
    for field, value in (('actuation_latency', -0.01), ('actuation_latency', 0.6),
                         ('tracking_time_constant', -1.0), ('tracking_time_constant', 1.0)):
        path = tmp_path / 'safe_set.yaml'
        path.write_text(f'support:\n  {field}: {value}\n')
        with pytest.raises(ConfigError):
            load_support_config(path)
