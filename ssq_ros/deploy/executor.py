"""The shielded executor: the extracted policy acts only inside the behavior's safe support.

At every state the behavior controller supplies its support there (discrete: mu's probability
vector or the allowed mask; continuous: K safe samples of mu and the one-step `is_safe` check).
The executor returns the action to send and a named `SafetyStatus` saying where it came from:

    OK                               the policy's action, inside the support
    ACTION_OUTSIDE_SUPPORT_FALLBACK  the policy proposed an action the support check refused (or
                                     a non-finite one): mu's sample the policy likes best is sent
    NO_POLICY_YET                    no policy loaded: an exact draw from mu is sent
    NO_SAFE_ACTION_STOP              the support is empty: action None, the caller stops the arm
    STATE_REJECTED_NONFINITE         the observation has NaN/inf: action None, the caller stops

Used by the trainer's evaluation and by the `policy_executor` node.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ssq_ros.deploy.export import ExportedPolicy
from ssq_ros.learning.behavior import sample_index
from ssq_ros.learning.extraction import shield_action
from ssq_ros.safety.status import SafetyStatus


@dataclass(frozen=True)
class ExecutorDecision:
    """`action` is an index (discrete), a vector (continuous) or None (stop the arm)."""

    action: int | np.ndarray | None
    status: SafetyStatus


class ShieldedExecutor:
    """Chooses actions with an exported policy (replaceable at any time) behind the support."""

    def __init__(self, policy: ExportedPolicy | None = None, *, greedy: bool = True,
                 seed: int = 0):
        self.policy = policy
        self.greedy = greedy
        self.rng = np.random.default_rng(seed)

    def set_policy(self, policy: ExportedPolicy) -> None:
        """Swap in a new policy version; the spaces must not change."""
        if self.policy is not None and policy.spaces != self.policy.spaces:
            raise ValueError(f'new policy is for {policy.spaces}, the executor runs '
                             f'{self.policy.spaces}')
        self.policy = policy

    def act_discrete(self, obs, support) -> ExecutorDecision:
        """`support`: mu's probabilities (n,) at s, or a boolean mask of the allowed actions."""
        support = np.asarray(support)
        if support.ndim != 1 or (self.policy is not None
                                 and support.size != self.policy.spaces.action_size):
            raise ValueError(f'support must be a vector over the actions, got {support.shape}')
        if support.dtype == bool:
            allowed, mu = support, support / max(support.sum(), 1)
        else:
            mu = support.astype(float)
            if not np.all(np.isfinite(mu)) or np.any(mu < 0):
                raise ValueError('support probabilities must be finite and non-negative')
            allowed = mu > 0
        if not np.all(np.isfinite(np.asarray(obs, dtype=float))):
            return ExecutorDecision(None, SafetyStatus.STATE_REJECTED_NONFINITE)
        if not allowed.any():
            return ExecutorDecision(None, SafetyStatus.NO_SAFE_ACTION_STOP)
        if self.policy is None:
            return ExecutorDecision(sample_index(mu / mu.sum(), self.rng),
                                    SafetyStatus.NO_POLICY_YET)
        probs = self.policy.probabilities(obs, mu)
        if not np.all(np.isfinite(probs)) or probs.sum() <= 0:
            best = int(np.argmax(np.where(allowed, mu, -np.inf)))
            return ExecutorDecision(best, SafetyStatus.ACTION_OUTSIDE_SUPPORT_FALLBACK)
        if self.greedy:
            action = int(np.argmax(probs))
        else:
            action = sample_index(probs / probs.sum(), self.rng)
        # The mask makes any other outcome impossible; checked anyway, it is the safety claim.
        if not allowed[action]:
            raise AssertionError(f'policy chose action {action} outside the support')
        return ExecutorDecision(action, SafetyStatus.OK)

    def act_continuous(self, obs, samples, is_safe: Callable[[np.ndarray], np.ndarray]
                       ) -> ExecutorDecision:
        """`samples`: mu's K safe actions at s (K may be 0); `is_safe(actions (N, d))` -> (N,)."""
        samples = np.asarray(samples, dtype=float)
        if samples.ndim != 2 or (self.policy is not None
                                 and samples.shape[1] != self.policy.spaces.action_size):
            raise ValueError(f'samples must have shape (K, d), got {samples.shape}')
        if not np.all(np.isfinite(np.asarray(obs, dtype=float))):
            return ExecutorDecision(None, SafetyStatus.STATE_REJECTED_NONFINITE)
        if self.policy is None:
            if samples.shape[0] == 0:
                return ExecutorDecision(None, SafetyStatus.NO_SAFE_ACTION_STOP)
            return ExecutorDecision(samples[int(self.rng.integers(samples.shape[0]))].copy(),
                                    SafetyStatus.NO_POLICY_YET)
        mean, std = self.policy.gaussian(obs)
        proposal = mean if self.greedy else self.rng.normal(mean, std)
        spaces = self.policy.spaces
        if spaces.action_low:  # the checked action must be the one sent, so bound it first
            proposal = np.clip(proposal, spaces.action_low, spaces.action_high)
        if samples.shape[0] == 0:
            verdict = np.asarray(is_safe(proposal[None])) if np.all(np.isfinite(proposal)) \
                else np.array([False])
            if verdict.shape == (1,) and verdict.dtype == bool and verdict[0]:
                return ExecutorDecision(proposal, SafetyStatus.OK)
            return ExecutorDecision(None, SafetyStatus.NO_SAFE_ACTION_STOP)
        scores = self.policy.log_prob(obs, samples)
        # A sample the policy gives no finite density to is the last choice, never excluded.
        scores = np.where(np.isfinite(scores), scores, -1e300)
        decision = shield_action(proposal, is_safe, samples, scores)
        status = SafetyStatus.OK if decision.source == 'policy' else \
            SafetyStatus.ACTION_OUTSIDE_SUPPORT_FALLBACK
        return ExecutorDecision(decision.action, status)
