"""gymnasium environments of the reach-avoid task on the simulated arm.

`ssq_ros/ReachAvoid-v0` (discrete end-effector primitives) and
`ssq_ros/ReachAvoidContinuous-v0` (a continuous end-effector velocity in m/s, or joint
velocities in rad/s with actions.space: joint). The environment never shields: it executes the
action it is given, and `info` carries the referee's verdict of the period every step
(`unsafe`, `min_margin`, `constraint`), so any RL library can train here and be judged by the
same referee as the safe behavior controller. Episodes do not end on unsafe states.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import gymnasium as gym
import numpy as np

from ssq_ros.safety.support import CommandsInFlight
from ssq_ros.sim.scene import Scene, build_scene
from ssq_ros.sim.simulator import ArmSimulator
from ssq_ros.task.config import SimConfig, load_sim_config
from ssq_ros.task.reach_avoid import ReachAvoidTask, goal_split_of_seed
from ssq_ros.task.setup import TaskSetup, make_task_setup

# Observation bounds beyond anything the arm can reach: metres (hand, goal), rad/s (joints).
POSITION_BOUND = 10.0
VELOCITY_BOUND = 50.0


@dataclass
class ReachAvoidSetup(TaskSetup):
    """A `TaskSetup` (robot, safe set, support check, actions, task, config) and its MuJoCo
    scene."""

    scene: Scene


def make_setup(robot: str | Path | None = None, safe_set: str | Path | None = None,
               sim: str | Path | None = None, config: SimConfig | None = None
               ) -> ReachAvoidSetup:
    """The task (`ssq_ros.task.setup.make_task_setup`; package robot and safe set where None)
    and its scene. The `sim` section is `config`, else the overrides file `sim`, else the
    defaults."""
    if config is None:
        config = load_sim_config(sim) if sim is not None else SimConfig()
    task = make_task_setup(robot, safe_set, config)
    scene = build_scene(task.robot, task.safe_set.config, config.physics,
                        goal_radius=config.task.success_radius)
    return ReachAvoidSetup(**{f.name: getattr(task, f.name) for f in fields(TaskSetup)},
                           scene=scene)


def observation_space(task: ReachAvoidTask) -> gym.spaces.Box:
    """Bounds of the observation: the URDF joint ranges, and generous ones elsewhere."""
    robot, layout = task.robot, task.layout
    high = np.full(task.observation_size, POSITION_BOUND)
    low = -high
    # Soft joint limits may be overshot a little in collisions; 0.5 rad covers it.
    low[layout['q']], high[layout['q']] = robot.position_lower - 0.5, robot.position_upper + 0.5
    low[layout['qdot']], high[layout['qdot']] = -VELOCITY_BOUND, VELOCITY_BOUND
    return gym.spaces.Box(low.astype(np.float32), high.astype(np.float32))


class ReachAvoidEnv(gym.Env):
    """The reach-avoid task as a gymnasium.Env (see the module docstring)."""

    metadata = {'render_modes': []}

    def __init__(self, discrete: bool = True, robot: str | None = None,
                 safe_set: str | None = None, sim: str | None = None,
                 setup: ReachAvoidSetup | None = None):
        self.setup = setup or make_setup(robot, safe_set, sim)
        self.discrete = discrete
        self.task = self.setup.task
        self.sim = ArmSimulator(self.setup.robot, self.setup.scene, self.setup.config.physics)
        self.actions = self.setup.actions(discrete)
        if discrete:
            self.action_space = gym.spaces.Discrete(len(self.setup.cartesian.names))
        else:
            self.action_space = gym.spaces.Box(self.actions.low.astype(np.float32),
                                               self.actions.high.astype(np.float32))
        self.observation_space = observation_space(self.task)
        self.goal = np.zeros(3)
        self.steps = 0
        self.in_flight = CommandsInFlight(self.setup.robot.dof,
                                          self.setup.support.commands_in_flight)

    def joint_state(self) -> tuple[np.ndarray, np.ndarray]:
        """(q, qdot) of the simulated arm as measured (the true state unless the physics
        config sets state_latency or state_noise), in the robot's command order."""
        return self.sim.measured_q, self.sim.measured_qdot

    def _observation(self) -> np.ndarray:
        q, qdot = self.joint_state()
        return self.task.observation(q, qdot, self.sim.measured_ee_position(), self.goal)

    def command_for(self, action) -> np.ndarray:
        """The joint-velocity command this env executes for `action` (no shielding), from
        the measured joint positions."""
        q = self.sim.measured_q
        if self.discrete:
            if not self.action_space.contains(action):
                raise ValueError(f'action {action!r} is not in {self.action_space}')
            directions = self.setup.cartesian.directions
            return self.actions.to_joint(q, directions[int(action)][None])[0]
        action = np.asarray(action, dtype=float).reshape(-1)
        if action.shape != self.action_space.shape or not np.all(np.isfinite(action)):
            raise ValueError(f'action must be {self.action_space.shape} finite values, got '
                             f'{action!r}')
        action = np.clip(action, self.actions.low, self.actions.high)
        return self.actions.to_joint(q, action[None])[0]

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """A new episode. Its goal comes from the training half of the goal positions for an
        even seed, the held-out half for an odd one (`goal_split_of_seed`), any for no seed;
        `options={'goal_split': 'train' | 'heldout' | None}` chooses explicitly."""
        options = options or {}
        unknown = set(options) - {'goal_split'}
        if unknown:
            raise ValueError(f'unknown reset options {sorted(unknown)}; known: goal_split')
        split = options.get('goal_split', goal_split_of_seed(seed))
        super().reset(seed=seed)
        if seed is not None:
            self.sim.rng = np.random.default_rng(seed)
        q, goal = self.task.sample_episode(self.np_random, split)
        verdict = self.sim.reset(q)
        if verdict.unsafe:
            raise RuntimeError(f'the sampled start is unsafe for the referee ({verdict}): the '
                               'safety layer and the MuJoCo model disagree')
        self.goal = goal
        self.sim.set_goal(goal)
        self.steps = 0
        self.costly_steps = 0
        # The arm rests at the start: the commands it follows until the first step's acts.
        self.in_flight.reset()
        info = {'unsafe': verdict.unsafe, 'min_margin': verdict.min_margin,
                'constraint': verdict.constraint, 'goal': goal.copy(),
                'stamp': self.sim.measured_stamp}
        return self._observation(), info

    def step(self, action):
        command = self.command_for(action)
        verdict = self.sim.step(command)
        self.in_flight.push(command)
        self.steps += 1
        ee = self.sim.ee_position()
        reward, reached = self.task.reward(ee, self.goal)
        costly = self.task.in_costly_region(ee)
        self.costly_steps += int(costly)
        truncated = self.steps >= self.task.config.max_steps and not reached
        info = {'unsafe': verdict.unsafe, 'min_margin': verdict.min_margin,
                'constraint': verdict.constraint, 'costly': costly,
                'success': self.task.succeeded(reached, self.costly_steps),
                'distance': float(np.linalg.norm(self.goal - ee)), 'command': command,
                'stamp': self.sim.measured_stamp}
        return self._observation(), float(reward), reached, truncated, info
