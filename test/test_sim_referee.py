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
from ssq_ros.safety.safe_set import SafeSet, load_safe_set_config
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
    robot, scene, referee, _ = world
    verdict = judge(world, robot.home)
    # The closest pair at home is the hand and the forearm (link5), 7.8 cm apart; every zone,
    # wall and limit is more than 10 cm away.
    assert not verdict.unsafe and verdict.min_margin > 0.05
    data = mujoco.MjData(scene.model)
    data.qpos[scene.qpos_index] = robot.home
    others = [m for name, m in zip(referee.names, referee.margins(data), strict=True)
              if not name.startswith('self_collision:')]
    assert min(others) > 0.1


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


def test_self_collision_pairs_are_the_safe_sets(world):
    robot, scene, referee, _ = world
    safe_set = SafeSet(robot, load_safe_set_config(config_path('safe_set.yaml')))
    checked = [n for n in safe_set.names if n.startswith('self_collision:')]
    assert [name for name, _ in scene.self_pairs] == checked
    assert [n for n in referee.names if n.startswith('self_collision:')] == checked
    # Physics: an explicit contact pair for each geom pair of those links, none for the others.
    assert scene.model.npair == sum(len(geoms) for _, geoms in scene.self_pairs)
    assert 'self_collision:ssq_link5|ssq_link7' not in checked  # overlapping by construction


def test_hand_folded_onto_the_forearm(world):
    """Joint 6 and 7 turned until the hand's box cuts into the forearm's cylinder."""
    robot, scene, referee, _ = world
    q = robot.home.copy()
    q[5], q[6] = 0.5, -0.3
    verdict = judge(world, q)
    assert verdict.unsafe and verdict.constraint == 'self_collision:ssq_link5|ssq_hand'
    assert -0.02 < verdict.min_margin < 0.0
    data = mujoco.MjData(scene.model)
    data.qpos[scene.qpos_index] = robot.home
    home = referee.margins(data)[referee.names.index('self_collision:ssq_link5|ssq_hand')]
    assert home == pytest.approx(0.078, abs=0.005)
