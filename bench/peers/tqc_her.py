"""TQC with hindsight experience replay (sb3-contrib TQC, SB3's HerReplayBuffer; bench extra):
the reward-only, unconstrained ceiling of issue 15. Nothing keeps it out of the unsafe set
while it trains (its unsafe states are counted, as for any peer); it is judged behind mu's
support like every other row.

Hindsight relabelling needs the task as a goal-conditioned env (`GoalObservation`,
sb3_common.py).
"""
from __future__ import annotations

import time

import numpy as np
from sb3_contrib import TQC
from stable_baselines3 import HerReplayBuffer

from ssq_ros.training.problem import ArmProblem

from .common import EvalPolicy, LongerEpisodes, MuAtState, TrainingRecorder
from .sb3_common import GoalObservation, Progress, WarmupWithMu, training_numbers


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
