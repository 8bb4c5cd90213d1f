"""mu acting on measured states: the safe_behavior node's logic, without ROS.

Every node of the graph builds the same problem from the same experiment YAML
(`load_run_config` + `ssq_ros.task.setup.build_task_problem`, no simulator), so the behavior, the
learner and the executor agree on the spaces, the actions and the support check by
construction.

`BehaviorLoop.on_state` takes one measured state (q, qdot) of the current episode and returns
what to do: the joint-velocity command of mu's draw (None when the episode just ended or mu is
not the one acting), the transition that state completes (s, a, r, s', done, mu's support at
s'), and the episode's summary when it ended (goal reached, or the time limit). The reward is the
task's own (`ReachAvoidTask.reward`, as in the gym env), with the hand position from the safety
layer's kinematics, so the loop runs on any arm that reports joint states.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssq_ros.graph_logic.phases import RunPhase
from ssq_ros.graph_logic.transitions import EpisodeSummary, Transition
from ssq_ros.safety.support import CommandsInFlight
from ssq_ros.task.setup import TaskProblem, support_of
from ssq_ros.training.config import load_run_config

__all__ = ['BehaviorLoop', 'BehaviorStep', 'load_run_config', 'observe']


def observe(problem: TaskProblem, q: np.ndarray, qdot: np.ndarray,
            goal: np.ndarray) -> np.ndarray:
    """The task's observation of a measured state (hand position from the kinematics)."""
    ee = problem.setup.safe_set.kinematics.ee_position(q)
    return problem.setup.task.observation(q, qdot, ee, goal)


@dataclass(frozen=True)
class BehaviorStep:
    command: np.ndarray | None
    transition: Transition | None
    summary: EpisodeSummary | None
    fallback: bool = False
    """mu's support was empty and the command is hold (reported as NO_SAFE_ACTION_STOP)."""


class BehaviorLoop:
    """Episodes of mu (or of another actor) from the measured states, one state at a time."""

    def __init__(self, problem: TaskProblem, seed: int, first_seq: int = 0):
        self.problem = problem
        self.task = problem.setup.task
        self.rng = np.random.default_rng(seed)
        self.seq = first_seq  # the next transition's number
        self.phase = RunPhase.TRAIN
        self.episode = -1
        self.goal: np.ndarray | None = None
        self.active = False
        self._length = 0
        self._return = 0.0
        self._costly_steps = 0
        self._seen_start = False
        self._pending: tuple[np.ndarray, int | np.ndarray] | None = None
        self._last_obs: np.ndarray | None = None
        self._sent = CommandsInFlight(problem.setup.robot.dof,
                                      problem.setup.support.commands_in_flight)
        """mu's last commands, which the arm follows for the support check's latency."""

    def start_episode(self, phase: RunPhase, episode: int, goal: np.ndarray) -> None:
        """The arm was reset; the next state given is the episode's first."""
        goal = np.asarray(goal, dtype=float)
        if goal.shape != (3,) or not np.all(np.isfinite(goal)):
            raise ValueError(f'goal must be 3 finite coordinates, got {goal!r}')
        self.phase, self.episode, self.goal = phase, episode, goal
        self.active, self._seen_start = True, False
        self._length, self._return, self._pending, self._last_obs = 0, 0.0, None, None
        self._costly_steps = 0
        self._sent.reset()  # the arm starts at rest

    def end_episode(self) -> None:
        """Abandon the current episode (the phase changed); nothing more is emitted for it."""
        self.active, self._pending = False, None

    def on_state(self, q: np.ndarray, qdot: np.ndarray, mu_acts: bool,
                 previous_action: int | np.ndarray | None = None) -> BehaviorStep:
        """One new measured state of the running episode (see the module docstring).

        When another actor acts (`mu_acts` False), `previous_action` is the action it took at
        the previous state, if known: the transition is then emitted with that action (for the
        value calibration of the policy), with mu's support at this state.
        """
        if not self.active:
            raise RuntimeError('on_state: no episode is running')
        q, qdot = np.asarray(q, dtype=float), np.asarray(qdot, dtype=float)
        obs = observe(self.problem, q, qdot, self.goal)
        reward, reached = 0.0, False
        if self._seen_start:
            ee = obs[self.task.layout['ee']].astype(float)
            reward, reached = self.task.reward(ee, self.goal)
            self._costly_steps += int(self.task.in_costly_region(ee))
            self._length += 1
            self._return += reward
        self._seen_start = True
        ended = reached or self._length >= self.task.config.max_steps
        pending = self._pending
        if not mu_acts and previous_action is not None and self._last_obs is not None:
            pending = (self._last_obs, previous_action)
        decision = self.problem.controller.act(
            q, qdot, self.rng, self.goal, previous=self._sent.commands if mu_acts else None) \
            if mu_acts or pending is not None else None
        transition = None
        if pending is not None and decision is not None:
            prev_obs, prev_action = pending
            transition = Transition(self.seq, self.phase, self.episode, prev_obs, prev_action,
                                    reward, obs, reached, support_of(decision))
            self.seq += 1
        self._pending, self._last_obs = None, obs
        if ended:
            self.active = False
            summary = EpisodeSummary(self.phase, self.episode, self._return,
                                     self.task.succeeded(reached, self._costly_steps),
                                     self._length)
            return BehaviorStep(None, transition, summary)
        if not mu_acts:
            return BehaviorStep(None, transition, None)
        self._pending = (obs, decision.action)
        self._sent.push(decision.command)
        return BehaviorStep(decision.command, transition, None, decision.fallback)
