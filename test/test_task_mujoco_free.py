"""The robot side never loads the simulator: every node that runs beside a real arm, and the
task package it builds its problem from, import neither mujoco nor gymnasium."""
import subprocess
import sys

import pytest

ROBOT_SIDE = ('ssq_ros.nodes.hardware_interface', 'ssq_ros.nodes.policy_executor',
              'ssq_ros.nodes.safe_behavior', 'ssq_ros.nodes.q_learner',
              'ssq_ros.nodes.safety_monitor', 'ssq_ros.nodes.episode_server')
SIMULATOR = ('mujoco', 'gymnasium')


def loaded_modules(code: str) -> set[str]:
    """Top-level package names in sys.modules after running `code` in a fresh interpreter."""
    script = (f'{code}\nimport sys\n'
              'print(" ".join(sorted({m.split(".")[0] for m in sys.modules})))')
    out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                         timeout=120, check=True)
    return set(out.stdout.split())


def test_robot_side_nodes_import_neither_mujoco_nor_gymnasium():
    loaded = loaded_modules('\n'.join(f'import {m}' for m in ROBOT_SIDE))
    assert 'ssq_ros' in loaded
    assert not loaded & set(SIMULATOR), sorted(loaded & set(SIMULATOR))


@pytest.mark.parametrize('module', ROBOT_SIDE)
def test_each_robot_side_node_alone(module):
    assert not loaded_modules(f'import {module}') & set(SIMULATOR)


def test_building_the_task_problem_loads_no_simulator():
    code = ('from ssq_ros.task.setup import build_task_problem\n'
            'from ssq_ros.training.config import load_run_config\n'
            'problem = build_task_problem(load_run_config(""))\n'
            'assert problem.spaces.action_size == 13, problem.spaces\n'
            'import ssq_ros.deploy.executor, ssq_ros.deploy.export\n'
            'import ssq_ros.graph_logic.episode_goal')
    assert not loaded_modules(code) & set(SIMULATOR)


def test_the_simulator_side_does_load_them():
    # The check above would pass vacuously if the names were wrong.
    assert set(SIMULATOR) <= loaded_modules('import ssq_ros.sim.env')
