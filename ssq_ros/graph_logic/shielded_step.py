"""One step of the shielded policy on a measured state: what the policy_executor node runs.

mu's support at the state comes from the behavior controller (the same support check that
shields mu); `ShieldedExecutor` picks the action inside it and names where it came from. An
action of None (empty support, non-finite observation) becomes a zero-velocity command: a stop
from the measured state, never a repeat of an older command.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssq_ros.deploy.executor import ShieldedExecutor
from ssq_ros.graph_logic.behavior_loop import observe
from ssq_ros.safety.status import SafetyStatus
from ssq_ros.task.setup import TaskProblem


@dataclass(frozen=True)
class ShieldedCommand:
    command: np.ndarray
    status: SafetyStatus
    action: int | np.ndarray | None


def shielded_command(problem: TaskProblem, executor: ShieldedExecutor, q: np.ndarray,
                     qdot: np.ndarray, goal: np.ndarray, rng: np.random.Generator,
                     previous: np.ndarray | None = None) -> ShieldedCommand:
    """The joint-velocity command of the shielded policy at (q, qdot) for `goal`; `previous`
    is the command sent before, or the last few oldest first (`CommandsInFlight`), which the
    arm follows for the support check's latency."""
    q, qdot = np.asarray(q, dtype=float), np.asarray(qdot, dtype=float)
    controller = problem.controller
    goal = np.asarray(goal, dtype=float)
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(qdot)) and np.all(np.isfinite(goal))):
        return ShieldedCommand(np.zeros(problem.setup.robot.dof),
                               SafetyStatus.STATE_REJECTED_NONFINITE, None)
    obs = observe(problem, q, qdot, goal)
    decision = controller.act(q, qdot, rng, goal, previous=previous)
    if problem.discrete:
        chosen = executor.act_discrete(obs, decision.probs)
    else:
        actions, support = controller.actions, problem.setup.support

        def is_safe(batch: np.ndarray) -> np.ndarray:
            clipped = np.clip(np.asarray(batch, dtype=float), actions.low, actions.high)
            return support.is_safe(q, qdot, actions.to_joint(q, clipped), previous)

        chosen = executor.act_continuous(obs, decision.samples, is_safe)
    if chosen.action is None:
        return ShieldedCommand(np.zeros(problem.setup.robot.dof), chosen.status, None)
    return ShieldedCommand(controller.command_for(q, chosen.action), chosen.status,
                           chosen.action)
