"""Batched FK agrees with pinocchio; the Jacobian agrees with finite differences."""
import numpy as np
import pinocchio as pin
import pytest

from ssq_ros.paths import config_path
from ssq_ros.safety.kinematics import Kinematics, axis_rotations
from ssq_ros.safety.robot import load_robot


@pytest.fixture(scope='module')
def kin():
    return Kinematics(load_robot(config_path('robot.yaml')))


def random_configurations(robot, count, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(robot.position_lower, robot.position_upper, (count, robot.dof))


def test_batched_fk_matches_pinocchio_frames(kin):
    robot = kin.robot
    qs = random_configurations(robot, 200)
    spheres = kin.sphere_positions(qs)
    ee = kin.ee_position(qs)
    data = robot.model.createData()
    for q, centres, ee_point in zip(qs, spheres, ee, strict=True):
        pin.framesForwardKinematics(robot.model, data, q[robot.to_pinocchio])
        for k, frame in enumerate(robot.sphere_frames):
            expected = data.oMf[robot.model.getFrameId(frame)].act(robot.sphere_offsets[k])
            assert np.allclose(centres[k], expected, atol=1e-12)
        assert np.allclose(ee_point, data.oMf[robot.model.getFrameId('ssq_ee_link')]
                           .translation, atol=1e-12)


def test_jacobian_matches_finite_differences(kin):
    for q in random_configurations(kin.robot, 5, seed=1):
        step = 1e-6
        numeric = np.stack([(kin.ee_position(q + step * e) - kin.ee_position(q - step * e))
                            / (2 * step) for e in np.eye(kin.robot.dof)], axis=1)
        assert np.allclose(kin.ee_jacobian(q), numeric, atol=1e-7)


def test_axis_rotations_are_rotations():
    axis = np.array([1.0, 2.0, -0.5]) / np.linalg.norm([1.0, 2.0, -0.5])
    rotations = axis_rotations(axis, np.linspace(-3, 3, 7))
    assert np.allclose(rotations @ rotations.transpose(0, 2, 1), np.eye(3), atol=1e-12)
    assert np.allclose(rotations @ axis, axis, atol=1e-12)


@pytest.mark.parametrize('q, words', [
    (np.zeros(6), 'shape'), (np.full(7, np.nan), 'NaN'), (np.zeros((2, 2, 7)), 'shape')])
def test_bad_configurations_are_rejected(kin, q, words):
    with pytest.raises(ValueError, match=words):
        kin.sphere_positions(q)
