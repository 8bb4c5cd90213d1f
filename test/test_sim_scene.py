"""The MuJoCo scene is built from the same URDF: FK agrees with pinocchio for three arms, and the
safety layer's spheres cover the arm's real collision geometry."""
import mujoco
import numpy as np
import pytest

from ssq_ros.config import ConfigError
from ssq_ros.paths import config_path
from ssq_ros.safety.kinematics import Kinematics
from ssq_ros.safety.robot import load_robot
from ssq_ros.safety.safe_set import SafeSetConfig, load_safe_set_config
from ssq_ros.sim.scene import PhysicsConfig, build_scene, urdf_for_mujoco

DATA = config_path('robot.yaml').parents[1] / 'test' / 'data'
ROBOTS = [config_path('robot.yaml'), DATA / 'panda.yaml', DATA / 'ur5.yaml']


@pytest.mark.parametrize('robot_file', ROBOTS, ids=lambda p: p.stem)
def test_pinocchio_and_mujoco_agree_on_ee_and_spheres(robot_file):
    robot = load_robot(robot_file)
    scene = build_scene(robot, SafeSetConfig(), PhysicsConfig())
    kinematics = Kinematics(robot)
    data = mujoco.MjData(scene.model)
    rng = np.random.default_rng(0)
    qs = rng.uniform(robot.position_lower, robot.position_upper, (1000, robot.dof))
    spheres, ee = kinematics.sphere_positions(qs), kinematics.ee_position(qs)
    worst = 0.0
    for q, centres, hand in zip(qs, spheres, ee, strict=True):
        data.qpos[scene.qpos_index] = q
        mujoco.mj_kinematics(scene.model, data)
        worst = max(worst, np.abs(data.site_xpos[scene.sphere_sites] - centres).max(),
                    np.abs(data.site_xpos[scene.ee_site] - hand).max())
    assert worst < 1e-6
    assert scene.model.nu == robot.dof  # one velocity servo per commanded joint, nothing else


def surface_points(model, data, geom):
    """Points on the surface of a box or cylinder geom, in the world frame."""
    size = model.geom_size[geom]
    if model.geom_type[geom] == mujoco.mjtGeom.mjGEOM_CYLINDER:
        angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        ring = np.stack([size[0] * np.cos(angles), size[0] * np.sin(angles)], axis=1)
        local = [np.c_[ring, np.full(24, z)] for z in np.linspace(-size[1], size[1], 9)]
        local.append(np.array([[0.0, 0.0, size[1]], [0.0, 0.0, -size[1]]]))
        local = np.concatenate(local)
    else:
        grid = np.linspace(-1, 1, 7)
        corners = np.stack(np.meshgrid(grid, grid, grid, indexing='ij'), -1).reshape(-1, 3)
        local = corners[np.abs(corners).max(axis=1) == 1] * size
    rotation = data.geom_xmat[geom].reshape(3, 3)
    return data.geom_xpos[geom] + local @ rotation.T


def test_spheres_cover_the_arm_collision_geometry():
    """Every point of every moving collision geom lies inside some safety sphere, so a sphere
    margin >= 0 implies the referee's geometric margin >= 0."""
    robot = load_robot(config_path('robot.yaml'))
    scene = build_scene(robot, SafeSetConfig(), PhysicsConfig())
    data = mujoco.MjData(scene.model)
    rng = np.random.default_rng(1)
    for q in rng.uniform(robot.position_lower, robot.position_upper, (5, robot.dof)):
        data.qpos[scene.qpos_index] = q
        mujoco.mj_kinematics(scene.model, data)
        centres = data.site_xpos[scene.sphere_sites]
        for geom in scene.arm_geoms:
            points = surface_points(scene.model, data, geom)
            gaps = np.linalg.norm(points[:, None] - centres[None], axis=2) - robot.sphere_radii
            assert gaps.min(axis=1).max() <= 1e-9, scene.model.geom(geom).name


def test_urdf_is_prepared_for_mujoco(tmp_path):
    robot = load_robot(DATA / 'panda.yaml')
    xml, velocity = urdf_for_mujoco(robot.urdf_path, robot.joint_names)
    assert '.dae' not in xml and 'package://' not in xml
    assert 'fusestatic="false"' in xml
    assert np.allclose(velocity, robot.velocity_limit)
    scene = build_scene(robot, load_safe_set_config(config_path('safe_set.yaml')),
                        PhysicsConfig())
    assert scene.model.njnt == 7  # the finger joints were made fixed
    names = {name for name, _ in scene.hazards}
    assert names == {'table', 'workspace', 'keep_out:fixture', 'keep_out:human_zone',
                     'keep_out:lamp'}
    zone = scene.model.geom('zone_fixture')
    assert zone.contype[0] == 0 and zone.conaffinity[0] == 0
    with pytest.raises(ConfigError, match='no joint or no velocity limit'):
        urdf_for_mujoco(robot.urdf_path, ('panda_joint1', 'nope'))
    broken = tmp_path / 'broken.urdf'
    broken.write_text('<robot')
    with pytest.raises(ConfigError, match='cannot read URDF'):
        urdf_for_mujoco(broken, ('a',))
