"""The arm reach-avoid problem as the trainer sees it: the task problem plus its gym env.

Glue only: the task, mu and the spaces are `ssq_ros.task.setup` (the same `TaskProblem` the
robot-side nodes build without MuJoCo); this module adds the simulated env (`ssq_ros.sim.env`)
and asks mu and the support check at the env's current state.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ssq_ros.config import resolve_config_file
from ssq_ros.control.safe_behavior import Decision
from ssq_ros.sim.env import ReachAvoidEnv, ReachAvoidSetup, make_setup
from ssq_ros.task.setup import TaskProblem, problem_parts, support_of
from ssq_ros.training.config import TrainConfig

__all__ = ['ArmProblem', 'build_problem', 'support_of']


@dataclass
class ArmProblem(TaskProblem):
    """A `TaskProblem` (setup with its scene, mu, spaces) and the env it acts in."""

    setup: ReachAvoidSetup
    env: ReachAvoidEnv

    def behavior(self, rng: np.random.Generator) -> Decision:
        """mu at the env's current state, and the action it draws."""
        q, qdot = self.env.joint_state()
        return self.controller.act(q, qdot, rng, self.env.goal,
                                   previous=self.env.in_flight.commands)

    def is_safe_here(self) -> Callable[[np.ndarray], np.ndarray]:
        """Continuous: the support check of actions (N, d) at the env's current state, judged
        on the command the env will execute (the action clipped to its bounds)."""
        return self.is_safe_at(*self.env.joint_state(), previous=self.env.in_flight.commands)


def build_problem(config: TrainConfig, setup: ReachAvoidSetup | None = None) -> ArmProblem:
    """Env + mu for `config` (pass `setup` to share the compiled scene between two envs)."""
    if setup is None:
        setup = make_setup(resolve_config_file(config.robot),
                           resolve_config_file(config.safe_set), config=config.sim)
    controller, spaces = problem_parts(setup, config.action_kind)
    env = ReachAvoidEnv(discrete=spaces.discrete, setup=setup)
    return ArmProblem(setup, controller, spaces, env)
