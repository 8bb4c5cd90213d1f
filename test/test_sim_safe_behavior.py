"""The safe behavior controller in MuJoCo: zero unsafe states by the referee, hold always
accepted, while the same distribution without the support check goes unsafe."""
from dataclasses import replace

import numpy as np
import pytest

from ssq_ros.control.safe_behavior import SafeBehaviorController
from ssq_ros.paths import config_path
from ssq_ros.sim.env import ReachAvoidEnv, make_setup
from ssq_ros.task.config import SimConfig

DATA = config_path('robot.yaml').parents[1] / 'test' / 'data'


@pytest.fixture(scope='module')
def setup():
    return make_setup()


def run(env, controller, steps, seed, shield=True):
    """Steps under mu; returns unsafe count, hold failures, chosen actions, fallbacks."""
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    unsafe = hold_refused = fallbacks = 0
    actions = []
    for _ in range(steps):
        q, qdot = env.joint_state()
        if shield:
            hold_refused += not env.setup.support.hold_is_safe(q, qdot)
        decision = controller.act(q, qdot, rng, env.goal, shield=shield)
        if controller.discrete:
            assert decision.allowed[decision.action] and decision.probs[decision.action] > 0
            assert np.all(decision.probs[~decision.allowed] == 0)
            assert decision.probs.sum() == pytest.approx(1.0)
        assert np.allclose(decision.command, controller.command_for(q, decision.action))
        fallbacks += decision.fallback
        actions.append(decision.action)
        *_, terminated, truncated, info = env.step(decision.action)
        unsafe += info['unsafe']
        if terminated or truncated:
            env.reset()
    return unsafe, hold_refused, actions, fallbacks


def test_discrete_behavior_never_leaves_the_safe_set(setup):
    env = ReachAvoidEnv(True, setup=setup)
    controller = setup.behavior_controller(discrete=True)
    unsafe, hold_refused, actions, fallbacks = run(env, controller, 600, seed=0)
    assert unsafe == 0 and hold_refused == 0 and fallbacks == 0
    assert len(set(actions)) >= 10  # it explores, it does not just hold
    baseline, *_ = run(env, controller, 600, seed=0, shield=False)
    assert baseline > 0


def test_continuous_behavior_never_leaves_the_safe_set(setup):
    env = ReachAvoidEnv(False, setup=setup)
    controller = setup.behavior_controller(discrete=False)
    rng = np.random.default_rng(5)
    env.reset(seed=5)
    q, qdot = env.joint_state()
    decision = controller.act(q, qdot, rng, env.goal)
    commands = setup.cartesian.to_joint(q, decision.samples)
    assert decision.samples.shape == (setup.config.behavior.num_samples, 3)
    assert setup.support.is_safe(q, qdot, commands).all()
    unsafe, hold_refused, actions, _ = run(env, controller, 250, seed=5)
    assert unsafe == 0 and hold_refused == 0
    assert np.ptp(np.array(actions), axis=0).min() > 0.05  # spread over the action box


# Arms configured only by ssq-robot-setup. The task (SimConfig's defaults) is the arm-independent
# part, and where it does not fit an arm, sampling says which setting to change: the UR5's
# wrist flange beside its forearm and the Z1's shoulder over the table leave no 5 cm start
# margin near home; the small Z1 reaches no goal behind a keep-out zone.
@pytest.mark.parametrize('robot_file, task_changes', [
    ('panda.yaml', {}), ('xarm7.yaml', {}), ('ur5.yaml', {'start_margin': 0.02}),
    ('z1.yaml', {'start_margin': 0.02, 'require_crossing': False})])
def test_other_arms_by_configuration_alone(robot_file, task_changes):
    config = SimConfig()
    if 'start_margin' in task_changes:
        with pytest.raises(RuntimeError, match='lower task.start_margin'):
            make_setup(robot=DATA / robot_file, config=config).task.sample_start(
                np.random.default_rng(0))
    config = replace(config, task=replace(config.task, **task_changes))
    setup = make_setup(robot=DATA / robot_file, config=config)
    env = ReachAvoidEnv(True, setup=setup)
    unsafe, hold_refused, actions, _ = run(env, setup.behavior_controller(True), 150, seed=2)
    assert unsafe == 0 and hold_refused == 0 and len(set(actions)) > 3


def test_unknown_actions_are_refused(setup):
    controller = setup.behavior_controller(discrete=True)
    with pytest.raises(ValueError, match='outside'):
        controller.command_for(setup.robot.home, 13)
    with pytest.raises(ValueError, match='discrete behavior only'):
        setup.behavior_controller(discrete=False).act(setup.robot.home, np.zeros(7),
                                                      np.random.default_rng(0), shield=False)


def test_persistence_follows_the_hands_heading_inside_the_support(setup):
    base = setup.behavior_controller(discrete=True)
    config = replace(base.config, goal_preference=0.0)
    plain = SafeBehaviorController(base.support, base.actions, config, True)
    persistent = SafeBehaviorController(base.support, base.actions,
                                        replace(config, persistence=3.0), True)
    env = ReachAvoidEnv(True, setup=setup)
    env.reset(seed=0)
    q, _ = env.joint_state()
    # a joint velocity that moves the hand along +x at 0.1 m/s
    qdot = np.linalg.pinv(base.kinematics.ee_jacobian(q)) @ np.array([0.1, 0.0, 0.0])
    allowed, p_plain, *_ = plain.discrete_support(q, qdot)
    allowed_persistent, p_persistent, *_ = persistent.discrete_support(q, qdot)
    assert np.array_equal(allowed, allowed_persistent)  # the support is the check's alone
    assert np.all(p_persistent[~allowed] == 0) and p_persistent.sum() == pytest.approx(1.0)
    directions = base.actions.directions
    norms = np.linalg.norm(directions, axis=1)
    cosine = np.divide(directions[:, 0], norms, out=np.zeros(len(norms)), where=norms > 0)
    ahead = int(np.argmax(np.where(allowed, cosine, -np.inf)))
    behind = int(np.argmin(np.where(allowed, cosine, np.inf)))
    assert p_persistent[ahead] / p_plain[ahead] > 1.0 > p_persistent[behind] / p_plain[behind]
    # standing still there is no heading: the same mu as without persistence
    still = np.zeros_like(qdot)
    np.testing.assert_allclose(persistent.discrete_support(q, still)[1],
                               plain.discrete_support(q, still)[1])
    # and it never leaves the safe set, by the referee
    unsafe, hold_refused, actions, fallbacks = run(env, persistent, 300, seed=1)
    assert unsafe == 0 and hold_refused == 0 and fallbacks == 0
