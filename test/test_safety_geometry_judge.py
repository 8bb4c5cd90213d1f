"""The geometry judge: the URDF's own collision geometry with coal's exact distances, checked
against MuJoCo's referee on the same arm and against its own exact mode. Real pinocchio, coal and
MuJoCo."""
import mujoco
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ssq_ros.paths import config_path
from ssq_ros.safety.geometry_judge import GeometryJudge
from ssq_ros.safety.robot import load_robot
from ssq_ros.safety.safe_set import load_safe_set_config
from ssq_ros.sim.env import make_setup
from ssq_ros.sim.simulator import ArmSimulator

DATA = config_path('robot.yaml').parent.parent / 'test' / 'data'
SAFE_SET = load_safe_set_config(config_path('safe_set.yaml'))


@pytest.fixture(scope='module')
def setup():
    return make_setup()


@pytest.fixture(scope='module')
def judge(setup):
    return GeometryJudge(setup.robot, setup.safe_set.config,
                         self_collision_pairs=setup.safe_set.self_collision.pairs)


def test_agrees_with_the_mujoco_referee_on_the_same_geometry(setup, judge):
    sim = ArmSimulator(setup.robot, setup.scene, setup.config.physics)
    referee = sim.referee
    rng = np.random.default_rng(3)
    robot = setup.robot
    compared, unsafe_both = 0, 0
    for q in rng.uniform(robot.position_lower, robot.position_upper, (150, robot.dof)):
        sim.reset(q)
        ours = judge.margins(q, np.zeros(robot.dof))
        theirs = referee.margins(sim.data)
        pairs = [n for n in judge.names if n.startswith('self_collision:')]
        for name in ('keep_out:fixture', 'keep_out:human_zone', 'keep_out:lamp', 'workspace',
                     *pairs):
            a = ours[judge.names.index(name)]
            b = min(theirs[k] for k, n in enumerate(referee.names) if n == name)
            if min(a, b) < judge.exact_within:  # both exact there
                assert a == pytest.approx(b, abs=2e-3), (name, q)
                compared += 1
            assert (a < 0) == (b < 0), (name, a, b)
            unsafe_both += int(a < 0)
        mujoco.mj_resetData(sim.model, sim.data)
    print(f'{compared} exact margins compared, {unsafe_both} unsafe in both')
    assert compared > 20 and unsafe_both > 5
    assert len(pairs) == len(setup.safe_set.self_collision) > 0


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fractions=st.lists(st.floats(0.0, 1.0), min_size=7, max_size=7))
def test_the_bound_never_judges_a_state_safer_than_exact_distances(setup, judge, fractions):
    robot = setup.robot
    q = robot.position_lower + np.array(fractions) * (robot.position_upper - robot.position_lower)
    exact = GeometryJudge.__new__(GeometryJudge)
    exact.__dict__.update(judge.__dict__)
    exact.exact_within = np.inf
    bounded = judge.margins(q, np.zeros(robot.dof))
    true = exact.margins(q, np.zeros(robot.dof))
    assert np.all(bounded <= true + 1e-9)
    near = true < judge.exact_within
    np.testing.assert_allclose(bounded[near], true[near], atol=1e-9)
    assert judge.evaluate(q, np.zeros(robot.dof)).safe == exact.evaluate(
        q, np.zeros(robot.dof)).safe


@pytest.mark.parametrize('robot_file', ['ur5.yaml', 'panda.yaml', 'xarm7.yaml', 'z1.yaml'])
def test_other_arms_meshes_are_judged_and_home_is_safe(robot_file):
    robot = load_robot(DATA / robot_file)
    judge = GeometryJudge(robot, SAFE_SET)
    verdict = judge.evaluate(robot.home, np.zeros(robot.dof))
    assert verdict.safe, verdict
    # Folding the hand down through the table is caught by the meshes themselves.
    rng = np.random.default_rng(0)
    verdicts = [judge.evaluate(q, np.zeros(robot.dof)) for q in
                rng.uniform(robot.position_lower, robot.position_upper, (60, robot.dof))]
    assert any(not v.safe for v in verdicts)


def test_links_turned_only_about_the_vertical_are_not_judged_against_the_table():
    robot = load_robot(DATA / 'ur5.yaml')
    judge = GeometryJudge(robot, SAFE_SET)
    assert judge.height_fixed_links == ('shoulder_link',)
    # Its mesh dips below the mount's top (the table plane), in every posture; the arm is safe.
    assert judge.evaluate(robot.home, np.zeros(robot.dof)).safe


def test_bad_input_is_refused(judge, setup):
    dof = setup.robot.dof
    with pytest.raises(ValueError, match='shape'):
        judge.margins(np.zeros(dof - 1), np.zeros(dof - 1))
    with pytest.raises(ValueError, match='NaN'):
        judge.margins(np.full(dof, np.nan), np.zeros(dof))
    with pytest.raises(ValueError, match='positive'):
        GeometryJudge(setup.robot, SAFE_SET, exact_within=0.0)
    # Joint columns: URDF limits, no margin.
    q = setup.robot.home.copy()
    q[0] = setup.robot.position_upper[0] + 0.01
    margins = judge.margins(q, np.zeros(dof))
    assert margins[0] == pytest.approx(-0.01)
    assert judge.names[0] == f'joint_position:{setup.robot.joint_names[0]}'
    speed = np.zeros(dof)
    speed[2] = setup.robot.velocity_limit[2] + 0.5
    verdict = judge.evaluate(setup.robot.home, speed)
    assert not verdict.safe and verdict.constraint == \
        f'joint_velocity:{setup.robot.joint_names[2]}' and verdict.min_margin == -0.5
