"""End-effector actions: hold is zero, DLS follows the commanded direction, limits hold."""
import numpy as np
import pytest

from ssq_ros.paths import config_path
from ssq_ros.safety.actions import (
    ActionConfig,
    CartesianActions,
    JointActions,
    primitive_directions,
    scale_to_limits,
)
from ssq_ros.safety.kinematics import Kinematics
from ssq_ros.safety.robot import load_robot


@pytest.fixture(scope='module')
def actions():
    robot = load_robot(config_path('robot.yaml'))
    return CartesianActions(Kinematics(robot), ActionConfig(), robot.velocity_limit * 0.5)


def test_primitives():
    names, vectors = primitive_directions(0.1, 0.02)
    assert names[0] == 'hold' and len(names) == 13 and '+z slow' in names
    assert np.allclose(np.abs(vectors).sum(axis=1), [0] + [0.1] * 6 + [0.02] * 6)
    assert len(primitive_directions(0.1, 0.0)[0]) == 7


def test_hold_is_exactly_zero_and_moves_follow_the_direction(actions):
    q = actions.home + np.array([0.2, 0.1, -0.1, 0.2, 0.1, -0.2, 0.1])
    commands = actions.discrete_commands(q)
    assert np.all(commands[actions.hold_index] == 0.0)
    jacobian = actions.kinematics.ee_jacobian(q)
    for vector, command in zip(actions.directions[1:], commands[1:], strict=True):
        achieved = jacobian @ command
        assert np.all(np.abs(command) <= actions.limit + 1e-12)
        # Unscaled commands reproduce the velocity up to the damping error; scaled ones keep
        # the direction.
        cosine = achieved @ vector / (np.linalg.norm(achieved) * np.linalg.norm(vector))
        assert cosine > 0.98


def test_posture_term_moves_toward_home_without_moving_the_hand(actions):
    q = actions.home.copy()
    q[2] += 0.4  # the redundant elbow rotation
    command = actions.to_joint(q, np.array([[0.0, 0.0, 0.15]]))[0]
    assert command[2] < 0  # pulled back toward home
    no_posture = CartesianActions(actions.kinematics, ActionConfig(posture_gain=0.0),
                                  actions.limit / 0.9 / 1.0)
    jacobian = actions.kinematics.ee_jacobian(q)
    plain = no_posture.to_joint(q, np.array([[0.0, 0.0, 0.15]]))[0]
    assert np.allclose(jacobian @ command, jacobian @ plain, atol=0.01)


def test_scale_to_limits_keeps_direction():
    commands = np.array([[2.0, 1.0], [0.1, -0.1]])
    scaled = scale_to_limits(commands, np.array([1.0, 1.0]))
    assert np.allclose(scaled, [[1.0, 0.5], [0.1, -0.1]])


def test_joint_actions_and_bad_input(actions):
    joint = JointActions(ActionConfig(), np.ones(7))
    assert np.allclose(joint.to_joint(None, np.full((1, 7), 5.0)), 0.9)
    with pytest.raises(ValueError, match='NaN'):
        actions.to_joint(actions.home, np.array([[np.nan, 0, 0]]))
    with pytest.raises(ValueError, match='shape'):
        actions.to_joint(actions.home, np.zeros((1, 4)))
    with pytest.raises(ValueError, match='shape'):
        joint.to_joint(None, np.zeros(7))


def test_settle_brings_the_hand_to_a_reachable_target_within_the_limits(actions):
    robot = actions.kinematics.robot
    rng = np.random.default_rng(4)
    for _ in range(5):
        # Targets the arm can reach: hand positions of postures near home.
        target = actions.kinematics.ee_position(robot.home + rng.uniform(-0.4, 0.4, robot.dof))
        q = actions.settle(robot.home, target, period=0.05)
        assert np.linalg.norm(actions.kinematics.ee_position(q) - target) < 2e-3
        assert np.all(q >= robot.position_lower) and np.all(q <= robot.position_upper)
    # Out of reach: it stops at the step budget with the hand as close as it got, in limits.
    far = actions.settle(robot.home, np.array([3.0, 0.0, 0.5]), period=0.05, max_steps=50)
    assert np.all(far >= robot.position_lower) and np.all(far <= robot.position_upper)


def test_settle_of_a_batch_equals_one_target_at_a_time(actions):
    robot = actions.kinematics.robot
    rng = np.random.default_rng(5)
    targets = actions.kinematics.ee_position(robot.home + rng.uniform(-0.4, 0.4, (6, robot.dof)))
    targets = np.vstack([targets, [3.0, 0.0, 0.5]])  # one out of reach: runs to the budget
    together = actions.settle(robot.home, targets, period=0.05, max_steps=60)
    alone = np.array([actions.settle(robot.home, t, period=0.05, max_steps=60)
                      for t in targets])
    assert together.shape == (7, robot.dof)
    assert np.allclose(together, alone, atol=1e-12)


def test_commands_at_many_configurations_equal_one_at_a_time(actions):
    robot = actions.kinematics.robot
    rng = np.random.default_rng(6)
    qs = rng.uniform(robot.position_lower, robot.position_upper, (20, robot.dof))
    velocities = rng.uniform(-0.3, 0.3, (20, 3))
    each = actions.to_joint_each(qs, velocities)
    one = np.array([actions.to_joint(q, v[None])[0] for q, v in zip(qs, velocities,
                                                                     strict=True)])
    assert np.allclose(each, one, atol=1e-12)
    with pytest.raises(ValueError, match='20 configurations but 19 actions'):
        actions.to_joint_each(qs, velocities[:19])
    with pytest.raises(ValueError, match='NaN'):
        actions.to_joint_each(qs[:1], np.array([[np.nan, 0.0, 0.0]]))
