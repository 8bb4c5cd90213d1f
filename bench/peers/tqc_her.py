"""TQC with hindsight experience replay (sb3-contrib TQC, SB3's HerReplayBuffer; bench extra):
the reward-only, unconstrained ceiling of issue 15. Nothing keeps it out of the unsafe set
while it trains (its unsafe states are counted, as for any peer); it is judged behind mu's
support like every other row.

Hindsight relabelling needs the task as a goal-conditioned env (`GoalObservation`): the arm's
own state apart from the goal, the hand as the achieved goal, the task's goal as the desired
one, and the task's own reward recomputed for any goal (`ReachAvoidTask.reward`: distance,
success bonus and costly steps, all functions of the hand and the goal).
"""
from __future__ import annotations

import time

import gymnasium as gym
import numpy as np
from sb3_contrib import TQC
from stable_baselines3 import HerReplayBuffer

from ssq_ros.training.problem import ArmProblem

from .common import EvalPolicy, LongerEpisodes, MuAtState, TrainingRecorder
from .sb3_common import Progress, WarmupWithMu, training_numbers


class GoalObservation(gym.ObservationWrapper):
    """The reach-avoid env with dict observations for HER: 'observation' (joint positions,
    velocities, the hand and its offsets to the costly boxes where the task observes them: no
    goal in it, so relabelling leaves it valid), 'achieved_goal'
    (the hand) and 'desired_goal' (the goal); `compute_reward` is the task's reward of a hand
    position for any goal."""

    def __init__(self, env: gym.Env, task):
        super().__init__(env)
        self.task = task
        layout = task.layout
        # every part of the observation that does not depend on the goal
        self.state = np.concatenate([np.arange(layout[name].start, layout[name].stop)
                                     for name in ('q', 'qdot', 'ee', 'to_costly')
                                     if name in layout])
        self.hand, self.goal = layout['ee'], layout['goal']
        flat = env.observation_space
        self.observation_space = gym.spaces.Dict({
            'observation': gym.spaces.Box(flat.low[self.state], flat.high[self.state],
                                          dtype=np.float32),
            'achieved_goal': gym.spaces.Box(flat.low[self.hand], flat.high[self.hand],
                                            dtype=np.float32),
            'desired_goal': gym.spaces.Box(flat.low[self.goal], flat.high[self.goal],
                                           dtype=np.float32)})

    def observation(self, observation: np.ndarray) -> dict:
        flat = np.asarray(observation, dtype=np.float32)
        return {'observation': flat[self.state], 'achieved_goal': flat[self.hand],
                'desired_goal': flat[self.goal]}

    def compute_reward(self, achieved_goal: np.ndarray, desired_goal: np.ndarray,
                       info) -> np.ndarray:
        """The task's reward of the hand at each `achieved_goal` for each `desired_goal`
        ((N, 3) each, or (3,) for one)."""
        hands = np.atleast_2d(achieved_goal)
        goals = np.atleast_2d(desired_goal)
        rewards = np.array([self.task.reward(hand, goal)[0]
                            for hand, goal in zip(hands, goals, strict=True)], dtype=np.float32)
        return rewards if np.ndim(achieved_goal) > 1 else rewards[0]


class TQCWithMuWarmup(WarmupWithMu, TQC):
    """TQC whose warm-up steps may take mu's draw (`WarmupWithMu`)."""


def train_tqc_her(problem: ArmProblem, seed: int, steps: int, hyper: dict,
                  n_sampled_goal: int = 4, label: str = 'tqc_her', progress: bool = True,
                  warmup_with_mu: bool = False,
                  train_episode_steps: int = 0) -> tuple[EvalPolicy, dict]:
    """Train TQC with HER ('future' goals, `n_sampled_goal` relabelled per real transition) for
    `steps` env steps in `problem`'s continuous env, no shield (warm-up steps drawn by mu if
    `warmup_with_mu`; training episodes run to `train_episode_steps` if that exceeds the
    task's limit); (its deterministic policy on the flat observation, training numbers +
    curve). `hyper`: sac_hyperparameters' batch, width, discount, warm-up and learning rate
    (TQC's defaults otherwise; SB3's HER takes one-step targets only)."""
    if problem.discrete:
        raise ValueError('TQC needs the continuous env (ssq_ros/ReachAvoidContinuous-v0)')
    mu = MuAtState(problem, seed=seed) if warmup_with_mu else None  # mu's prior only
    env = problem.env if mu is None else mu
    if train_episode_steps > problem.env.task.config.max_steps:
        env = LongerEpisodes(env, train_episode_steps)
    recorder = TrainingRecorder(env, seed)
    goals = GoalObservation(recorder, problem.env.task)
    model = TQCWithMuWarmup(
        'MultiInputPolicy', goals, seed=seed, device='cpu', verbose=0,
        buffer_size=max(steps, 1), replay_buffer_class=HerReplayBuffer,
        replay_buffer_kwargs={'n_sampled_goal': int(n_sampled_goal),
                              'goal_selection_strategy': 'future'},
        warmup_from=mu, **hyper)
    started = time.monotonic()
    model.learn(total_timesteps=steps, callback=Progress(steps, recorder, label, progress))
    wall = time.monotonic() - started

    def act(obs: np.ndarray) -> np.ndarray:
        return model.predict(goals.observation(obs), deterministic=True)[0]

    return EvalPolicy(label, False, act=act, model=model), \
        training_numbers(recorder, model, wall, None)
