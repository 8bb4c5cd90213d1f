"""What the SB3 peers share (bench extra). Off-policy learners behind `SupportShield` store
the action that ran, not the learner's proposal, so a shield that replaced the proposal does not
teach the critic the value of an action that never ran. The progress bar and the training
numbers every SB3 peer reports."""
from __future__ import annotations

import sys

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import DQN, SAC
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from tqdm import tqdm

from .common import MuAtState, SupportShield, TrainingRecorder


class StoresExecutedAction:
    """Mixin for SB3 off-policy algorithms: buffer actions from info['executed_action']."""

    def buffer_action_of(self, executed) -> np.ndarray:
        return np.asarray(executed)

    def _store_transition(self, replay_buffer, buffer_action, new_obs, reward, dones, infos):
        stored = np.array(buffer_action, copy=True)
        for i, info in enumerate(infos):
            stored[i] = self.buffer_action_of(info['executed_action'])
        super()._store_transition(replay_buffer, stored, new_obs, reward, dones, infos)


# Hindsight relabelling (TQC+HER, SAC behind the shield with HER) needs the task as a
# goal-conditioned env: the arm's own state apart from the goal, the hand as the achieved goal,
# the task's goal as the desired one, and the task's own reward recomputed for any goal
# (`ReachAvoidTask.reward`: distance, success bonus and costly steps, all functions of the hand
# and the goal).
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


class WarmupWithMu:
    """Mixin for SB3's off-policy continuous learners (SAC, TQC): with `warmup_from` (the
    `MuAtState` or `SupportShield` around the env it trains in), its warm-up steps take mu's own
    draw instead of a uniform action, so its replay starts filled with mu's data: mu's prior."""

    def __init__(self, *args, warmup_from: MuAtState | None = None, **kwargs):
        self.warmup_from = warmup_from
        super().__init__(*args, **kwargs)

    def _sample_action(self, learning_starts, action_noise=None, n_envs=1):
        if self.warmup_from is None or self.num_timesteps >= learning_starts:
            return super()._sample_action(learning_starts, action_noise, n_envs)
        if n_envs != 1:
            raise ValueError('mu\'s warm-up reads one env\'s state: n_envs must be 1')
        drawn = np.asarray(self.warmup_from.decision().action, dtype=float)[None]
        return drawn, self.policy.scale_action(drawn)


class ShieldedSAC(StoresExecutedAction, WarmupWithMu, SAC):
    """SAC behind the shield; its replay holds actions in its [-1, 1] scale. With
    `warmup_from` (the shield it trains behind): SAC with mu's prior (`WarmupWithMu`)."""

    def buffer_action_of(self, executed) -> np.ndarray:
        return self.policy.scale_action(np.asarray(executed, dtype=float))


class ShieldedDQN(StoresExecutedAction, DQN):
    """DQN's replay holds the primitive's index."""


class SupportInObservation(gym.ObservationWrapper):
    """Appends mu's support at the new state (1.0 for each primitive mu allows, else 0.0) to
    the observation, so the replay keeps it for `MaskedDQN`'s target."""

    def __init__(self, shield: SupportShield):
        super().__init__(shield)
        self.shield = shield
        count = shield.problem.spaces.action_size
        inner = shield.observation_space
        self.observation_space = gym.spaces.Box(
            np.concatenate([inner.low, np.zeros(count)]).astype(np.float32),
            np.concatenate([inner.high, np.ones(count)]).astype(np.float32), dtype=np.float32)

    def observation(self, observation):
        allowed = np.asarray(self.shield.decision().probs) > 0
        return np.concatenate([observation, allowed]).astype(np.float32)


class MaskedDQN(ShieldedDQN):
    """DQN restricted to mu's support at every state, the projection of a discrete learner onto
    the support (its observations carry the support: `SupportInObservation`):
    - it acts and explores only among the primitives mu allows, so the shield never has to
      replace an action; `explore_with_mu`: an exploring step (warm-up, then with probability
      epsilon) takes mu's own draw, mu's prior, instead of a uniform choice among them;
    - its target maxes Q over the primitives mu allows at s', as SSQ's target averages over
      them (a max over primitives that never run would chase values no data corrects).
    """

    def __init__(self, *args, shield: SupportShield, explore_with_mu: bool = False,
                 **kwargs):
        self.shield = shield
        self.explore_with_mu = bool(explore_with_mu)
        super().__init__(*args, **kwargs)

    def _sample_action(self, learning_starts, action_noise=None, n_envs=1):
        if n_envs != 1:
            raise ValueError('MaskedDQN reads one env\'s support: n_envs must be 1')
        decision = self.shield.decision()
        allowed = np.flatnonzero(np.asarray(decision.probs) > 0)
        rng = self.shield.rng
        if self.num_timesteps < learning_starts or rng.random() < self.exploration_rate:
            action = int(decision.action) if self.explore_with_mu else int(rng.choice(allowed))
        else:
            with torch.no_grad():
                obs = torch.as_tensor(np.asarray(self._last_obs), dtype=torch.float32)
                values = self.policy.q_net(obs)[0].numpy()
            action = int(allowed[np.argmax(values[allowed])])
        chosen = np.array([action])
        return chosen, chosen

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        """SB3 DQN's update (Huber loss, gradient clipping, n-step discounts) with the target's
        max taken over mu's support at s' (the observation's last action_size entries)."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        count = self.action_space.n
        losses = []
        for _ in range(gradient_steps):
            batch = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)
            discounts = batch.discounts if batch.discounts is not None else self.gamma
            with torch.no_grad():
                following = self.q_net_target(batch.next_observations)
                allowed = batch.next_observations[:, -count:] > 0.5
                masked = following.masked_fill(~allowed, -torch.inf).max(dim=1).values
                # a state where mu allows nothing (never seen) keeps the plain max
                best = torch.where(allowed.any(dim=1), masked, following.max(dim=1).values)
                target = batch.rewards + (1 - batch.dones) * discounts * best.reshape(-1, 1)
            current = torch.gather(self.q_net(batch.observations), 1, batch.actions.long())
            loss = torch.nn.functional.smooth_l1_loss(current, target)
            losses.append(loss.item())
            self.policy.optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()
        self._n_updates += gradient_steps
        self.logger.record('train/n_updates', self._n_updates, exclude='tensorboard')
        self.logger.record('train/loss', np.mean(losses))


def training_numbers(recorder: TrainingRecorder, model: OffPolicyAlgorithm, wall: float,
                     shield: SupportShield | None) -> dict:
    """What a trained SB3 peer reports: the referee's counts, updates, time, the shield's
    interventions (None without one) and the learning curve."""
    return {'unsafe_states_train': recorder.unsafe_states, 'env_steps': recorder.steps,
            'episodes_train': recorder.episodes, 'min_margin_train': recorder.min_margin,
            'updates': int(model._n_updates), 'wall_time_train_s': wall,
            'shield_interventions_train': None if shield is None else shield.interventions,
            'curve': recorder.curve.as_dict()}


class Progress(BaseCallback):
    """A tqdm bar over environment steps, with the unsafe count so far given a recorder."""

    def __init__(self, total: int, recorder: TrainingRecorder | None, label: str,
                 enabled: bool):
        super().__init__()
        # into a log file (no terminal) one update a minute, not ten a second
        self.bar = tqdm(total=total, desc=label, unit='step', disable=not enabled,
                        dynamic_ncols=True, mininterval=0.1 if sys.stderr.isatty() else 60.0)
        self.recorder = recorder

    def _on_step(self) -> bool:
        self.bar.update(1)
        if self.recorder is not None and self.num_timesteps % 200 == 0:
            # refresh=False: the postfix waits for the bar's own next update (mininterval)
            self.bar.set_postfix(unsafe=self.recorder.unsafe_states,
                                 episodes=self.recorder.episodes, refresh=False)
        return True

    def _on_training_end(self) -> None:
        self.bar.close()
