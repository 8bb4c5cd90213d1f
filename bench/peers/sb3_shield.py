"""SB3 off-policy learners behind `SupportShield` (bench extra): the replay stores the action
that ran, not the learner's proposal, so a shield that replaced the proposal does not teach the
critic the value of an action that never ran."""
from __future__ import annotations

import numpy as np
from stable_baselines3 import DQN, SAC


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
