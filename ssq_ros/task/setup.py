"""A run's task assembled from its experiment config, without a simulator.

`make_task_setup` loads the robot and safe-set yamls and builds every part once: safe set,
support check (its horizon is the control period), the Cartesian and joint actions, the
reach-avoid task. `TaskProblem` adds mu (`SafeBehaviorController`) and the learner's
`TaskSpaces`: it is what the robot-side nodes act with (safe_behavior, policy_executor,
q_learner for the spaces). `ssq_ros.sim.env.make_setup` builds the same `TaskSetup` and adds
the MuJoCo scene; `ssq_ros.training.problem.ArmProblem` adds the gym env.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ssq_ros.config import resolve_config_file
from ssq_ros.control.safe_behavior import Decision, SafeBehaviorController
from ssq_ros.paths import config_path
from ssq_ros.safety.actions import CartesianActions, JointActions
from ssq_ros.safety.robot import RobotModel, load_robot
from ssq_ros.safety.safe_set import SafeSet, load_safe_set_config
from ssq_ros.safety.support import SupportCheck, load_support_config
from ssq_ros.task.config import SimConfig
from ssq_ros.task.reach_avoid import ReachAvoidTask
from ssq_ros.task.spaces import TaskSpaces, check_spaces

if TYPE_CHECKING:  # the experiment config lives with training; only its fields are read here
    from ssq_ros.training.config import TrainConfig


@dataclass
class TaskSetup:
    """Everything built from the robot yaml, the safe-set yaml and the `sim` section."""

    robot: RobotModel
    safe_set: SafeSet
    support: SupportCheck
    cartesian: CartesianActions
    joint: JointActions
    task: ReachAvoidTask
    config: SimConfig

    def continuous_actions(self) -> CartesianActions | JointActions:
        return self.cartesian if self.config.actions.space == 'cartesian' else self.joint

    def actions(self, discrete: bool) -> CartesianActions | JointActions:
        """The actions of the discrete (Cartesian primitives) or the continuous problem."""
        return self.cartesian if discrete else self.continuous_actions()

    def behavior_controller(self, discrete: bool) -> SafeBehaviorController:
        return SafeBehaviorController(self.support, self.actions(discrete),
                                      self.config.behavior, discrete)


def make_task_setup(robot: str | Path | None = None, safe_set: str | Path | None = None,
                    config: SimConfig | None = None) -> TaskSetup:
    """Load the robot and safe-set yamls (the package's where None) and build every part."""
    robot_model = load_robot(robot or config_path('robot.yaml'))
    safe_set_path = safe_set or config_path('safe_set.yaml')
    sim_config = config or SimConfig()
    period = sim_config.physics.control_period
    safe = SafeSet(robot_model, load_safe_set_config(safe_set_path))
    support = SupportCheck(safe, load_support_config(safe_set_path), period)
    cartesian = CartesianActions(safe.kinematics, sim_config.actions, safe.velocity_limit)
    return TaskSetup(robot=robot_model, safe_set=safe, support=support, cartesian=cartesian,
                     joint=JointActions(sim_config.actions, safe.velocity_limit),
                     task=ReachAvoidTask(safe, sim_config.task, cartesian, period),
                     config=sim_config)


def run_task_setup(run_config: TrainConfig) -> TaskSetup:
    """The `TaskSetup` of an experiment config (its robot, safe set and `sim` section)."""
    return make_task_setup(resolve_config_file(run_config.robot),
                           resolve_config_file(run_config.safe_set), run_config.sim)


def reach_avoid_task(run_config: TrainConfig) -> ReachAvoidTask:
    """The task of a run (robot, safe set, task section) alone, for the episode_server."""
    return run_task_setup(run_config).task


def support_of(decision: Decision) -> np.ndarray:
    """mu's support in the form the replay stores: probabilities (n,) or K samples (K, d)."""
    return decision.probs if decision.probs is not None else decision.samples


def task_spaces(setup: TaskSetup, discrete: bool, num_samples: int) -> TaskSpaces:
    """The learner's spaces: the task's observation layout and the problem's actions."""
    layout = setup.task.layout
    fields = tuple(layout)
    sizes = tuple(layout[name].stop - layout[name].start for name in fields)
    common = {'obs_dim': setup.task.observation_size, 'observation_fields': fields,
              'observation_sizes': sizes}
    if discrete:
        names = setup.cartesian.names
        return check_spaces(TaskSpaces(action_kind='discrete', action_size=len(names),
                                       action_names=tuple(names), **common))
    actions = setup.continuous_actions()
    return check_spaces(TaskSpaces(
        action_kind='continuous', action_size=int(actions.dim), num_samples=num_samples,
        action_low=tuple(float(v) for v in actions.low),
        action_high=tuple(float(v) for v in actions.high), **common))


@dataclass
class TaskProblem:
    """A task with mu and the spaces; `discrete` follows the config's action_kind."""

    setup: TaskSetup
    controller: SafeBehaviorController
    spaces: TaskSpaces

    @property
    def discrete(self) -> bool:
        return self.spaces.discrete

    @property
    def actions(self) -> CartesianActions | JointActions:
        return self.setup.actions(self.discrete)

    def stop_action(self) -> int | np.ndarray:
        """The action whose command is hold (zero joint velocity)."""
        if self.discrete:
            return self.setup.cartesian.hold_index
        return np.zeros(self.spaces.action_size)

    def is_safe_at(self, q: np.ndarray, qdot: np.ndarray, previous: np.ndarray | None = None
                   ) -> Callable[[np.ndarray], np.ndarray]:
        """Continuous: the support check of actions (N, d) at (q, qdot), judged on the command
        that is executed for them (the action clipped to its bounds); `previous` as for
        `SafeBehaviorController.act`."""
        actions, support = self.actions, self.setup.support

        def is_safe(batch: np.ndarray) -> np.ndarray:
            clipped = np.clip(np.asarray(batch, dtype=float), actions.low, actions.high)
            return support.is_safe(q, qdot, actions.to_joint(q, clipped), previous)

        return is_safe


def problem_parts(setup: TaskSetup, action_kind: str
                  ) -> tuple[SafeBehaviorController, TaskSpaces]:
    """mu and the spaces of `setup` for a discrete or continuous problem."""
    discrete = action_kind == 'discrete'
    controller = setup.behavior_controller(discrete)
    return controller, task_spaces(setup, discrete, controller.config.num_samples)


def build_task_problem(run_config: TrainConfig, setup: TaskSetup | None = None
                       ) -> TaskProblem:
    """The problem the robot-side nodes act with: no simulator is built."""
    setup = setup or run_task_setup(run_config)
    return TaskProblem(setup, *problem_parts(setup, run_config.action_kind))
