"""The gymnasium environments: API conformance, no shielding, referee verdict in info."""
from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import ssq_ros.sim  # noqa: F401  (registers the environment ids)
from ssq_ros.config import ConfigError, resolve_config_file
from ssq_ros.paths import config_path
from ssq_ros.sim.env import ReachAvoidEnv, make_setup
from ssq_ros.task.reach_avoid import segment_hits_box, segment_hits_sphere
from ssq_ros.task.setup import make_task_setup
from ssq_ros.training.config import load_train_config


@pytest.fixture(scope='module')
def setup():
    return make_setup()


@pytest.mark.parametrize('env_id', ['ssq_ros/ReachAvoid-v0', 'ssq_ros/ReachAvoidContinuous-v0'])
def test_registered_envs_pass_the_gymnasium_checker(env_id):
    env = gym.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    assert {'unsafe', 'min_margin', 'constraint'} <= set(info)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert {'unsafe', 'min_margin', 'constraint', 'success', 'distance'} <= set(info)
    assert np.isfinite(reward) and env.observation_space.contains(obs)


def test_episodes_cross_a_zone_and_start_safe(setup):
    env = ReachAvoidEnv(True, setup=setup)
    for seed in range(5):
        obs, info = env.reset(seed=seed)
        layout = setup.task.layout
        assert not info['unsafe'] and info['min_margin'] > 0
        assert setup.task.crosses_zone(obs[layout['ee']], obs[layout['goal']])
        assert np.allclose(obs[layout['to_goal']], obs[layout['goal']] - obs[layout['ee']],
                           atol=1e-6)
        assert np.allclose(obs[layout['qdot']], 0.0)


def test_the_env_does_not_shield(setup):
    """Pushing the hand down above the fixture: the env executes it and the referee reports."""
    env = ReachAvoidEnv(True, setup=setup)
    env.reset(seed=0)
    env.sim.reset(np.array([0.0, -0.251, 0.0, -2.186, 0.0, 2.044, 0.785]))
    down = setup.cartesian.names.index('-z')
    verdicts = [env.step(down)[4] for _ in range(40)]
    unsafe = [v for v in verdicts if v['unsafe']]
    assert unsafe and unsafe[0]['constraint'] == 'keep_out:fixture'
    assert unsafe[0]['min_margin'] < 0


def test_reward_and_success(setup):
    env = ReachAvoidEnv(True, setup=setup)
    env.reset(seed=1)
    env.goal = env.sim.ee_position()
    obs, reward, terminated, truncated, info = env.step(setup.cartesian.hold_index)
    assert terminated and info['success'] and not truncated
    assert reward == pytest.approx(setup.config.task.success_bonus - info['distance'])
    env.reset(seed=1)
    for _ in range(setup.config.task.max_steps):
        *_, terminated, truncated, info = env.step(setup.cartesian.hold_index)
    assert truncated and not terminated


def test_bad_actions_are_refused(setup):
    discrete = ReachAvoidEnv(True, setup=setup)
    discrete.reset(seed=0)
    with pytest.raises(ValueError, match='not in'):
        discrete.step(99)
    continuous = ReachAvoidEnv(False, setup=setup)
    continuous.reset(seed=0)
    with pytest.raises(ValueError, match='finite'):
        continuous.step(np.array([np.nan, 0.0, 0.0]))
    with pytest.raises(ValueError, match='finite'):
        continuous.step(np.zeros(4))


def test_segment_intersections():
    center, half = np.zeros(3), np.full(3, 0.1)
    assert segment_hits_box(np.array([-1.0, 0, 0]), np.array([1.0, 0, 0]), center, half)
    assert not segment_hits_box(np.array([-1.0, 0.2, 0]), np.array([1.0, 0.2, 0]), center, half)
    assert not segment_hits_box(np.array([-1.0, 0, 0]), np.array([-0.5, 0, 0]), center, half)
    assert segment_hits_box(np.array([-1.0, -1.0, 0]), np.array([1.0, 1.0, 0]), center, half)
    assert segment_hits_sphere(np.array([-1.0, 0.05, 0]), np.array([1.0, 0.05, 0]), center, 0.1)
    assert not segment_hits_sphere(np.array([0.5, 0, 0]), np.array([1.0, 0, 0]), center, 0.1)


def test_the_gym_env_and_the_nodes_read_the_same_sim_section():
    # The gym env and ssq-sim-demo (make_setup without a file) and every node and ssq-train
    # (train_sim.yaml) must be the same mu, task and actions. They once were not (goal_preference
    # 1.0 against 2.0 in two files), so the trainer's mu was not the documented one; now the
    # defaults live in code only (ssq_ros/task/config.py) and train_sim.yaml sets none of them.
    from ssq_ros.config import to_dict
    from ssq_ros.task.config import SimConfig
    from ssq_ros.training.config import load_run_config
    assert to_dict(load_run_config('').sim) == to_dict(SimConfig())


def test_heldout_episodes_never_show_a_goal_position_of_training(setup):
    from ssq_ros.task.episodes import heldout_episode_seed, training_episode_seed
    env = ReachAvoidEnv(setup=setup)
    task = env.task
    train, heldout = task.goals('train'), task.goals('heldout')
    assert len(train) + len(heldout) == len(task.goal_pool())
    assert not {tuple(g) for g in train} & {tuple(g) for g in heldout}
    seen = {'train': set(), 'heldout': set()}
    for index in range(20):
        env.reset(seed=training_episode_seed(0, index))
        seen['train'].add(tuple(env.goal))
        env.reset(seed=heldout_episode_seed(index))
        seen['heldout'].add(tuple(env.goal))
    assert seen['train'] <= {tuple(g) for g in train}
    assert seen['heldout'] <= {tuple(g) for g in heldout}
    env.reset(seed=2, options={'goal_split': 'heldout'})
    assert tuple(env.goal) in {tuple(g) for g in heldout}
    with pytest.raises(ValueError, match='goal_split'):
        env.reset(seed=1, options={'goal_spilt': 'train'})
    with pytest.raises(ValueError, match='goal split'):
        env.reset(seed=1, options={'goal_split': 'test'})


def test_every_goal_can_be_held_in_the_posture_the_actions_settle_in(setup):
    task = setup.task
    pool = task.goal_pool()
    assert len(pool) > 100
    for goal in pool[::50]:
        q = setup.cartesian.settle(setup.robot.home, goal, setup.config.physics.control_period)
        assert np.linalg.norm(task.kinematics.ee_position(q) - goal) < task.config.success_radius
        assert setup.safe_set.margins(q[None], np.zeros((1, q.size))).min() >= 0.0


def test_an_observation_relabelled_with_another_goal_reads_as_one_made_with_it(setup):
    env = ReachAvoidEnv(True, setup=setup)
    obs, _ = env.reset(seed=4)
    obs, *_ = env.step(3)
    task, (q, qdot) = setup.task, env.joint_state()
    other = np.array([0.55, -0.1, 0.35])
    relabelled = task.with_goal(obs, other)
    np.testing.assert_allclose(relabelled, task.observation(
        q, qdot, env.sim.measured_ee_position(), other), atol=1e-6)
    assert np.array_equal(relabelled[task.layout['ee']], obs[task.layout['ee']])
    assert not np.array_equal(relabelled, obs)
    for bad_obs, bad_goal in ((obs[:-1], other), (obs, other[:2]),
                              (obs, np.array([0.5, np.nan, 0.3]))):
        with pytest.raises(ValueError, match='with_goal'):
            task.with_goal(bad_obs, bad_goal)


def test_an_observed_costly_box_adds_the_hands_offset_to_it():
    config = load_train_config(config_path('tasks/costly.yaml'))
    assert config.sim.task.observe_costly  # the task's own setting
    sim = config.sim
    setup = make_task_setup(resolve_config_file(config.robot),
                            resolve_config_file(config.safe_set), sim)
    task = setup.task
    unobserved = replace(sim, task=replace(sim.task, observe_costly=False))
    plain = make_task_setup(resolve_config_file(config.robot),
                            resolve_config_file(config.safe_set), unobserved).task
    assert 'to_costly' not in plain.layout
    assert task.observation_size == plain.observation_size + 3
    tray = task.config.costly_boxes[0]
    q, qdot, goal = setup.robot.home, np.zeros(setup.robot.dof), np.array([0.7, 0.0, 0.4])
    inside = np.array(tray.center) + 0.5 * np.array(tray.half_extents)
    in_front = np.array(tray.center) - [tray.half_extents[0] + 0.1, 0.0, 0.0]
    above = np.array(tray.center) + [0.0, 0.0, tray.half_extents[2] + 0.2]
    for hand, offset in ((inside, [0.0, 0.0, 0.0]), (in_front, [0.1, 0.0, 0.0]),
                         (above, [0.0, 0.0, -0.2])):
        obs = task.observation(q, qdot, hand, goal)
        assert obs.shape == (task.observation_size,)
        np.testing.assert_allclose(obs[task.layout['to_costly']], offset, atol=1e-6)
        # the rest reads as the plain task's observation; a new goal leaves the offset alone
        np.testing.assert_array_equal(obs[:plain.observation_size],
                                      plain.observation(q, qdot, hand, goal))
        np.testing.assert_array_equal(task.with_goal(obs, goal + 0.1)[task.layout['to_costly']],
                                      obs[task.layout['to_costly']])
    env = ReachAvoidEnv(True, setup=make_setup(resolve_config_file(config.robot),
                                               resolve_config_file(config.safe_set),
                                               config=sim))
    obs, _ = env.reset(seed=1)
    assert env.observation_space.contains(obs)
    np.testing.assert_allclose(obs[task.layout['to_costly']],
                               task.costly_offsets(env.sim.measured_ee_position())[0], atol=1e-6)
    with pytest.raises(ConfigError, match='observe_costly'):
        make_task_setup(resolve_config_file(config.robot), resolve_config_file(config.safe_set),
                        replace(sim, task=replace(sim.task, costly_boxes=())))
