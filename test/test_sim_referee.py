"""The referee on hand-made states: each kind of unsafe state is caught and named."""
import ast
import inspect

import mujoco
import numpy as np
import pytest

import ssq_ros.sim.referee as referee_module
from ssq_ros.paths import config_path
from ssq_ros.safety.kinematics import Kinematics
from ssq_ros.safety.robot import load_robot
from ssq_ros.safety.safe_set import load_safe_set_config
from ssq_ros.sim.referee import Referee
from ssq_ros.sim.scene import PhysicsConfig, build_scene


@pytest.fixture(scope='module')
def world():
    robot = load_robot(config_path('robot.yaml'))
    scene = build_scene(robot, load_safe_set_config(config_path('safe_set.yaml')),
                        PhysicsConfig())
    return robot, scene, Referee(scene), Kinematics(robot)


def reach(kinematics, target, q0):
    """Joint positions putting the hand at `target` (plain Newton steps, test helper)."""
    q = np.array(q0, dtype=float)
    for _ in range(300):
        error = target - kinematics.ee_position(q)
        q = q + np.linalg.pinv(kinematics.ee_jacobian(q)) @ error * 0.5
    assert np.linalg.norm(target - kinematics.ee_position(q)) < 1e-3
    return q


def judge(world, q, qdot=None):
    _, scene, referee, _ = world
    data = mujoco.MjData(scene.model)
    data.qpos[scene.qpos_index] = q
    if qdot is not None:
        data.qvel[scene.dof_index] = qdot
    return referee.judge(data)


def test_home_is_safe(world):
    robot = world[0]
    verdict = judge(world, robot.home)
    assert not verdict.unsafe and verdict.min_margin > 0.1


def test_joint_position_and_velocity_violations(world):
    robot = world[0]
    q = robot.home.copy()
    q[0] = robot.position_upper[0] + 0.01
    verdict = judge(world, q)
    assert verdict.unsafe and verdict.constraint == 'joint_position:ssq_joint1'
    assert verdict.min_margin == pytest.approx(-0.01)
    qdot = np.zeros(7)
    qdot[6] = -robot.velocity_limit[6] - 0.2
    verdict = judge(world, robot.home, qdot)
    assert verdict.unsafe and verdict.constraint == 'joint_velocity:ssq_joint7'
    assert verdict.min_margin == pytest.approx(-0.2)


@pytest.mark.parametrize('target, constraint', [
    ((0.5, 0.0, 0.25), 'keep_out:fixture'),
    ((0.35, 0.45, 0.75), 'keep_out:lamp'),
    ((0.2, -0.55, 0.4), 'keep_out:human_zone'),
    ((0.45, 0.35, -0.02), 'table'),
])
def test_geometric_violations_are_named(world, target, constraint):
    q = reach(world[3], np.array(target), world[0].home)
    verdict = judge(world, q)
    assert verdict.unsafe and verdict.constraint == constraint


def test_workspace_wall(world):
    straight_up = np.array([0.0, 0.0, 0.0, -0.2, 0.0, 3.0, 0.0])
    verdict = judge(world, straight_up)
    assert verdict.unsafe and verdict.constraint == 'workspace'


def test_distance_is_measured_not_just_signed(world):
    """Hand 10 cm above the fixture's top: the fixture margin is about 10 cm minus the hand's
    extent below the end-effector point, and shrinks as the hand goes down."""
    robot, scene, referee, kinematics = world
    fixture = referee.names.index('keep_out:fixture')
    margins = []
    for height in (0.45, 0.40, 0.35):
        q = reach(kinematics, np.array([0.5, 0.0, height]), robot.home)
        data = mujoco.MjData(scene.model)
        data.qpos[scene.qpos_index] = q
        margins.append(referee.margins(data)[fixture])
    assert margins[0] > margins[1] > margins[2] > 0
    assert np.allclose(np.diff(margins), -0.05, atol=0.01)


def test_referee_never_uses_the_safety_layer():
    tree = ast.parse(inspect.getsource(referee_module))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for a in node.names}
    assert not any(name and name.startswith('ssq_ros.safety') for name in imported)
