"""The held-out evaluation: one loop, one stats type, one value-calibration rule.

`evaluate_heldout(problem, act, episodes, ...)` runs the held-out episodes with any actor: the
shielded policy (`executor_actor`), mu alone (`behavior_actor`) or a benchmark peer (bench/peers
wrap their policies the same way). It returns `EvalStats`; the train_sim graph, whose episodes
run in other processes, fills the same `EvalStats` from the episode summaries and transitions it
receives (`EvalStats.add_episode`, `EvalStats.add_calibration`).

Counting rules, the same for every caller:
    unsafe states   the referee's verdict on every state the arm enters: each episode's start
                    and every step, the calibration tail included
    success, return the first `max_steps` steps (the task's time limit)
    calibration     `complete_returns`: Q(s_t, a_t) against the discounted return G_t for
                    the counted steps t < max_steps whose G_t is complete: the episode reached
                    the goal, or it went on `calibration_tail` steps past t (docs/training.md)

Held-out episodes are `ssq_ros.task.episodes.heldout_episode_seed(index)` (odd env seeds, goals
from the half of the goal positions no training episode sees), the same for every run.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ssq_ros.learning.evaluation import discounted_returns_to_go, value_calibration_error
from ssq_ros.safety.status import SafetyStatus, StatusCounter
from ssq_ros.task.episodes import heldout_episode_seed, training_episode_seed

if TYPE_CHECKING:  # robot-side importers (q_learner through learner_run) must not load MuJoCo
    from ssq_ros.training.problem import ArmProblem

__all__ = ['Actor', 'Choice', 'EvalStats', 'behavior_actor', 'complete_returns',
           'evaluate_heldout', 'executor_actor', 'heldout_episode_seed',
           'training_episode_seed']

# Seed of the evaluation's own randomness (mu's draws while building its support).
EVAL_RNG_SEED = 12345


@dataclass(frozen=True)
class Choice:
    """What an actor does at one state: the action to execute and how it came about."""

    action: int | np.ndarray
    status: SafetyStatus | None = None
    """the shielded executor's reaction (None: no executor)"""
    replaced: bool = False
    """a shield replaced the policy's own action"""
    fallback: bool = False
    """mu's support was empty and mu held the arm"""


Actor = Callable[[np.ndarray, np.random.Generator], Choice]
"""act(obs, rng) -> Choice at the problem's current state; rng is the evaluation's own."""


def behavior_actor(problem: ArmProblem) -> Actor:
    """mu alone."""
    def act(obs: np.ndarray, rng: np.random.Generator) -> Choice:
        decision = problem.behavior(rng)
        return Choice(decision.action, fallback=bool(decision.fallback))
    return act


def executor_actor(problem: ArmProblem, executor) -> Actor:
    """The policy behind the `ShieldedExecutor`, with mu's support at the current state; an
    action None (stop) executes the task's hold action."""
    def act(obs: np.ndarray, rng: np.random.Generator) -> Choice:
        decision = problem.behavior(rng)
        if problem.discrete:
            chosen = executor.act_discrete(obs, decision.probs)
        else:
            chosen = executor.act_continuous(obs, decision.samples, problem.is_safe_here())
        action = problem.stop_action() if chosen.action is None else chosen.action
        return Choice(action, status=chosen.status, replaced=chosen.status is not
                      SafetyStatus.OK, fallback=bool(decision.fallback))
    return act


def complete_returns(rewards, terminated: bool, max_steps: int, tail: int,
                     gamma: float) -> np.ndarray:
    """G_t of the counted steps t < max_steps whose discounted return is complete.

    `rewards` are every reward of the episode as it was run (past the time limit too).
    G_t is complete when the episode reached the goal (`terminated`: nothing follows) or went
    on at least `tail` steps after t (the return beyond is dropped: gamma^tail of it at most).
    """
    rewards = np.asarray(rewards, dtype=float)
    complete = rewards.size if terminated else max(0, rewards.size - tail)
    complete = min(complete, max_steps)
    if complete == 0:
        return np.zeros(0)
    return discounted_returns_to_go(rewards, gamma)[:complete]


@dataclass
class EvalStats:
    """Totals over a set of held-out episodes; `q`/`g` pair Q(s_t, a_t) with G_t."""

    episodes: int = 0
    successes: int = 0
    returns: list[float] = field(default_factory=list)
    unsafe: int = 0
    min_margin: float = math.inf
    steps: int = 0
    """steps counted towards success and return (the first max_steps of each episode)"""
    interventions: int = 0
    """counted steps where a shield replaced the policy's action"""
    statuses: StatusCounter = field(default_factory=StatusCounter)
    behavior_fallbacks: int = 0
    q: list[float] = field(default_factory=list)
    g: list[float] = field(default_factory=list)

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes if self.episodes else math.nan

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns)) if self.returns else math.nan

    @property
    def calibration_error(self) -> float:
        """mean |Q - G| / mean |G| over the pairs; NaN without any."""
        if not self.q:
            return math.nan
        return value_calibration_error(np.array(self.q), np.array(self.g))

    def add_episode(self, episode_return: float, success: bool, length: int) -> None:
        self.episodes += 1
        self.successes += int(success)
        self.returns.append(float(episode_return))
        self.steps += int(length)

    def add_calibration(self, q_values, rewards, terminated: bool, max_steps: int, tail: int,
                        gamma: float) -> None:
        """Pair Q(s_t, a_t) (one per step run) with G_t where G_t is complete."""
        g = complete_returns(rewards, terminated, max_steps, tail, gamma)
        self.q += [float(v) for v in np.asarray(q_values, dtype=float)[:g.size]]
        self.g += [float(v) for v in g]

    def summary(self) -> dict:
        return {'episodes': self.episodes, 'success_rate': self.success_rate,
                'return': self.mean_return, 'unsafe': self.unsafe,
                'min_margin': self.min_margin, 'statuses': self.statuses.as_dict(),
                'behavior_fallbacks': self.behavior_fallbacks,
                'calibration_pairs': len(self.q)}


def evaluate_heldout(problem: ArmProblem, act: Actor, episodes: int, gamma: float,
                     q_function: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
                     calibration_episodes: int = 0, calibration_tail: int = 0,
                     progress: Callable[[int], None] | None = None) -> EvalStats:
    """Run held-out episodes 0..episodes-1 with `act`; every state is judged by the referee.
    `progress(episodes done)` after each episode, if given.

    With `q_function(obs (N, D), actions) -> (N,)`, the first `calibration_episodes` run
    `calibration_tail` steps past the time limit (unless the goal is reached) so that the
    returns of their counted steps are complete, and pair Q with G (`complete_returns`).
    """
    stats = EvalStats()
    rng = np.random.default_rng(EVAL_RNG_SEED)
    env = problem.env
    max_steps = env.task.config.max_steps
    for index in range(episodes):
        obs, info = env.reset(seed=heldout_episode_seed(index))
        stats.unsafe += int(info['unsafe'])
        stats.min_margin = min(stats.min_margin, info['min_margin'])
        calibrate = q_function is not None and index < calibration_episodes
        tail = calibration_tail if calibrate else 0
        observations, actions, rewards = [], [], []
        total, success, terminated = 0.0, False, False
        while True:
            choice = act(obs, rng)
            stats.behavior_fallbacks += int(choice.fallback)
            if choice.status is not None:
                stats.statuses.record([choice.status])
            observations.append(obs)
            actions.append(choice.action)
            obs, reward, terminated, _, info = env.step(choice.action)
            stats.unsafe += int(info['unsafe'])
            stats.min_margin = min(stats.min_margin, info['min_margin'])
            rewards.append(reward)
            if len(rewards) <= max_steps:
                total += reward
                success = success or terminated
                stats.interventions += int(choice.replaced)
            # Past the time limit only for calibration: keep going, stop at the goal.
            if terminated or len(rewards) >= max_steps + tail:
                break
        stats.add_episode(total, success, min(len(rewards), max_steps))
        if calibrate:
            complete = complete_returns(rewards, terminated, max_steps, tail, gamma).size
            if complete:
                q = q_function(np.array(observations[:complete]), np.array(actions[:complete]))
                stats.add_calibration(q, rewards, terminated, max_steps, tail, gamma)
        if progress is not None:
            progress(index + 1)
    return stats
