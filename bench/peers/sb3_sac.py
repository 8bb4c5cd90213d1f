"""Soft Actor-Critic from Stable-Baselines3 on the continuous reach-avoid env (bench extra).

SAC explores with its own stochastic policy from the first step: nothing keeps it out of the
unsafe set, so the referee's count during training is what a team would see on a real arm.
`penalty > 0` subtracts that much reward for every unsafe step (penalised safe RL).
`shielded=True` trains SAC behind SSQ's own support shield (`SupportShield`): every action it
proposes runs only if mu's support accepts it, else mu's nearest safe sample runs, and the
replay stores the action that ran (`ShieldedSAC`, sb3_common.py). `her_goals > 0` adds
hindsight experience replay (SB3's HerReplayBuffer, 'future' goals, that many relabelled per
real transition) on the goal-conditioned view of the task (`GoalObservation`): the lever SSQ
has on the costly task (4 hindsight goals), given to SAC behind the same shield.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from stable_baselines3 import SAC, HerReplayBuffer

from ssq_ros.training.problem import ArmProblem

from .common import (
    EvalPolicy,
    LongerEpisodes,
    SupportShield,
    TrainingRecorder,
    UnsafePenalty,
)
from .sb3_common import GoalObservation, Progress, ShieldedSAC, training_numbers


def sac_hyperparameters(batch_size: int, hidden: list[int], gamma: float,
                        learning_starts: int) -> dict:
    """SB3's SAC defaults, with the batch, width, discount and warm-up SSQ uses."""
    return {'batch_size': batch_size, 'gamma': gamma, 'learning_starts': learning_starts,
            'train_freq': 1, 'gradient_steps': 1, 'policy_kwargs': {'net_arch': list(hidden)}}


def train_sac(problem: ArmProblem, seed: int, steps: int, hyper: dict, penalty: float = 0.0,
              label: str = 'sac', progress: bool = True, shielded: bool = False,
              warmup_with_mu: bool = False, train_episode_steps: int = 0,
              her_goals: int = 0) -> tuple[EvalPolicy, dict]:
    """Train SAC for `steps` env steps in `problem`'s env (behind mu's support if `shielded`;
    its warm-up steps drawn by mu if `warmup_with_mu`; training episodes run to
    `train_episode_steps` if that exceeds the task's limit; with hindsight relabelling of
    `her_goals` goals per transition if > 0, one-step targets then); (its deterministic
    policy, training numbers + curve; no critic readout with HER)."""
    if problem.discrete:
        raise ValueError('SAC needs the continuous env (ssq_ros/ReachAvoidContinuous-v0)')
    if warmup_with_mu and not shielded:
        raise ValueError('mu\'s warm-up draws from the shield\'s mu (shielded=True)')
    shield = SupportShield(problem, seed=seed) if shielded else None
    env = problem.env if shield is None else shield
    if train_episode_steps > problem.env.task.config.max_steps:
        env = LongerEpisodes(env, train_episode_steps)
    recorder = TrainingRecorder(env, seed)
    wrapped = UnsafePenalty(recorder, penalty) if penalty > 0 else recorder
    prior = {'warmup_from': shield} if warmup_with_mu else {}
    goals = None
    if her_goals > 0:
        if hyper.get('n_steps', 1) != 1:
            raise ValueError(f"SB3's HER takes one-step targets only, got n_steps "
                             f"{hyper['n_steps']}")
        goals = wrapped = GoalObservation(wrapped, problem.env.task)
        prior.update(replay_buffer_class=HerReplayBuffer, replay_buffer_kwargs={
            'n_sampled_goal': int(her_goals), 'goal_selection_strategy': 'future'})
    model = (ShieldedSAC if shielded else SAC)(
        'MlpPolicy' if goals is None else 'MultiInputPolicy', wrapped, seed=seed,
        device='cpu', verbose=0, buffer_size=max(steps, 1), **prior, **hyper)
    started = time.monotonic()
    model.learn(total_timesteps=steps, callback=Progress(steps, recorder, label, progress))
    wall = time.monotonic() - started
    policy = model.policy

    def act(obs: np.ndarray) -> np.ndarray:
        return model.predict(obs if goals is None else goals.observation(obs),
                             deterministic=True)[0]

    @torch.no_grad()
    def q(observations: np.ndarray, actions: np.ndarray) -> np.ndarray:
        obs_t = torch.as_tensor(observations, dtype=torch.float32)
        act_t = torch.as_tensor(policy.scale_action(np.asarray(actions)), dtype=torch.float32)
        return torch.min(torch.cat(policy.critic(obs_t, act_t), dim=1), dim=1).values.numpy()

    training = training_numbers(recorder, model, wall, shield)
    return EvalPolicy(label, False, act=act, q=q if goals is None else None,
                      model=model), training
