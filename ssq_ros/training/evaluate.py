"""Rollouts on held-out goals: the shielded policy, the behavior alone, and value calibration.

Held-out episodes use odd env seeds and training episodes even ones: the env draws their goals
from disjoint halves of the goal positions (`ssq_ros.sim.reach_avoid.goal_split_of_seed`), so no
held-out goal position is ever trained on, and the held-out set is the same for every run.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ssq_ros.deploy.executor import ShieldedExecutor
from ssq_ros.learning.evaluation import discounted_returns_to_go
from ssq_ros.safety.status import StatusCounter
from ssq_ros.training.problem import ArmProblem

# Seeds of the evaluation's own randomness (mu's draws while building its support).
_EVAL_RNG_SEED = 12345


def training_episode_seed(run_seed: int, episode: int) -> int:
    """Env seed of training episode `episode` of run `run_seed`: always even."""
    return 2 * (1 + run_seed * 10_000_000 + episode)


def heldout_episode_seed(index: int) -> int:
    """Env seed of held-out goal `index`: always odd, the same for every run."""
    return 2 * index + 1


@dataclass
class RolloutStats:
    """Totals over a set of episodes; `q`/`g` pair Q(s_t, a_t) with discounted returns G_t."""

    episodes: int = 0
    successes: int = 0
    returns: list[float] = field(default_factory=list)
    unsafe: int = 0
    min_margin: float = float('inf')
    statuses: StatusCounter = field(default_factory=StatusCounter)
    behavior_fallbacks: int = 0
    q: list[float] = field(default_factory=list)
    g: list[float] = field(default_factory=list)

    @property
    def success_rate(self) -> float:
        return self.successes / max(self.episodes, 1)

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns)) if self.returns else float('nan')

    def summary(self) -> dict:
        return {'episodes': self.episodes, 'success_rate': self.success_rate,
                'return': self.mean_return, 'unsafe': self.unsafe,
                'min_margin': self.min_margin, 'statuses': self.statuses.as_dict(),
                'behavior_fallbacks': self.behavior_fallbacks}


def rollout(problem: ArmProblem, episodes: int, executor: ShieldedExecutor | None,
            gamma: float, q_function=None, calibration_episodes: int = 0,
            calibration_tail: int = 0) -> RolloutStats:
    """Run `episodes` held-out episodes with the shielded policy (or mu alone if executor is
    None). With `q_function(obs (N, D), actions) -> (N,)`, the first `calibration_episodes`
    pair Q(s_t, a_t) with G_t for the steps t < max_steps whose return is complete: the
    episode reached the goal, or it was run `calibration_tail` steps past the time limit (the
    return after that horizon is dropped). Success and return count the first max_steps only."""
    stats = RolloutStats()
    rng = np.random.default_rng(_EVAL_RNG_SEED)
    env = problem.env
    max_steps = env.task.config.max_steps
    for index in range(episodes):
        obs, info = env.reset(seed=heldout_episode_seed(index))
        stats.unsafe += int(info['unsafe'])
        stats.min_margin = min(stats.min_margin, info['min_margin'])
        observations, actions, rewards = [], [], []
        calibrate = q_function is not None and index < calibration_episodes
        tail = calibration_tail if calibrate else 0
        total, success, terminated = 0.0, False, False
        while True:
            decision = problem.behavior(rng)
            stats.behavior_fallbacks += int(decision.fallback)
            action = decision.action
            if executor is not None:
                if problem.discrete:
                    chosen = executor.act_discrete(obs, decision.probs)
                else:
                    chosen = executor.act_continuous(obs, decision.samples,
                                                     problem.is_safe_here())
                stats.statuses.record([chosen.status])
                action = problem.stop_action() if chosen.action is None else chosen.action
            observations.append(obs)
            actions.append(action)
            obs, reward, terminated, _, info = env.step(action)
            stats.unsafe += int(info['unsafe'])
            stats.min_margin = min(stats.min_margin, info['min_margin'])
            rewards.append(reward)
            steps = len(rewards)
            if steps <= max_steps:
                total += reward
                success = success or terminated
            # Past the time limit only for calibration: keep going, stop at the goal.
            if terminated or steps >= max_steps + tail:
                break
        stats.episodes += 1
        stats.successes += int(success)
        stats.returns.append(total)
        if calibrate:
            complete = len(rewards) if terminated else max(0, len(rewards) - tail)
            complete = min(complete, max_steps)
            if complete:
                returns = discounted_returns_to_go(np.array(rewards), gamma)[:complete]
                q = q_function(np.array(observations[:complete]), np.array(actions[:complete]))
                stats.q += [float(v) for v in q]
                stats.g += [float(v) for v in returns]
    return stats
