"""Safe-set margins: signed distances checked against brute force, constraints named."""
import numpy as np
import pytest
import yaml

from ssq_ros.config import ConfigError
from ssq_ros.paths import config_path
from ssq_ros.safety.robot import load_robot
from ssq_ros.safety.safe_set import (
    SafeSet,
    box_signed_distance,
    inside_box_distance,
    load_safe_set_config,
)


@pytest.fixture(scope='module')
def safe_set():
    return SafeSet(load_robot(config_path('robot.yaml')),
                   load_safe_set_config(config_path('safe_set.yaml')))


def test_box_signed_distance_against_brute_force():
    rng = np.random.default_rng(0)
    center, half = np.array([0.2, -0.1, 0.3]), np.array([0.1, 0.2, 0.05])
    points = rng.uniform(-0.5, 0.8, (300, 3))
    grid = np.stack(np.meshgrid(*[np.linspace(c - h, c + h, 41) for c, h in
                                  zip(center, half, strict=True)], indexing='ij'), -1)
    surface = grid.reshape(-1, 3)
    on_surface = np.any(np.isclose(np.abs(surface - center), half), axis=1)
    surface = surface[on_surface]
    for point, signed in zip(points, box_signed_distance(points, center, half), strict=True):
        nearest = np.linalg.norm(surface - point, axis=1).min()
        inside = np.all(np.abs(point - center) <= half)
        assert signed == pytest.approx(-nearest if inside else nearest, abs=0.006)
    assert box_signed_distance(center, center, half) == pytest.approx(-0.05)


def test_inside_box_distance_signs():
    lower, upper = np.zeros(3), np.ones(3)
    assert inside_box_distance(np.array([0.5, 0.5, 0.9]), lower, upper) == pytest.approx(0.1)
    assert inside_box_distance(np.array([0.5, 1.2, 0.5]), lower, upper) == pytest.approx(-0.2)


def test_home_is_safe_and_margins_are_named(safe_set):
    robot = safe_set.robot
    verdict = safe_set.evaluate(robot.home, np.zeros(robot.dof))
    assert verdict.safe and verdict.min_margin > 0
    assert len(safe_set.names) == safe_set.margins(robot.home, np.zeros(7)).shape[1]
    assert {'table', 'workspace', 'keep_out:fixture', 'keep_out:lamp'} <= set(safe_set.names)


def test_each_constraint_is_detected(safe_set):
    robot = safe_set.robot
    q = robot.home.copy()
    q[0] = robot.position_upper[0] - 0.01
    assert safe_set.evaluate(q, np.zeros(7)).constraint == 'joint_position:ssq_joint1'
    fast = np.zeros(7)
    fast[4] = robot.velocity_limit[4] * 0.6
    verdict = safe_set.evaluate(robot.home, fast)
    assert not verdict.safe and verdict.constraint == 'joint_velocity:ssq_joint5'
    # Reach down and forward: the hand enters the fixture on the table in front of the base.
    down = np.array([0.0, 0.6, 0.0, -1.6, 0.0, 2.2, 0.785])
    verdict = safe_set.evaluate(down, np.zeros(7))
    assert not verdict.safe and verdict.constraint in ('keep_out:fixture', 'table')


def test_margin_moves_with_the_zone(tmp_path):
    robot = load_robot(config_path('robot.yaml'))
    data = yaml.safe_load(config_path('safe_set.yaml').read_text())
    ee = SafeSet(robot, load_safe_set_config(config_path('safe_set.yaml'))).kinematics \
        .ee_position(robot.home)
    data['safe_set']['keep_out_spheres'] = [{'name': 'probe', 'center': ee.tolist(),
                                             'radius': 0.01}]
    path = tmp_path / 'safe_set.yaml'
    path.write_text(yaml.safe_dump(data))
    verdict = SafeSet(robot, load_safe_set_config(path)).evaluate(robot.home, np.zeros(7))
    assert not verdict.safe and verdict.constraint == 'keep_out:probe'


@pytest.mark.parametrize('change, words', [
    ({'joint_velocity_fraction': 0.0}, 'joint_velocity_fraction: 0.0 is below'),
    ({'workspace': {'lower': [0, 0, 0], 'upper': [1, -1, 1]}}, 'upper must exceed lower'),
    ({'keep_out_boxes': [{'name': 'a', 'center': [0, 0, 0], 'half_extents': [0, 1, 1]}]},
     r'half_extents\[0\]'),
    ({'keep_out_spheres': [{'name': 'fixture', 'center': [0, 0, 0], 'radius': 0.1}]},
     'names must be unique'),
    ({'clearance': 0.1}, 'clearance: unknown key'),
])
def test_bad_safe_set_configs(tmp_path, change, words):
    data = yaml.safe_load(config_path('safe_set.yaml').read_text())
    data['safe_set'].update(change)
    path = tmp_path / 'safe_set.yaml'
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=words):
        load_safe_set_config(path)


def test_bad_states_are_rejected(safe_set):
    with pytest.raises(ValueError, match='NaN'):
        safe_set.margins(safe_set.robot.home, np.full(7, np.inf))
    with pytest.raises(ValueError, match='must match'):
        safe_set.margins(safe_set.robot.home, np.zeros(3))


def test_spheres_no_posture_lifts_off_the_table_are_not_checked_against_it():
    data = config_path('robot.yaml').parents[1] / 'test' / 'data'
    config = load_safe_set_config(config_path('safe_set.yaml'))
    ur5 = SafeSet(load_robot(data / 'ur5.yaml'), config)
    mounted = [n for n, m in zip(ur5.robot.sphere_names, ur5.table_mounted, strict=True) if m]
    assert mounted == ['shoulder_link_0', 'upper_arm_link_0']
    # Below the clearance at home, and still the table column is set by the other spheres.
    spheres = ur5.kinematics.sphere_positions(ur5.robot.home[None])
    heights = spheres[0, :, 2] - config.table_height - ur5.inflated_radii
    assert np.all(heights[ur5.table_mounted] < 0)
    table = ur5.margins(ur5.robot.home[None], np.zeros((1, 6)))[0, ur5.names.index('table')]
    assert table == pytest.approx(heights[~ur5.table_mounted].min())
    # The package arm stands clear of its table: every sphere is checked.
    assert not SafeSet(load_robot(config_path('robot.yaml')), config).table_mounted.any()
