"""The arm reach-avoid problem as the trainer sees it: env, behavior controller mu, spaces.

Glue only: everything is built by `ssq_ros.sim.env.make_setup`; this module names the pieces
the learner and the executor need (mu's support at a state, the one-step support check of a
continuous action, the stop action) and derives the learner's `TaskSpaces` from the env.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ssq_ros.control.safe_behavior import Decision, SafeBehaviorController
from ssq_ros.sim.env import ReachAvoidEnv, ReachAvoidSetup, make_setup
from ssq_ros.training.config import TrainConfig, resolve_config_file
from ssq_ros.training.learner import TaskSpaces, check_spaces


@dataclass
class ArmProblem:
    """One env with its behavior controller; `discrete` follows the config's action_kind."""

    setup: ReachAvoidSetup
    env: ReachAvoidEnv
    controller: SafeBehaviorController
    spaces: TaskSpaces

    @property
    def discrete(self) -> bool:
        return self.spaces.discrete

    def behavior(self, rng: np.random.Generator) -> Decision:
        """mu at the env's current state, and the action it draws."""
        q, qdot = self.env.joint_state()
        return self.controller.act(q, qdot, rng, self.env.goal)

    def stop_action(self) -> int | np.ndarray:
        """The action whose command is hold (zero joint velocity)."""
        if self.discrete:
            return self.setup.cartesian.hold_index
        return np.zeros(self.spaces.action_size)

    def is_safe_here(self) -> Callable[[np.ndarray], np.ndarray]:
        """Continuous: the support check of actions (N, d) at the env's current state, judged
        on the command the env will execute (the action clipped to its bounds)."""
        q, qdot = self.env.joint_state()
        actions = self.env.actions

        def is_safe(batch: np.ndarray) -> np.ndarray:
            clipped = np.clip(np.asarray(batch, dtype=float), actions.low, actions.high)
            return self.setup.support.is_safe(q, qdot, actions.to_joint(q, clipped))

        return is_safe


def support_of(decision: Decision) -> np.ndarray:
    """mu's support in the form the replay stores: probabilities (n,) or K samples (K, d)."""
    return decision.probs if decision.probs is not None else decision.samples


def spaces_of(env: ReachAvoidEnv, controller: SafeBehaviorController) -> TaskSpaces:
    layout = env.task.layout
    fields = tuple(layout)
    sizes = tuple(layout[name].stop - layout[name].start for name in fields)
    common = {'obs_dim': env.task.observation_size, 'observation_fields': fields,
              'observation_sizes': sizes}
    if env.discrete:
        names = env.setup.cartesian.names
        return check_spaces(TaskSpaces(action_kind='discrete', action_size=len(names),
                                       action_names=tuple(names), **common))
    actions = env.actions
    return check_spaces(TaskSpaces(
        action_kind='continuous', action_size=int(actions.dim),
        num_samples=controller.config.num_samples,
        action_low=tuple(float(v) for v in actions.low),
        action_high=tuple(float(v) for v in actions.high), **common))


def build_problem(config: TrainConfig, setup: ReachAvoidSetup | None = None) -> ArmProblem:
    """Env + mu for `config` (pass `setup` to share the compiled scene between two envs)."""
    if setup is None:
        setup = make_setup(resolve_config_file(config.robot),
                           resolve_config_file(config.safe_set), config=config.sim)
    discrete = config.action_kind == 'discrete'
    env = ReachAvoidEnv(discrete=discrete, setup=setup)
    controller = setup.behavior_controller(discrete)
    return ArmProblem(setup, env, controller, spaces_of(env, controller))
