"""The robot model: limits read from the URDF in command order, every name checked."""
import numpy as np
import pytest
import yaml

from ssq_ros.config import ConfigError
from ssq_ros.paths import config_path
from ssq_ros.safety.robot import load_robot, resolve_package_uri

PANDA_VELOCITY = [2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61]


def test_package_arm_has_panda_limits():
    robot = load_robot(config_path('robot.yaml'))
    assert robot.dof == 7 and robot.ee_frame == 'ssq_ee_link'
    assert np.allclose(robot.velocity_limit, PANDA_VELOCITY)
    assert np.allclose(robot.effort_limit, [87] * 4 + [12] * 3)
    assert robot.position_lower[3] == pytest.approx(-3.0718)
    assert robot.position_upper[5] == pytest.approx(3.7525)
    assert robot.acceleration_limit.shape == (7,) and np.all(robot.acceleration_limit > 0)
    assert robot.urdf_path.is_file() and robot.model.nq == 7


def write_config(tmp_path, **changes):
    data = yaml.safe_load(config_path('robot.yaml').read_text())
    data.update(changes)
    path = tmp_path / 'robot.yaml'
    path.write_text(yaml.safe_dump(data))
    return path


def test_command_order_may_differ_from_urdf_order(tmp_path):
    names = ['ssq_joint7', 'ssq_joint1', 'ssq_joint2', 'ssq_joint3', 'ssq_joint4',
             'ssq_joint5', 'ssq_joint6']
    home = [0.785, 0.0, -0.785, 0.0, -2.356, 0.0, 1.571]
    robot = load_robot(write_config(tmp_path, joint_names=names, home=home,
                                    acceleration_limits=None))
    assert np.allclose(robot.velocity_limit, [2.61] + PANDA_VELOCITY[:6])
    assert robot.position_lower[4] == pytest.approx(-3.0718)
    assert np.all(np.isinf(robot.acceleration_limit))
    assert list(robot.to_pinocchio) == [1, 2, 3, 4, 5, 6, 0]


@pytest.mark.parametrize('changes, words', [
    ({'joint_names': ['ssq_joint1', 'nope']}, "joint_names: unknown joint 'nope'"),
    ({'ee_frame': 'hand_of_god'}, "ee_frame: unknown frame 'hand_of_god'"),
    ({'urdf': 'missing.urdf'}, 'urdf: URDF file not found'),
    ({'urdf': 'package://no_such_pkg/a.urdf'}, "package 'no_such_pkg' not found"),
    ({'home': [0.0] * 6}, 'home: expected 7 values'),
    ({'home': [0.0] * 7}, 'home: outside the URDF joint limits'),
    ({'acceleration_limits': [1.0] * 3}, 'acceleration_limits: expected 7 values'),
    ({'acceleration_limits': [0.0] * 7}, r'acceleration_limits\[0\]: 0.0 is below'),
    ({'speed': 3}, 'speed: unknown key'),
])
def test_bad_configs_name_the_key(tmp_path, changes, words):
    with pytest.raises(ConfigError, match=words):
        load_robot(write_config(tmp_path, **changes))


def test_corrupt_urdf_is_a_config_error(tmp_path):
    bad = tmp_path / 'bad.urdf'
    bad.write_text('<robot name="x"><link name="a"></robot')
    with pytest.raises(ConfigError, match='pinocchio cannot read'):
        load_robot(write_config(tmp_path, urdf=str(bad)))


def test_package_uri_resolves_example_robot_data():
    path = resolve_package_uri('package://example-robot-data/robots/ur_description/urdf/'
                               'ur5_robot.urdf')
    assert path.is_file()
