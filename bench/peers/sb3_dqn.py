"""DQN from Stable-Baselines3 on the discrete reach-avoid env (bench extra): the peer for SSQ's
discrete primitives. `shielded=True` trains it behind mu's support (`SupportShield`: a primitive
mu refuses is replaced by mu's own draw, and the replay stores what ran, `ShieldedDQN`)."""
from __future__ import annotations

import time

import numpy as np
import torch
from stable_baselines3 import DQN

from ssq_ros.training.problem import ArmProblem

from .common import EvalPolicy, SupportShield, TrainingRecorder
from .sb3_common import Progress, ShieldedDQN, training_numbers


def dqn_hyperparameters(batch_size: int, hidden: list[int], gamma: float,
                        learning_starts: int) -> dict:
    """SB3's DQN defaults, with the batch, width, discount and warm-up SSQ uses."""
    return {'batch_size': batch_size, 'gamma': gamma, 'learning_starts': learning_starts,
            'policy_kwargs': {'net_arch': list(hidden)}}


def train_dqn(problem: ArmProblem, seed: int, steps: int, hyper: dict, label: str = 'dqn',
              progress: bool = True, shielded: bool = False) -> tuple[EvalPolicy, dict]:
    """Train DQN for `steps` env steps in `problem`'s discrete env (behind mu's support if
    `shielded`); (its greedy policy as scores = Q, training numbers + curve)."""
    if not problem.discrete:
        raise ValueError('DQN needs the discrete env (ssq_ros/ReachAvoidDiscrete-v0)')
    shield = SupportShield(problem, seed=seed) if shielded else None
    recorder = TrainingRecorder(problem.env if shield is None else shield, seed)
    model = (ShieldedDQN if shielded else DQN)('MlpPolicy', recorder, seed=seed, device='cpu',
                                               verbose=0, buffer_size=max(steps, 1), **hyper)
    started = time.monotonic()
    model.learn(total_timesteps=steps, callback=Progress(steps, recorder, label, progress))
    wall = time.monotonic() - started
    q_net = model.policy.q_net

    @torch.no_grad()
    def scores(obs: np.ndarray) -> np.ndarray:
        return q_net(torch.as_tensor(obs, dtype=torch.float32)[None])[0].numpy()

    @torch.no_grad()
    def q(observations: np.ndarray, actions: np.ndarray) -> np.ndarray:
        values = q_net(torch.as_tensor(observations, dtype=torch.float32))
        taken = torch.as_tensor(np.asarray(actions, dtype=np.int64))[:, None]
        return values.gather(1, taken)[:, 0].numpy()

    training = training_numbers(recorder, model, wall, shield)
    return EvalPolicy(label, True, scores=scores, q=q), training
