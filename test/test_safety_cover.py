"""Collision-sphere covers: fitted to real collision geometry (pinocchio/coal, real meshes), and
verified at load, fail closed, with a cache that is used, invalidated and never trusted blindly."""
import json

import coal
import numpy as np
import pinocchio as pin
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ssq_ros.cli import robot_setup
from ssq_ros.config import ConfigError
from ssq_ros.paths import config_path
from ssq_ros.safety import collision_cover as cover
from ssq_ros.safety.kinematics import Kinematics
from ssq_ros.safety.robot import link_collision_points, load_robot, resolve_urdf
from ssq_ros.safety.safe_set import SafeSet, SafeSetConfig

DATA = config_path('robot.yaml').parents[1] / 'test' / 'data'
UR5_URDF = 'package://example-robot-data/robots/ur_description/urdf/ur5_robot.urdf'
# The hand-written UR5 cover this repository used before ssq-robot-setup: it leaves most of the
# forearm and the shoulder outside its spheres.
OLD_UR5_SPHERES = [
    ('shoulder', 'shoulder_link', [0.0, 0.0, 0.06], 0.06),
    ('upper_arm_0', 'upper_arm_link', [0.0, 0.0, 0.07], 0.075),
    ('upper_arm_1', 'upper_arm_link', [0.0, 0.0, 0.14], 0.075),
    ('upper_arm_2', 'upper_arm_link', [0.0, 0.0, 0.28], 0.075),
    ('upper_arm_3', 'upper_arm_link', [0.0, 0.0, 0.425], 0.075),
    ('forearm_0', 'forearm_link', [0.0, 0.0, 0.13], 0.06),
    ('forearm_1', 'forearm_link', [0.0, 0.0, 0.26], 0.06),
    ('wrist_1', 'wrist_1_link', [0.0, 0.093, 0.0], 0.05),
    ('wrist_2', 'wrist_2_link', [0.0, 0.0, 0.095], 0.05),
    ('wrist_3', 'wrist_3_link', [0.0, 0.08, 0.0], 0.045),
]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test starts with an empty cover cache of its own."""
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))


def write_robot(tmp_path, spheres, name='robot.yaml', **changes):
    data = yaml.safe_load((DATA / 'ur5.yaml').read_text())
    data['collision_spheres'] = [{'name': n, 'frame': f, 'offset': list(o), 'radius': r}
                                 for n, f, o, r in spheres]
    data.update(changes)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def uncovered(points, fit):
    return cover._uncovered(points, fit.centres, fit.radii)


def ur5_forearm_mesh():
    urdf = resolve_urdf(UR5_URDF)
    model = pin.buildModelFromUrdf(str(urdf))
    geom = pin.GeometryModel()
    pin.buildGeomFromUrdf(model, str(urdf), pin.COLLISION, geom,
                          package_dirs=cover.package_search_dirs())
    return geom.geometryObjects[geom.getGeometryId('forearm_link_0')].geometry


@pytest.mark.parametrize('geometry, volume', [
    (coal.Box(0.1, 0.2, 0.4), 0.1 * 0.2 * 0.4),
    (coal.Cylinder(0.05, 0.3), np.pi * 0.05 ** 2 * 0.3),
    (coal.Capsule(0.04, 0.2), np.pi * 0.04 ** 2 * (0.2 + 4 / 3 * 0.04)),
    (None, None),  # the UR5's forearm collision mesh
], ids=['box', 'cylinder', 'capsule', 'ur5_forearm_mesh'])
def test_fit_covers_the_geometry_tightly(geometry, volume):
    geometry = geometry if geometry is not None else ur5_forearm_mesh()
    points = cover.geometry_samples(geometry)
    fit = cover.fit_link_spheres(points)
    assert 1 <= len(fit.radii) <= 6
    assert uncovered(points, fit) <= 0.0  # every sample inside, after rounding to 0.1 mm
    # a denser, independent sampling of the same surface is within the sample spacing
    assert uncovered(cover.geometry_samples(geometry, spacing=0.002), fit) <= cover.SPACING
    if volume is not None:  # tight: the spheres' union is not much more than the solid
        assert fit.volume < 3.0 * volume
    else:
        assert fit.volume < 0.5 * cover.union_volume(*_one_ball(points))


def _one_ball(points):
    centre, radius = cover._enclosing_ball(points)
    return centre[None], np.array([radius])


def test_mesh_samples_include_every_vertex_and_stay_on_the_surface():
    mesh = ur5_forearm_mesh()
    vertices = np.asarray(mesh.vertices())
    points = cover.geometry_samples(mesh)
    assert np.array_equal(points[:len(vertices)], vertices)
    assert len(points) > 10 * len(vertices)  # large triangles are filled in
    box = cover.geometry_samples(coal.Box(0.1, 0.2, 0.4))
    assert np.allclose(np.abs(box).max(axis=0), [0.05, 0.1, 0.2])
    assert np.all(np.isclose(np.abs(box), [0.05, 0.1, 0.2]).any(axis=1))  # on a face
    cylinder = cover.geometry_samples(coal.Cylinder(0.05, 0.3))
    radial = np.linalg.norm(cylinder[:, :2], axis=1)
    assert radial.max() == pytest.approx(0.05) and np.abs(cylinder[:, 2]).max() == 0.15
    with pytest.raises(ValueError, match='unsupported collision geometry Cone'):
        cover.geometry_samples(coal.Cone(0.1, 0.2))


def test_old_hand_written_ur5_cover_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"link 'forearm_link' lies up to 0\.1\d\d m outside "
                       r'its spheres .*ssq-robot-setup'):
        load_robot(write_robot(tmp_path, OLD_UR5_SPHERES))


def test_link_without_spheres_is_refused(tmp_path):
    spheres = yaml.safe_load((DATA / 'ur5.yaml').read_text())['collision_spheres']
    kept = [(s['name'], s['frame'], s['offset'], s['radius']) for s in spheres
            if s['frame'] != 'forearm_link']
    with pytest.raises(ConfigError, match="link 'forearm_link' has collision geometry but no "
                       'sphere'):
        load_robot(write_robot(tmp_path, kept))


def test_missing_mesh_fails_closed(tmp_path):
    urdf = tmp_path / 'ur5.urdf'
    urdf.write_text(resolve_urdf(UR5_URDF).read_text().replace(
        'package://example-robot-data/robots/ur_description/meshes/ur5/collision/forearm.stl',
        'package://no_such_package/forearm.stl'))
    spheres = [(s['name'], s['frame'], s['offset'], s['radius']) for s in
               yaml.safe_load((DATA / 'ur5.yaml').read_text())['collision_spheres']]
    with pytest.raises(ConfigError, match='cannot read the collision geometry.*no_such_package'):
        load_robot(write_robot(tmp_path, spheres, urdf=str(urdf)))


def test_error_below_the_limit_is_added_to_the_safe_set_radii(tmp_path):
    robot = load_robot(write_robot(tmp_path, OLD_UR5_SPHERES, max_cover_error=0.2))
    errors = robot.link_cover_error
    assert errors['forearm_link'] == pytest.approx(0.136, abs=0.01)
    assert errors['ee_link'] == 0.0  # the ee_link box lies inside the wrist_3 sphere
    assert 'base_link' not in errors  # fixed to the world: needs no sphere
    # every sphere carries the worst error of its rigid body (wrist_3 with ee_link and tool0)
    by_name = dict(zip(robot.sphere_names, robot.sphere_cover_error, strict=True))
    assert by_name['forearm_0'] == by_name['forearm_1'] == errors['forearm_link']
    assert by_name['wrist_3'] == max(errors['wrist_3_link'], errors['ee_link'])
    safe_set = SafeSet(robot, SafeSetConfig())
    assert np.allclose(safe_set.inflated_radii, robot.sphere_radii + robot.sphere_cover_error
                       + SafeSetConfig().cartesian_clearance)


@pytest.mark.parametrize('robot_file', ['ur5.yaml', 'panda.yaml', 'xarm7.yaml', 'z1.yaml'])
def test_generated_arms_load_with_a_complete_cover(robot_file):
    robot = load_robot(DATA / robot_file)
    assert robot.link_cover_error and max(robot.link_cover_error.values()) == 0.0
    assert np.all(robot.sphere_cover_error == 0.0)
    assert len(robot.sphere_names) <= 40
    assert 'Generated by ssq-robot-setup' in (DATA / robot_file).read_text()


def test_package_arm_cover_is_complete():
    robot = load_robot(config_path('robot.yaml'))
    assert sorted(robot.link_cover_error) == sorted(
        [f'ssq_link{i}' for i in range(1, 8)] + ['ssq_hand'])
    assert max(robot.link_cover_error.values()) == 0.0


ROBOTS = {}


def robot_and_points(name, tmp_path_factory):
    """Robots whose covers are complete, and the old UR5 cover accepted with its errors."""
    if name not in ROBOTS:
        if name == 'old_ur5':
            path = write_robot(tmp_path_factory.mktemp('old'), OLD_UR5_SPHERES,
                               max_cover_error=0.2)
        elif name == 'ssq_arm':
            path = config_path('robot.yaml')
        else:
            path = DATA / f'{name}.yaml'
        robot = load_robot(path)
        ROBOTS[name] = robot, link_collision_points(robot)
    return ROBOTS[name]


@pytest.mark.parametrize('name', ['old_ur5', 'ur5', 'panda', 'z1', 'ssq_arm'])
@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fractions=st.lists(st.floats(0.0, 1.0), min_size=7, max_size=7))
def test_every_collision_point_is_within_its_spheres_in_every_posture(name, fractions,
                                                                     tmp_path_factory):
    robot, links = robot_and_points(name, tmp_path_factory)
    q = robot.position_lower + np.array(fractions[:robot.dof]) * (
        robot.position_upper - robot.position_lower)
    data = robot.model.createData()
    pin.forwardKinematics(robot.model, data, q[robot.to_pinocchio])
    centres = Kinematics(robot).sphere_positions(q[None])[0]
    sphere_joints = np.array([robot.model.frames[robot.model.getFrameId(f)].parentJoint
                              for f in robot.sphere_frames])
    reach = robot.sphere_radii + robot.sphere_cover_error
    for link, data_points in links.items():
        placement = data.oMi[data_points.joint]
        world = data_points.points @ placement.rotation.T + placement.translation
        mine = sphere_joints == data_points.joint
        gaps = np.linalg.norm(world[:, None] - centres[mine][None], axis=2) - reach[mine]
        assert gaps.min(axis=1).max() <= 1e-9, link


def cache_files():
    return sorted(cover.cache_dir().glob('cover-*.json'))


@pytest.fixture
def counted(monkeypatch):
    """Counts how often the geometry is loaded (the real function runs)."""
    calls = []
    real = cover.collision_points

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(cover, 'collision_points', counting)
    return calls


def test_cache_is_used_and_invalidated(tmp_path, counted):
    urdf = tmp_path / 'ur5.urdf'
    urdf.write_text(resolve_urdf(UR5_URDF).read_text())
    spheres = [(s['name'], s['frame'], s['offset'], s['radius']) for s in
               yaml.safe_load((DATA / 'ur5.yaml').read_text())['collision_spheres']]
    path = write_robot(tmp_path, spheres, urdf=str(urdf))
    first = load_robot(path)
    assert len(counted) == 1 and len(cache_files()) == 1
    again = load_robot(path)
    assert len(counted) == 1  # from the cache: the geometry was not loaded again
    assert again.link_cover_error == first.link_cover_error
    assert np.array_equal(again.sphere_cover_error, first.sphere_cover_error)
    urdf.write_text(urdf.read_text() + '\n<!-- edited -->\n')
    load_robot(path)
    assert len(counted) == 2 and len(cache_files()) == 2  # the URDF changed
    spheres[0] = spheres[0][:3] + (spheres[0][3] + 0.001,)
    load_robot(write_robot(tmp_path, spheres, urdf=str(urdf)))
    assert len(counted) == 3 and len(cache_files()) == 3  # the spheres changed
    load_robot(write_robot(tmp_path, spheres, urdf=str(urdf), max_cover_error=0.05))
    assert len(counted) == 3  # the limit is checked on the cached errors


@pytest.mark.parametrize('damage', ['garbage', 'truncated', 'tampered', 'wrong_length'])
def test_corrupt_cache_is_recomputed_not_trusted(tmp_path, counted, damage):
    path = write_robot(tmp_path, OLD_UR5_SPHERES, max_cover_error=0.2)
    truth = load_robot(path).link_cover_error
    (cache,) = cache_files()
    text = cache.read_text()
    if damage == 'garbage':
        cache.write_bytes(b'\x00\xff not json')
    elif damage == 'truncated':
        cache.write_text(text[:len(text) // 2])
    else:
        stored = json.loads(text)
        if damage == 'tampered':  # valid JSON, plausible numbers, digest no longer matches
            stored['payload']['links']['forearm_link'] = 0.0
        else:
            stored['payload']['spheres'] = stored['payload']['spheres'][:3]
            stored['digest'] = cover._digest(stored['payload'])
        cache.write_text(json.dumps(stored))
    robot = load_robot(path)
    assert len(counted) == 2  # recomputed
    assert robot.link_cover_error == truth
    assert json.loads(cache.read_text())['payload']['links'] == truth  # and repaired


def test_setup_cli_writes_a_robot_that_loads(tmp_path, capsys):
    out = tmp_path / 'ur5.yaml'
    code = robot_setup.main(['--urdf', UR5_URDF, '--ee', 'tool0', '--out', str(out),
                             '--home', '0', '-1.5', '1.5', '-1.5', '-1.5', '0'])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert 'forearm_link' in printed and 'uncovered' in printed and 'verified' in printed
    text = out.read_text()
    assert text.startswith('# Generated by ssq-robot-setup')
    assert 'acceleration_limits: ssq-robot-setup default' in text
    robot = load_robot(out)
    assert robot.joint_names == ('shoulder_pan_joint', 'shoulder_lift_joint', 'elbow_joint',
                                 'wrist_1_joint', 'wrist_2_joint', 'wrist_3_joint')
    assert np.allclose(robot.acceleration_limit, robot_setup.DEFAULT_ACCELERATION)
    assert set(robot.sphere_frames) >= {'shoulder_link', 'upper_arm_link', 'forearm_link'}
    assert max(robot.link_cover_error.values()) == 0.0 and len(robot.sphere_names) <= 40


def test_setup_cli_reads_home_from_srdf_and_refuses_bad_input(tmp_path, capsys):
    base = 'package://example-robot-data/robots/panda_description/'
    out = tmp_path / 'panda.yaml'
    assert robot_setup.main(['--urdf', base + 'urdf/panda.urdf', '--ee', 'panda_hand_tcp',
                             '--out', str(out), '--srdf', base + 'srdf/panda.srdf',
                             '--max-spheres', '2']) == 0
    robot = load_robot(out)
    assert robot.home[3] == pytest.approx(-2.35619) and len(robot.joint_names) == 7
    assert 'panda_leftfinger' in robot.link_cover_error  # locked finger, covered on the hand
    capsys.readouterr()
    assert robot_setup.main(['--urdf', UR5_URDF, '--ee', 'tool0', '--out',
                             str(tmp_path / 'x.yaml')]) == 2
    assert 'no home posture' in capsys.readouterr().err
    z1 = 'package://example-robot-data/robots/z1_description/urdf/z1.urdf'
    assert robot_setup.main(['--urdf', z1, '--ee', 'gripperStator', '--out',
                             str(tmp_path / 'x.yaml'), '--home', *['0'] * 6]) == 2
    assert "several frames of z1.urdf are named 'gripperStator'" in capsys.readouterr().err
    assert not (tmp_path / 'x.yaml').exists()
