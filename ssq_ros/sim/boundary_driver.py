"""A boundary-hugging driver: the worst a shielded policy can do with the support it is given.

A learned policy behind the support shield only ever sends commands the support check accepted
at the current state, but it picks among them with purpose: it heads for the goal and hugs the
keep-out zones on the way, where mu rarely goes. This driver does that on purpose (the accepted
discrete primitive closest to the goal direction, optionally preferring the one whose checked
path comes closest to the boundary) and measures the safe set's own margins along the way, so
that the support check's promise (the arm stays in S) is tested where a policy takes it, not
only where mu does.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ssq_ros.sim.env import ReachAvoidSetup
from ssq_ros.sim.simulator import ArmSimulator


@dataclass(frozen=True)
class BoundaryRun:
    """What a run of the driver saw; margins are the SafeSet's (>= 0 inside S)."""

    steps: int
    min_margin: float
    min_margin_constraint: str
    states_outside: int
    """Measured states (every control step, or every physics step) with a margin < 0."""
    referee_unsafe: int
    hold_refused: int
    successes: int


def hugging_action(setup: ReachAvoidSetup, q: np.ndarray, qdot: np.ndarray, goal: np.ndarray,
                   hug_weight: float) -> int:
    """Index of the accepted discrete primitive maximising cos(angle to the goal) - hug_weight
    x (its checked path margin [m]); hold only when nothing else is accepted."""
    support, actions = setup.support, setup.cartesian
    commands = actions.discrete_commands(q)
    margins = support.margins(q, qdot, commands)
    accepted = support.is_safe(q, qdot, commands)
    accepted[actions.hold_index] = False
    if not accepted.any():
        return actions.hold_index
    offset = goal - setup.safe_set.kinematics.ee_position(q)
    norms = np.linalg.norm(actions.directions, axis=1) * max(np.linalg.norm(offset), 1e-9)
    cosine = actions.directions @ offset / np.maximum(norms, 1e-12)
    score = np.where(accepted, cosine - hug_weight * margins, -np.inf)
    return int(np.argmax(score))


Chooser = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""(q, qdot, goal) -> the joint-velocity command to send."""


def hugging_chooser(setup: ReachAvoidSetup, hug_weight: float) -> Chooser:
    """The driver's commands: `hugging_action`'s primitive at each state."""
    def choose(q: np.ndarray, qdot: np.ndarray, goal: np.ndarray) -> np.ndarray:
        return setup.cartesian.discrete_commands(q)[
            hugging_action(setup, q, qdot, goal, hug_weight)]
    return choose


def drive(setup: ReachAvoidSetup, simulator: ArmSimulator, steps: int, seed: int,
          episode_steps: int, choose: Chooser, substeps: int = 1) -> BoundaryRun:
    """Send `choose`'s command for `steps` decisions from episodes of the task (seeded), each
    for `substeps` calls of `simulator.step`; measure S's margins after every call (a simulator
    whose control period is the physics timestep, called control_period / timestep times per
    decision, measures every physics step: its ramp continues where it left off)."""
    rng = np.random.default_rng(seed)
    safe_set, task = setup.safe_set, setup.task
    worst, worst_name = np.inf, ''
    outside = unsafe = hold_refused = successes = 0

    def start_episode() -> np.ndarray:
        q, goal = task.sample_episode(rng)
        simulator.reset(q)
        simulator.set_goal(goal)
        return goal

    goal = start_episode()
    episode = 0
    for _ in range(steps):
        q, qdot = simulator.q, simulator.qdot
        hold_refused += not setup.support.hold_is_safe(q, qdot)
        command = choose(q, qdot, goal)
        states = []
        for _ in range(substeps):
            unsafe += simulator.step(command).unsafe
            states.append((simulator.q, simulator.qdot))
        positions, velocities = (np.array(column) for column in zip(*states, strict=True))
        margins = safe_set.margins(positions, velocities)
        lowest = margins.min(axis=1)
        outside += int(np.sum(lowest < 0.0))
        if lowest.min() < worst:
            worst = float(lowest.min())
            worst_name = safe_set.names[int(np.argmin(margins.min(axis=0)))]
        episode += 1
        reached = task.reward(simulator.ee_position(), goal)[1]
        successes += reached
        if reached or episode >= episode_steps:
            goal, episode = start_episode(), 0
    return BoundaryRun(steps, worst, worst_name, outside, unsafe, hold_refused, successes)
