"""The task suite (config/tasks/, docs/tasks.md): every task loads and builds, the scripted
oracle reaches held-out goals acting only inside mu's support, and greedy goal-seeking mu fails
where the suite says it does. Real MuJoCo, a few seeded held-out episodes per task."""
from pathlib import Path

import numpy as np
import pytest

from bench.bench_tasks import with_goal_preference
from ssq_ros.config import to_dict
from ssq_ros.control.oracle import hand_extent, make_oracle
from ssq_ros.paths import config_path
from ssq_ros.training.config import load_run_config
from ssq_ros.training.evaluate import (
    evaluate_heldout,
    greedy_behavior_actor,
    heldout_episode_seed,
    oracle_actor,
)
from ssq_ros.training.problem import build_problem

ROOT = Path(__file__).resolve().parents[1]
TASKS = ('easy', 'wall', 'ushape', 'window', 'costly')
HARD = ('wall', 'ushape', 'window', 'costly')


@pytest.fixture(scope='module')
def problems():
    return {name: build_problem(load_run_config(config_path(f'tasks/{name}.yaml')))
            for name in TASKS}


def test_the_suite_is_every_task_yaml_and_is_installed():
    shipped = {p.stem for p in (ROOT / 'config' / 'tasks').glob('*.yaml')
               if not p.stem.endswith('_safe_set')}
    assert shipped == set(TASKS)
    assert "share('config/tasks')" in (ROOT / 'setup.py').read_text()


def test_the_easy_task_is_train_sim_unchanged():
    # So the default experiment's episodes (and TASK_REVISION) stay what they were.
    assert to_dict(load_run_config(config_path('tasks/easy.yaml'))) == \
        to_dict(load_run_config(''))


@pytest.mark.parametrize('name', TASKS)
def test_every_task_builds_with_goals_on_both_sides_of_the_split(problems, name):
    task = problems[name].env.task
    assert len(task.goals('train')) >= 10 and len(task.goals('heldout')) >= 10
    lower, upper = np.array(task.config.goal_lower), np.array(task.config.goal_upper)
    assert np.all((task.goal_pool() >= lower) & (task.goal_pool() <= upper))


@pytest.mark.parametrize('name', TASKS)
def test_the_oracle_reaches_heldout_goals_inside_mus_support(problems, name):
    problem = problems[name]
    env = problem.env
    oracle = make_oracle(problem.controller, env.task.control_period,
                         avoid=env.task.config.costly_boxes)
    rng = np.random.default_rng(0)
    for index in range(2):
        _, info = env.reset(seed=heldout_episode_seed(index))
        unsafe, reached = int(info['unsafe']), False
        for _ in range(env.task.config.max_steps):
            allowed = problem.behavior(rng).allowed
            action = oracle.choose(env.joint_state()[0], env.goal, allowed)
            assert allowed[action], f'{name}: the oracle chose {action}, which mu does not allow'
            _, _, reached, _, info = env.step(action)
            unsafe += int(info['unsafe'])
            if reached:
                break
        assert reached, f'{name}: held-out episode {index} not reached within max_steps'
        assert info['success'], f'{name}: held-out episode {index} entered a costly region'
        assert unsafe == 0 and env.costly_steps == 0


def goal_seeking(config):
    """The task's config with goal-seeking mu (goal preference 2, no persistence): the suite's
    bar is set against it, whatever mu the task's learner starts from (every hard task's is
    goal-free; costly's also keeps the hand's heading)."""
    return with_goal_preference(config, 2.0)


@pytest.mark.parametrize('name', HARD)
def test_greedy_goal_seeking_mu_is_trapped_where_the_oracle_is_not(name):
    problem = build_problem(goal_seeking(load_run_config(config_path(f'tasks/{name}.yaml'))))
    assert (problem.controller.config.goal_preference, problem.controller.config.persistence) \
        == (2.0, 0.0)
    gamma = 0.98
    # The suite's bar (docs/tasks.md): greedy mu at most 30 % of held-out episodes. Which few
    # episodes it wins depends on the machine's last bits (near-ties between primitives): the
    # first 3 of the U-shape gave 0 on one machine and 2 on another, so a count over 20.
    # 50 episodes on two machines: 10-16 % on every hard task.
    greedy = evaluate_heldout(problem, greedy_behavior_actor(problem), 20, gamma)
    oracle = evaluate_heldout(problem, oracle_actor(problem), 3, gamma)
    assert greedy.successes <= 6 and oracle.successes == 3, (greedy.successes,
                                                             oracle.successes)
    assert greedy.unsafe == oracle.unsafe == 0
    # each episode's outcome is kept, in held-out order, for the benchmark's unseen split
    assert oracle.summary()['outcomes'] == [1, 1, 1]
    assert len(greedy.outcomes) == 20 and sum(greedy.outcomes) == greedy.successes
    # on the costly task greedy mu gets there, straight through the tray: counted apart
    assert oracle.reached_costly == 0
    assert (greedy.reached_costly >= 10) == (name == 'costly'), greedy.reached_costly
    assert greedy.successes + greedy.reached_costly <= 20


def test_bad_goal_sampling_is_an_error_naming_the_key(tmp_path):
    bad = tmp_path / 'bad.yaml'
    bad.write_text('extends: tasks/wall.yaml\nsim: {task: {goal_sampling: grid}}\n')
    with pytest.raises(ValueError, match='goal_sampling'):
        load_run_config(bad)


def test_the_hand_extent_covers_the_hand_and_a_reach_without_spheres_is_an_error(problems):
    safe_set = problems['easy'].setup.safe_set
    lower, upper = hand_extent(safe_set, 0.15)
    # The fingers end below the end effector, the wrist rises above it; clearance included.
    assert lower[2] < -safe_set.config.cartesian_clearance and upper[2] > 0.1
    with pytest.raises(ValueError, match='hand_reach'):
        hand_extent(safe_set, 0.0)


def test_the_costly_region_costs_reward_and_success_not_safety(problems):
    task = problems['costly'].env.task
    (tray,) = task.config.costly_boxes
    assert task.safe_set.config.keep_out_boxes == () and task.config.costly_step_cost > 0
    inside, outside = np.array(tray.center), np.array(tray.center) + [0.0, 0.0, 0.3]
    goal = np.array([0.7, 0.0, 0.35])
    assert task.in_costly_region(inside) and not task.in_costly_region(outside)
    assert task.reward(inside, goal)[0] == pytest.approx(
        -np.linalg.norm(goal - inside) - task.config.costly_step_cost)
    assert task.reward(outside, goal)[0] == pytest.approx(-np.linalg.norm(goal - outside))
    assert task.succeeded(True, 0) and not task.succeeded(True, 1) and not task.succeeded(False, 0)
    # every held-out goal's straight path from the start crosses the region
    for index in range(5):
        problems['costly'].env.reset(seed=heldout_episode_seed(index))
        ee = task.kinematics.ee_position(problems['costly'].env.joint_state()[0])
        assert task.crosses_zone(ee, problems['costly'].env.goal[None])[0]


def test_greedy_mu_reaches_the_goal_through_the_region_and_both_loops_call_it_a_failure():
    """The env (ssq-train) and the ROS graph's BehaviorLoop score an episode by one rule."""
    from ssq_ros.graph_logic.behavior_loop import BehaviorLoop
    from ssq_ros.graph_logic.phases import RunPhase

    problem = build_problem(goal_seeking(load_run_config(config_path('tasks/costly.yaml'))))
    env = problem.env
    act = greedy_behavior_actor(problem)
    rng = np.random.default_rng(0)
    loop = BehaviorLoop(problem, seed=0)
    obs, _ = env.reset(seed=heldout_episode_seed(1))
    loop.start_episode(RunPhase.EVAL_BEHAVIOR, 0, env.goal)
    step = loop.on_state(*env.joint_state(), mu_acts=False)
    entered, reached = False, False
    for _ in range(env.task.config.max_steps):
        obs, _, reached, _, info = env.step(act(obs, rng).action)
        entered = entered or info['costly']
        step = loop.on_state(*env.joint_state(), mu_acts=False)
        if reached:
            break
    assert reached and entered and env.costly_steps > 0  # straight through the tray
    assert not info['success']
    assert step.summary is not None and step.summary.success is False
