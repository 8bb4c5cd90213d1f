"""What the SB3 peers share (bench extra). Off-policy learners behind `SupportShield` store
the action that ran, not the learner's proposal, so a shield that replaced the proposal does not
teach the critic the value of an action that never ran. The progress bar and the training
numbers every SB3 peer reports."""
from __future__ import annotations

import numpy as np
from stable_baselines3 import DQN, SAC
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from tqdm import tqdm

from .common import SupportShield, TrainingRecorder


class StoresExecutedAction:
    """Mixin for SB3 off-policy algorithms: buffer actions from info['executed_action']."""

    def buffer_action_of(self, executed) -> np.ndarray:
        return np.asarray(executed)

    def _store_transition(self, replay_buffer, buffer_action, new_obs, reward, dones, infos):
        stored = np.array(buffer_action, copy=True)
        for i, info in enumerate(infos):
            stored[i] = self.buffer_action_of(info['executed_action'])
        super()._store_transition(replay_buffer, stored, new_obs, reward, dones, infos)


class ShieldedSAC(StoresExecutedAction, SAC):
    """SAC's replay holds actions in its [-1, 1] scale."""

    def buffer_action_of(self, executed) -> np.ndarray:
        return self.policy.scale_action(np.asarray(executed, dtype=float))


class ShieldedDQN(StoresExecutedAction, DQN):
    """DQN's replay holds the primitive's index."""


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
        self.bar = tqdm(total=total, desc=label, unit='step', disable=not enabled,
                        dynamic_ncols=True)
        self.recorder = recorder

    def _on_step(self) -> bool:
        self.bar.update(1)
        if self.recorder is not None and self.num_timesteps % 200 == 0:
            self.bar.set_postfix(unsafe=self.recorder.unsafe_states,
                                 episodes=self.recorder.episodes)
        return True

    def _on_training_end(self) -> None:
        self.bar.close()
