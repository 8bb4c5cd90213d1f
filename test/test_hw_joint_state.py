"""Joint-state validation and reordering (no ROS), and the safety status enumeration."""
import math

import numpy as np
import pytest

from ssq_ros.paths import config_path
from ssq_ros.safety.joint_state import JointStateError, JointStateReader, reorder
from ssq_ros.safety.robot import load_robot
from ssq_ros.safety.status import SafetyStatus as S
from ssq_ros.safety.status import StatusCounter, most_severe

ORDER = ('j1', 'j2', 'j3')


def test_reorder_by_name_and_drop_ignored_joints():
    out = reorder(['j3', 'finger', 'j1', 'j2'], [3.0, 9.0, 1.0, 2.0], ORDER, 'position',
                  frozenset({'finger'}))
    assert out.tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize('names, values, status, words', [
    (['j1', 'j2', 'j3', 'x'], [0, 0, 0, 0], S.UNKNOWN_JOINT, "unknown joint 'x'"),
    (['j1', 'j2'], [0, 0], S.MISSING_JOINT, "joint 'j3' is missing"),
    (['j1', 'j2', 'j2'], [0, 0, 0], S.DUPLICATE_JOINT, "'j2' appears twice"),
    (['j1', 'j2', 'j3'], [0, 0], S.STATE_REJECTED_SIZE, '2 entries for 3 joint names'),
    (['j1', 'j2', 'j3'], [0, math.nan, 0], S.STATE_REJECTED_NONFINITE, "joint 'j2' is not"),
    (['j1', 'j2', 'j3'], [0, 0, math.inf], S.STATE_REJECTED_NONFINITE, "joint 'j3' is not"),
])
def test_bad_joint_states_are_refused_with_reason(names, values, status, words):
    with pytest.raises(JointStateError, match=words) as info:
        reorder(names, values, ORDER, 'position')
    assert info.value.status is status


def test_reader_checks_velocities_and_stamps():
    reader = JointStateReader(ORDER, max_stamp_age=0.5)
    sample = reader.accept(['j2', 'j1', 'j3'], [2, 1, 3], [0.2, 0.1, 0.3], 10.0, 10.1)
    assert sample.positions.tolist() == [1, 2, 3] and sample.velocities.tolist() == [.1, .2, .3]
    with pytest.raises(JointStateError, match='velocity has 0 entries') as info:
        reader.accept(ORDER, [0, 0, 0], [], 10.2, 10.2)
    assert info.value.status is S.STATE_REJECTED_SIZE
    for stamp, status in [(10.0, S.STATE_OUT_OF_ORDER), (9.9, S.STATE_OUT_OF_ORDER),
                          (9.0, S.STATE_STAMP_OFF_CLOCK), (12.0, S.STATE_STAMP_OFF_CLOCK),
                          (math.nan, S.STATE_REJECTED_NONFINITE)]:
        with pytest.raises(JointStateError) as info:
            reader.accept(ORDER, [0, 0, 0], [0, 0, 0], stamp, 10.2)
        assert info.value.status is status, stamp
    assert reader.accept(ORDER, [0, 0, 0], [0, 0, 0], 10.3, 10.2).stamp == 10.3


def test_a_repeat_is_the_last_accepted_state_unchanged_and_nothing_else():
    reader = JointStateReader(ORDER, max_stamp_age=0.5)
    assert not reader.is_repeat(ORDER, [1, 2, 3], [0, 0, 0], 10.0, 10.1)  # nothing accepted
    reader.accept(['j2', 'j1', 'j3'], [2, 1, 3], [0.2, 0.1, 0.3], 10.0, 10.1)
    assert reader.is_repeat(['j2', 'j1', 'j3'], [2, 1, 3], [0.2, 0.1, 0.3], 10.0, 10.2)
    assert reader.is_repeat(ORDER, [1, 2, 3], [0.1, 0.2, 0.3], 10.0, 10.2)  # any joint order
    assert not reader.is_repeat(ORDER, [1, 2, 3], [0.1, 0.2, 0.3], 10.0, 10.6)  # too old now
    for names, q, qd, stamp in ((ORDER, [1, 2, 3.001], [0.1, 0.2, 0.3], 10.0),  # other values
                                (ORDER, [1, 2, 3], [0.1, 0.2, 0.4], 10.0),
                                (ORDER, [1, 2, math.nan], [0.1, 0.2, 0.3], 10.0),
                                (ORDER[:2], [1, 2], [0.1, 0.2], 10.0),
                                (ORDER, [1, 2, 3], [], 10.0),
                                (ORDER, [1, 2, 3], [0.1, 0.2, 0.3], 10.05)):  # another stamp
        assert not reader.is_repeat(names, q, qd, stamp, 10.1)
    # a different state claiming the last one's stamp: refused with a reason
    with pytest.raises(JointStateError) as info:
        reader.accept(ORDER, [1, 2, 3.001], [0.1, 0.2, 0.3], 10.0, 10.1)
    assert info.value.status is S.STATE_OUT_OF_ORDER


def test_reader_refuses_implausible_positions():
    bounds = (np.array([-1.0, -1.0, -1.0]), np.array([1.0, 1.0, 1.0]))
    reader = JointStateReader(ORDER, position_bounds=bounds)
    assert reader.accept(ORDER, [1.0, -1.0, 0], [0, 0, 0], 1.0, 1.0).positions[0] == 1.0
    with pytest.raises(JointStateError, match="57.3 of joint 'j2' is outside") as info:
        reader.accept(ORDER, [0, 57.3, 0], [0, 0, 0], 2.0, 2.0)  # degrees, not radians
    assert info.value.status is S.STATE_IMPLAUSIBLE


def test_reader_without_velocity_and_without_clock_check():
    reader = JointStateReader(ORDER, require_velocity=False)
    sample = reader.accept(ORDER, [1, 2, 3], [], 1.0, 1e9)
    assert sample.velocities is None and np.array_equal(sample.positions, [1, 2, 3])


def test_reader_configuration_errors():
    with pytest.raises(ValueError, match='distinct'):
        JointStateReader(('a', 'a'))
    with pytest.raises(ValueError, match='both configured and ignored'):
        JointStateReader(ORDER, ignored_joints=['j1'])


def test_every_status_has_a_level_and_description_and_counts():
    assert all(s.description and s.level in (0, 1, 2, 3) for s in S)
    assert len({s.value for s in S}) == len(S)  # no accidental aliases
    assert most_severe([]) is S.OK
    assert most_severe([S.VELOCITY_LIMIT_SCALE, S.ESTOPPED, S.POSITION_LIMIT_CLAMP]) is S.ESTOPPED
    counter = StatusCounter()
    assert counter.record([]) is S.OK
    assert counter.record([S.VELOCITY_LIMIT_SCALE, S.POSITION_LIMIT_CLAMP]) is \
        S.VELOCITY_LIMIT_SCALE
    counter.record([S.ESTOPPED])
    assert counter.current is S.ESTOPPED and counter.count(S.VELOCITY_LIMIT_SCALE) == 1
    assert counter.as_dict() == {'OK': 1, 'POSITION_LIMIT_CLAMP': 1, 'VELOCITY_LIMIT_SCALE': 1,
                                 'ESTOPPED': 1}
    assert S.ESTOPPED.stops_arm and not S.POSITION_LIMIT_CLAMP.stops_arm


def test_reader_for_robot_takes_its_joint_order_and_limits():
    robot = load_robot(config_path('robot.yaml'))
    reader = JointStateReader.for_robot(robot, 0.1, max_stamp_age=0.0)
    names = list(reversed(robot.joint_names))
    inside = (robot.position_lower + robot.position_upper) / 2
    sample = reader.accept(names, inside[::-1], np.zeros(robot.dof), 1.0, 1.0)
    np.testing.assert_allclose(sample.positions, inside)
    beyond = inside.copy()
    beyond[2] = robot.position_upper[2] + 0.15
    with pytest.raises(JointStateError) as err:
        reader.accept(names, beyond[::-1], np.zeros(robot.dof), 2.0, 2.0)
    assert err.value.status is S.STATE_IMPLAUSIBLE


def test_timing_refusals_carry_the_state_for_a_referee_and_others_do_not():
    reader = JointStateReader(['a', 'b'], max_stamp_age=0.5)
    reader.accept(['a', 'b'], [0.1, 0.2], [0.0, 0.0], 10.0, 10.0)
    for stamp, now, status in ((9.9, 10.1, S.STATE_OUT_OF_ORDER),
                               (20.0, 10.2, S.STATE_STAMP_OFF_CLOCK)):
        with pytest.raises(JointStateError) as err:
            reader.accept(['b', 'a'], [0.4, 0.3], [0.0, 0.0], stamp, now)
        assert err.value.status is status
        np.testing.assert_allclose(err.value.sample.positions, [0.3, 0.4])
    with pytest.raises(JointStateError) as err:
        reader.accept(['a', 'b'], [math.nan, 0.0], [0.0, 0.0], 11.0, 11.0)
    assert err.value.sample is None
