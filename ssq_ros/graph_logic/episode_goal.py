"""The goal of an on-robot episode: a real arm starts where it is, so only the goal is chosen.

mujoco_sim samples start and goal together from the episode's seed (`ReachAvoidTask.
sample_episode`); on a real arm the start is the measured state, and the goal comes from the same
seeded generator, goal split (held-out seeds draw held-out goal positions) and the task's own
`sample_goal`, so it is valid from that state (its straight path from the hand crosses a
keep-out zone when the task asks for it, and it is at least two success radii away). A measured
state outside the safe set or still moving is refused: the episode would start somewhere the
behavior controller was never meant to be.

Where the task asks for a crossing goal but none is valid from where the arm stands (from the
default task's home posture, none is), `fallback` takes any goal of the split instead: the arm
is never moved but by an episode, and that episode brings it where crossing goals usually are
(from 56 % of the goal positions a crossing training goal is valid, against 10 % of the
random starts near home). Such an episode says `crosses_zone=False`.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ssq_ros.task.reach_avoid import ReachAvoidTask, goal_split_of_seed


class EpisodeStartError(ValueError):
    """The measured state cannot start an episode; the message says why."""


class EpisodeGoal(NamedTuple):
    goal: np.ndarray  # (3,)
    crosses_zone: bool  # its straight path from the hand meets a keep-out zone


def goal_from_measured_state(task: ReachAvoidTask, q: np.ndarray, qdot: np.ndarray, seed: int,
                             max_start_speed: float, fallback: bool = False) -> EpisodeGoal:
    """The goal of the episode with env seed `seed` starting at the measured (q, qdot); with
    `fallback`, a goal that need not cross a zone when no crossing one is valid."""
    dof = task.robot.dof
    q, qdot = np.asarray(q, dtype=float), np.asarray(qdot, dtype=float)
    if q.shape != (dof,) or qdot.shape != (dof,):
        raise EpisodeStartError(f'measured state must have {dof} positions and velocities, got '
                                f'{q.shape} and {qdot.shape}')
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(qdot))):
        raise EpisodeStartError('measured state contains NaN or inf')
    speed = float(np.max(np.abs(qdot)))
    if speed > max_start_speed:
        joint = task.robot.joint_names[int(np.argmax(np.abs(qdot)))]
        raise EpisodeStartError(f'arm is not at rest: joint {joint!r} moves at {speed:.3g} '
                                f'rad/s (limit {max_start_speed:g})')
    margins = task.safe_set.margins(q[None], qdot[None])[0]
    tightest = int(np.argmin(margins))
    if margins[tightest] < 0.0:
        raise EpisodeStartError(f'measured state is outside the safe set: '
                                f'{task.safe_set.names[tightest]} margin '
                                f'{margins[tightest]:.4g}')
    ee = task.kinematics.ee_position(q)
    split = goal_split_of_seed(seed)
    goal = task.sample_goal(np.random.default_rng(seed), ee, split)
    if goal is not None:
        return EpisodeGoal(goal, bool(task.crosses_zone(ee, goal)))
    if fallback and task.config.require_crossing:
        goal = task.sample_goal(np.random.default_rng(seed), ee, split, require_crossing=False)
        if goal is not None:
            return EpisodeGoal(goal, False)
    crossing = ' and cross a keep-out zone' if task.config.require_crossing else ''
    raise EpisodeStartError(f'no goal of the task is valid from the hand at '
                            f'{np.round(ee, 3).tolist()} (goals lie more than '
                            f'{2 * task.config.success_radius:g} m away{crossing}); '
                            'move the arm to another start')


class OperatorGoalError(ValueError):
    """An operator's goal cannot be used; the message says why, for the operator."""


def operator_goal(task: ReachAvoidTask, point: np.ndarray, frame: str, q: np.ndarray
                  ) -> np.ndarray:
    """An operator's goal (RViz's Publish Point: a point in `frame`) in the robot's base frame,
    checked the way the task's own goals are, from the measured posture `q`.

    `frame` must be the base frame ('' counts as it) or another link of the robot (transformed by
    the arm's kinematics at `q`; tf2 is not needed for the robot's own frames). The goal must lie
    in the task's goal box (the policy never saw goals elsewhere), and the posture the actions
    settle in when they drive the hand there from `q` must hold the hand on it and lie in S (the
    rule the task's goal pool follows). Otherwise OperatorGoalError says which of these failed.
    """
    robot, kinematics = task.robot, task.kinematics
    point = np.asarray(point, dtype=float)
    q = np.asarray(q, dtype=float)
    if point.shape != (3,) or not np.all(np.isfinite(point)):
        raise OperatorGoalError(f'the point must be 3 finite coordinates, got '
                                f'{point.tolist()}')
    if frame not in ('', robot.base_frame):
        if not robot.model.existFrame(frame):
            raise OperatorGoalError(f'frame {frame!r} is not a link of the robot: set RViz\'s '
                                    f'Fixed Frame to {robot.base_frame!r}')
        placement = kinematics.frame_placement(q, frame)
        point = placement.rotation @ point + placement.translation
    cfg = task.config
    low, high = np.array(cfg.goal_lower), np.array(cfg.goal_upper)
    if np.any(point < low) or np.any(point > high):
        raise OperatorGoalError(f'{np.round(point, 3).tolist()} is outside the task\'s goal box '
                                f'{low.tolist()} .. {high.tolist()} (the policy never saw goals '
                                'there)')
    settled = task.actions.settle(q, point, task.control_period)
    miss = float(np.linalg.norm(kinematics.ee_position(settled) - point))
    if miss >= cfg.success_radius / 4:
        raise OperatorGoalError(f'unreachable: the hand stops {miss:.3f} m from '
                                f'{np.round(point, 3).tolist()}')
    margins = task.safe_set.margins(settled[None], np.zeros((1, robot.dof)))[0]
    tightest = int(np.argmin(margins))
    if margins[tightest] < 0.0:
        raise OperatorGoalError(f'unsafe: holding the hand at {np.round(point, 3).tolist()} '
                                f'leaves S ({task.safe_set.names[tightest]} margin '
                                f'{margins[tightest]:.3f})')
    return point
