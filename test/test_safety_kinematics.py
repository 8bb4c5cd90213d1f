"""Batched FK agrees with pinocchio; the Jacobians agree with pinocchio and finite differences."""
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


ROBOT_FILES = [config_path('robot.yaml'),
               config_path('robot.yaml').parents[1] / 'test' / 'data' / 'panda.yaml',
               config_path('robot.yaml').parents[1] / 'test' / 'data' / 'ur5.yaml']


@pytest.mark.parametrize('robot_file', ROBOT_FILES, ids=lambda path: path.stem)
def test_batched_jacobians_match_pinocchio(robot_file):
    kin = Kinematics(load_robot(robot_file))
    qs = random_configurations(kin.robot, 100, seed=2)
    batched = kin.ee_jacobians(qs)
    assert batched.shape == (100, 3, kin.robot.dof)
    for q, jacobian in zip(qs, batched, strict=True):
        assert np.allclose(jacobian, kin.ee_jacobian(q), atol=1e-12)


def test_axis_rotations_are_rotations():
    axis = np.array([1.0, 2.0, -0.5]) / np.linalg.norm([1.0, 2.0, -0.5])
    rotations = axis_rotations(axis, np.linspace(-3, 3, 7)[:, None])[:, 0]
    assert np.allclose(rotations @ rotations.transpose(0, 2, 1), np.eye(3), atol=1e-12)
    assert np.allclose(rotations @ axis, axis, atol=1e-12)


@pytest.mark.parametrize('q, words', [
    (np.zeros(6), 'shape'), (np.full(7, np.nan), 'NaN'), (np.zeros((2, 2, 7)), 'shape')])
def test_bad_configurations_are_rejected(kin, q, words):
    with pytest.raises(ValueError, match=words):
        kin.sphere_positions(q)


SLIDER_URDF = '''<robot name="slider">
  <link name="base"/>
  <joint name="turn" type="revolute">
    <parent link="base"/><child link="arm"/>
    <origin xyz="0 0 0.3" rpy="0.3 0 0"/><axis xyz="0 1 1"/>
    <limit lower="-3" upper="3" velocity="1" effort="10"/>
  </joint>
  <link name="arm"/>
  <joint name="slide" type="prismatic">
    <parent link="arm"/><child link="tip"/>
    <origin xyz="0.2 0 0" rpy="0 0.5 0"/><axis xyz="1 0 0.5"/>
    <limit lower="0" upper="0.4" velocity="0.5" effort="10"/>
  </joint>
  <link name="tip"/>
</robot>'''


def test_unaligned_revolute_and_prismatic_joints(tmp_path):
    (tmp_path / 'slider.urdf').write_text(SLIDER_URDF)
    (tmp_path / 'slider.yaml').write_text(
        f'urdf: {tmp_path / "slider.urdf"}\njoint_names: [slide, turn]\nee_frame: tip\n'
        'home: [0.1, 0.0]\ncollision_spheres:\n'
        '  - {name: tip, frame: tip, offset: [0.01, 0.02, 0.03], radius: 0.05}\n')
    robot = load_robot(tmp_path / 'slider.yaml')
    kin = Kinematics(robot)
    data = robot.model.createData()
    for q in random_configurations(robot, 20, seed=4):
        pin.framesForwardKinematics(robot.model, data, q[robot.to_pinocchio])
        tip = data.oMf[robot.model.getFrameId('tip')]
        assert np.allclose(kin.ee_position(q), tip.translation, atol=1e-12)
        assert np.allclose(kin.sphere_positions(q)[0, 0], tip.act(np.array([0.01, 0.02, 0.03])),
                           atol=1e-12)
        assert np.allclose(kin.ee_jacobians(q)[0], kin.ee_jacobian(q), atol=1e-12)
