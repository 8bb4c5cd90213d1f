"""SAC-Lagrangian on Stable-Baselines3 (bench extra): constrained RL, the safe-RL community's
answer to the same problem, trained WITHOUT mu's support shield.

Its safety is learned: a cost critic Q_c estimates the discounted number of unsafe states ahead
(the cost of a step is the referee's verdict, info['unsafe'], the count every table reports),
and a multiplier lambda >= 0, raised by gradient ascent while the estimated cost of the current
policy exceeds `cost_limit`, weighs it against the reward in the actor's objective:

    actor:       minimise  E[ alpha log pi(a|s) - Q_r(s, a) + lambda Q_c(s, a) ],  a ~ pi(.|s)
    multiplier:  lambda <- max(0, lambda + lr (E[Q_c(s, pi(s))] - cost_limit))

The reward critics and the entropy coefficient are SB3 SAC's (twin critics, min for the
target); the cost critic is a twin too, its max taken (a pessimistic cost). Both critics use
the same n-step targets (`CostReplayBuffer`). OmniSafe cannot share this project's pins, so
this is written on SB3 (issue 15).
"""
from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np
import torch
from stable_baselines3 import SAC
from stable_baselines3.common.buffers import NStepReplayBuffer
from stable_baselines3.common.utils import polyak_update

from ssq_ros.training.problem import ArmProblem

from .common import EvalPolicy, LongerEpisodes, MuAtState, TrainingRecorder
from .sb3_common import Progress, WarmupWithMu, training_numbers


class CostSamples(NamedTuple):
    observations: torch.Tensor
    actions: torch.Tensor
    next_observations: torch.Tensor
    dones: torch.Tensor
    rewards: torch.Tensor
    discounts: torch.Tensor | None
    costs: torch.Tensor  # the n-step discounted cost, as `rewards` is the n-step return


class CostReplayBuffer(NStepReplayBuffer):
    """SB3's n-step replay (n_steps=1: one-step targets) that also keeps each transition's
    cost (1.0 where the referee judged the new state unsafe) and returns its n-step discounted
    sum over exactly the steps the reward's sum covers."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.costs = np.zeros((self.buffer_size, self.n_envs), dtype=np.float32)

    def add(self, obs, next_obs, action, reward, done, infos) -> None:
        self.costs[self.pos] = [float(info['unsafe']) for info in infos]
        super().add(obs, next_obs, action, reward, done, infos)

    def _get_samples(self, batch_inds: np.ndarray, env=None) -> CostSamples:
        samples = super()._get_samples(batch_inds, env)
        rewards, self.rewards = self.rewards, self.costs
        try:  # the same n-step sum over the costs (one env: the same env index)
            costs = super()._get_samples(batch_inds, env).rewards
        finally:
            self.rewards = rewards
        return CostSamples(**samples._asdict(), costs=costs)


class SACLagrangian(WarmupWithMu, SAC):
    """SB3 SAC with a cost critic and a learned Lagrange multiplier (module docstring).
    `n_steps`: the targets' horizon (CostReplayBuffer); `warmup_from`: mu's prior
    (`WarmupWithMu`)."""

    def __init__(self, *args, cost_limit: float = 0.0, multiplier_lr: float = 3e-3,
                 n_steps: int = 1, **kwargs):
        if not np.isfinite(cost_limit) or cost_limit < 0:
            raise ValueError(f'cost_limit must be a finite number >= 0, got {cost_limit!r}')
        if not np.isfinite(multiplier_lr) or multiplier_lr <= 0:
            raise ValueError(f'multiplier_lr must be a finite number > 0, got {multiplier_lr!r}')
        self.cost_limit = float(cost_limit)
        self.multiplier_lr = float(multiplier_lr)
        gamma = kwargs.get('gamma', 0.99)
        super().__init__(*args, replay_buffer_class=CostReplayBuffer,
                         replay_buffer_kwargs={'n_steps': int(n_steps), 'gamma': gamma},
                         **kwargs)

    def _setup_model(self) -> None:
        super()._setup_model()
        self.cost_critic = self.policy.make_critic(features_extractor=None)
        self.cost_critic_target = self.policy.make_critic(features_extractor=None)
        self.cost_critic_target.load_state_dict(self.cost_critic.state_dict())
        self.cost_critic_target.set_training_mode(False)
        self.cost_critic.optimizer = torch.optim.Adam(self.cost_critic.parameters(),
                                                      lr=self.lr_schedule(1))
        self.multiplier = torch.zeros(1, requires_grad=True)
        self.multiplier_optimizer = torch.optim.Adam([self.multiplier], lr=self.multiplier_lr)

    def _entropy_coefficient(self, log_prob: torch.Tensor) -> torch.Tensor:
        """SAC's alpha: learned toward the target entropy unless fixed."""
        if self.ent_coef_optimizer is None:
            return self.ent_coef_tensor
        coefficient = torch.exp(self.log_ent_coef.detach())
        loss = -(self.log_ent_coef * (log_prob + self.target_entropy).detach()).mean()
        self.ent_coef_optimizer.zero_grad()
        loss.backward()
        self.ent_coef_optimizer.step()
        return coefficient

    @staticmethod
    def _fit(critic, observations, actions, target) -> None:
        mse = torch.nn.functional.mse_loss
        loss = 0.5 * sum(mse(q, target) for q in critic(observations, actions))
        critic.optimizer.zero_grad()
        loss.backward()
        critic.optimizer.step()

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        self.policy.set_training_mode(True)
        optimizers = [self.actor.optimizer, self.critic.optimizer, self.cost_critic.optimizer]
        self._update_learning_rate(optimizers + ([self.ent_coef_optimizer]
                                                 if self.ent_coef_optimizer else []))
        costs_seen = []
        for step in range(gradient_steps):
            batch = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)
            discounts = batch.discounts if batch.discounts is not None else self.gamma
            actions_pi, log_prob = self.actor.action_log_prob(batch.observations)
            log_prob = log_prob.reshape(-1, 1)
            alpha = self._entropy_coefficient(log_prob)
            with torch.no_grad():
                following, following_log_prob = self.actor.action_log_prob(
                    batch.next_observations)
                ahead = torch.cat(self.critic_target(batch.next_observations, following), 1)
                soft = ahead.min(1, keepdim=True).values \
                    - alpha * following_log_prob.reshape(-1, 1)
                reward_target = batch.rewards + (1 - batch.dones) * discounts * soft
                cost_ahead = torch.cat(self.cost_critic_target(batch.next_observations,
                                                               following), 1)
                cost_target = batch.costs + (1 - batch.dones) * discounts \
                    * cost_ahead.max(1, keepdim=True).values
            self._fit(self.critic, batch.observations, batch.actions, reward_target)
            self._fit(self.cost_critic, batch.observations, batch.actions, cost_target)

            reward_pi = torch.cat(self.critic(batch.observations, actions_pi), 1).min(
                1, keepdim=True).values
            cost_pi = torch.cat(self.cost_critic(batch.observations, actions_pi), 1).max(
                1, keepdim=True).values
            weight = self.multiplier.detach().clamp(min=0.0)
            actor_loss = (alpha * log_prob - reward_pi + weight * cost_pi).mean()
            self.actor.optimizer.zero_grad()
            actor_loss.backward()
            self.actor.optimizer.step()

            # gradient ascent on lambda (descent on its negative), projected onto lambda >= 0
            expected_cost = float(cost_pi.detach().mean())
            costs_seen.append(expected_cost)
            multiplier_loss = -(self.multiplier * (expected_cost - self.cost_limit)).sum()
            self.multiplier_optimizer.zero_grad()
            multiplier_loss.backward()
            self.multiplier_optimizer.step()
            with torch.no_grad():
                self.multiplier.clamp_(min=0.0)

            if step % self.target_update_interval == 0:
                polyak_update(self.critic.parameters(), self.critic_target.parameters(),
                              self.tau)
                polyak_update(self.cost_critic.parameters(),
                              self.cost_critic_target.parameters(), self.tau)
        self._n_updates += gradient_steps
        self.logger.record('train/n_updates', self._n_updates, exclude='tensorboard')
        self.logger.record('train/multiplier', self.multiplier.item())
        self.logger.record('train/expected_cost', float(np.mean(costs_seen)))


def train_sac_lagrangian(problem: ArmProblem, seed: int, steps: int, hyper: dict,
                         cost_limit: float, multiplier_lr: float, label: str = 'sac_lagrangian',
                         progress: bool = True, warmup_with_mu: bool = False,
                         train_episode_steps: int = 0) -> tuple[EvalPolicy, dict]:
    """Train SAC-Lagrangian for `steps` env steps in `problem`'s continuous env, no shield (its
    warm-up steps drawn by mu if `warmup_with_mu`: safe data to start from; training episodes
    run to `train_episode_steps` if that exceeds the task's limit); (its deterministic policy,
    training numbers + curve + the multiplier's final value). `hyper` is sac_hyperparameters'
    with 'n_steps'."""
    if problem.discrete:
        raise ValueError('SAC-Lagrangian needs the continuous env '
                         '(ssq_ros/ReachAvoidContinuous-v0)')
    mu = MuAtState(problem, seed=seed) if warmup_with_mu else None  # mu's prior only
    env = problem.env if mu is None else mu
    if train_episode_steps > problem.env.task.config.max_steps:
        env = LongerEpisodes(env, train_episode_steps)
    recorder = TrainingRecorder(env, seed)
    model = SACLagrangian('MlpPolicy', recorder, seed=seed, device='cpu', verbose=0,
                          buffer_size=max(steps, 1), cost_limit=cost_limit,
                          multiplier_lr=multiplier_lr,
                          warmup_from=mu, **hyper)
    started = time.monotonic()
    model.learn(total_timesteps=steps, callback=Progress(steps, recorder, label, progress))
    wall = time.monotonic() - started

    def act(obs: np.ndarray) -> np.ndarray:
        return model.predict(obs, deterministic=True)[0]

    training = {**training_numbers(recorder, model, wall, None),
                'multiplier_final': model.multiplier.item()}
    return EvalPolicy(label, False, act=act, model=model), training
