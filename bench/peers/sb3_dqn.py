"""DQN from Stable-Baselines3 on the discrete reach-avoid env (bench extra): the peer for SSQ's
discrete primitives. `shielded=True` trains it behind mu's support (`SupportShield`: a primitive
mu refuses is replaced by mu's own draw, and the replay stores what ran, `ShieldedDQN`);
`masked=True` chooses only among the primitives mu allows (`MaskedDQN`)."""
from __future__ import annotations

import time

import numpy as np
import torch
from stable_baselines3 import DQN

from ssq_ros.training.problem import ArmProblem

from .common import EvalPolicy, LongerEpisodes, SupportShield, TrainingRecorder
from .sb3_common import (
    MaskedDQN,
    Progress,
    ShieldedDQN,
    SupportInObservation,
    training_numbers,
)


def dqn_hyperparameters(batch_size: int, hidden: list[int], gamma: float,
                        learning_starts: int) -> dict:
    """SB3's DQN defaults, with the batch, width, discount and warm-up SSQ uses."""
    return {'batch_size': batch_size, 'gamma': gamma, 'learning_starts': learning_starts,
            'policy_kwargs': {'net_arch': list(hidden)}}


def train_dqn(problem: ArmProblem, seed: int, steps: int, hyper: dict, label: str = 'dqn',
              progress: bool = True, shielded: bool = False, masked: bool = False,
              explore_with_mu: bool = False,
              train_episode_steps: int = 0) -> tuple[EvalPolicy, dict]:
    """Train DQN for `steps` env steps in `problem`'s discrete env (behind mu's support if
    `shielded`; choosing only among the primitives mu allows if `masked`, exploring with mu's
    draw if `explore_with_mu`; training episodes run to `train_episode_steps` if that exceeds
    the task's limit); (its greedy policy as scores = Q, training numbers + curve).

    A masked DQN's network also reads mu's support, which its scores take from `problem`'s
    current state: evaluate it on `problem` itself."""
    if not problem.discrete:
        raise ValueError('DQN needs the discrete env (ssq_ros/ReachAvoidDiscrete-v0)')
    if (masked or explore_with_mu) and not shielded:
        raise ValueError('masking by mu\'s support needs the shield (shielded=True)')
    shield = SupportShield(problem, seed=seed) if shielded else None
    env = problem.env if shield is None else SupportInObservation(shield) if masked else shield
    if train_episode_steps > problem.env.task.config.max_steps:
        env = LongerEpisodes(env, train_episode_steps)
    recorder = TrainingRecorder(env, seed)
    kind = {} if not masked else {'shield': shield, 'explore_with_mu': explore_with_mu}
    algorithm = MaskedDQN if masked else ShieldedDQN if shielded else DQN
    model = algorithm('MlpPolicy', recorder, seed=seed, device='cpu', verbose=0,
                      buffer_size=max(steps, 1), **kind, **hyper)
    support_rng = np.random.default_rng(seed)  # mu's draw is not used, only its support
    started = time.monotonic()
    model.learn(total_timesteps=steps, callback=Progress(steps, recorder, label, progress))
    wall = time.monotonic() - started
    q_net = model.policy.q_net

    def network_input(observations: np.ndarray) -> torch.Tensor:
        if masked:  # mu's support at `problem`'s current state, as in training
            support = np.asarray(problem.behavior(support_rng).probs) > 0
            observations = np.concatenate(
                [observations, np.broadcast_to(support, (*np.shape(observations)[:-1],
                                                         support.size))], axis=-1)
        return torch.as_tensor(observations, dtype=torch.float32)

    @torch.no_grad()
    def scores(obs: np.ndarray) -> np.ndarray:
        return q_net(network_input(obs)[None])[0].numpy()

    @torch.no_grad()
    def q(observations: np.ndarray, actions: np.ndarray) -> np.ndarray:
        values = q_net(network_input(observations))
        taken = torch.as_tensor(np.asarray(actions, dtype=np.int64))[:, None]
        return values.gather(1, taken)[:, 0].numpy()

    training = training_numbers(recorder, model, wall, shield)
    return EvalPolicy(label, True, scores=scores, q=q, model=model), training
