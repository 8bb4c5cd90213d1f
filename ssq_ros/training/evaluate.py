"""The held-out evaluation: one loop, one stats type, one value-calibration rule.

`evaluate_heldout(problem, act, episodes, ...)` runs the held-out episodes with any actor: the
shielded policy (`executor_actor`), mu alone (`behavior_actor`), the critic's exact induced
policy pi ∝ mu exp(Q/alpha) (`induced_actor`), the baselines mu greedy
(`greedy_behavior_actor`) and the scripted oracle (`oracle_actor`, docs/tasks.md), or a
benchmark peer (bench/peers wrap their policies the same way). It returns `EvalStats`; the
train_sim graph, whose episodes run in other processes, fills the same `EvalStats` from the
episode summaries and transitions it receives (`EvalStats.add_episode`,
`EvalStats.add_calibration`).

Counting rules, the same for every caller:
    unsafe states   the referee's verdict on every state the arm enters: each episode's start
                    and every step, the calibration tail included
    success, return the first `max_steps` steps (the task's time limit)
    calibration     `complete_returns`: Q(s_t, a_t) against the return G_t for the counted
                    steps t < max_steps whose G_t is complete: the episode reached the goal, or
                    it went on `calibration_tail` steps past t (docs/training.md). G_t is the
                    soft return (`soft_returns_to_go`): the actor's alpha KL(pi || mu) charged
                    at every later step, which is 0 for mu and charged only by the induced
                    actor. An episode whose counted returns are not all complete makes the
                    calibration undefined (NaN) instead of keeping its selected part

Held-out episodes are `ssq_ros.task.episodes.heldout_episode_seed(index)` (odd env seeds, goals
from the half of the goal positions no training episode sees), the same for every run.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ssq_ros.control.oracle import ScriptedOracle, make_oracle
from ssq_ros.learning.behavior import sample_index
from ssq_ros.learning.evaluation import (
    soft_returns_to_go,
    value_calibration_bias,
    value_calibration_error,
)
from ssq_ros.safety.status import SafetyStatus, StatusCounter
from ssq_ros.task.episodes import heldout_episode_seed, training_episode_seed

if TYPE_CHECKING:  # robot-side importers (q_learner through learner_run) must not load MuJoCo
    from ssq_ros.control.safe_behavior import Decision
    from ssq_ros.training.learner import OnlineLearner
    from ssq_ros.training.problem import ArmProblem

__all__ = ['Actor', 'Choice', 'EvalStats', 'behavior_actor', 'complete_returns',
           'evaluate_heldout', 'executor_actor', 'greedy_behavior_actor', 'heldout_episode_seed',
           'induced_actor', 'induced_choice', 'oracle_actor', 'training_episode_seed']

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
    kl_cost: float = 0.0
    """alpha KL(pi(.|s) || mu(.|s)) of the distribution the action was drawn from, charged by the
    soft return; 0 for mu itself, and not known (0) for the shielded executor and the peers"""


Actor = Callable[[np.ndarray, np.random.Generator], Choice]
"""act(obs, rng) -> Choice at the problem's current state; rng is the evaluation's own."""


def behavior_actor(problem: ArmProblem) -> Actor:
    """mu alone."""
    def act(obs: np.ndarray, rng: np.random.Generator) -> Choice:
        decision = problem.behavior(rng)
        return Choice(decision.action, fallback=bool(decision.fallback))
    return act


def greedy_behavior_actor(problem: ArmProblem) -> Actor:
    """mu executed greedily: the most probable of the primitives it allows (discrete only)."""
    if not problem.discrete:
        raise ValueError('greedy mu is the argmax over the discrete primitives')

    def act(obs: np.ndarray, rng: np.random.Generator) -> Choice:
        decision = problem.behavior(rng)
        return Choice(int(np.argmax(decision.probs)), fallback=bool(decision.fallback))
    return act


def oracle_actor(problem: ArmProblem, oracle: ScriptedOracle | None = None) -> Actor:
    """The scripted oracle (ssq_ros.control.oracle) on mu's support at each state (discrete
    only): it never takes an action mu does not allow."""
    if not problem.discrete:
        raise ValueError('the oracle chooses among the discrete primitives')
    task = problem.env.task
    oracle = oracle or make_oracle(problem.controller, task.control_period,
                                   avoid=task.config.costly_boxes)

    def act(obs: np.ndarray, rng: np.random.Generator) -> Choice:
        decision = problem.behavior(rng)
        q, _ = problem.env.joint_state()
        action = oracle.choose(q, problem.env.goal, decision.allowed)
        return Choice(action, fallback=bool(decision.fallback))
    return act


def induced_actor(problem: ArmProblem, learner: OnlineLearner) -> Actor:
    """The critic's exact induced policy pi ∝ mu exp(Q/alpha), sampled: discrete, over mu's
    masked primitives (never one mu does not allow); continuous, one of mu's K safe samples with
    weights softmax(Q/alpha) (self-normalised). Each choice carries alpha KL(pi || mu) for the
    soft return. SSQ's policy without extraction: safe exactly as mu is."""
    def act(obs: np.ndarray, rng: np.random.Generator) -> Choice:
        return induced_choice(problem, learner, obs, problem.behavior(rng), rng)
    return act


def induced_choice(problem: ArmProblem, learner: OnlineLearner, obs: np.ndarray,
                   decision: Decision, rng: np.random.Generator,
                   alpha: float | None = None) -> Choice:
    """One draw of the induced policy at a state where mu decided `decision` (its support):
    never an action mu gives probability 0, nor one outside mu's K samples. `alpha` None is
    the critic's temperature; the KL cost is always weighed with the critic's."""
    support = decision.probs if problem.discrete else decision.samples
    pi, kl = learner.induced_policy(obs, support, alpha)
    index = sample_index(pi / pi.sum(), rng)
    action = index if problem.discrete else decision.samples[index].copy()
    return Choice(action, fallback=bool(decision.fallback),
                  kl_cost=learner.critic.config.alpha * kl)


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
                     gamma: float, kl_costs=None) -> np.ndarray:
    """G_t of the counted steps t < max_steps whose (soft) return is complete.

    `rewards` are every reward of the episode as it was run (past the time limit too), and
    `kl_costs` the actor's alpha KL(pi || mu) at each of those steps (None: 0, mu's own).
    G_t is complete when the episode reached the goal (`terminated`: nothing follows) or went
    on at least `tail` steps after t (the return beyond is dropped: gamma^tail of it at most).
    """
    rewards = np.asarray(rewards, dtype=float)
    complete = rewards.size if terminated else max(0, rewards.size - tail)
    complete = min(complete, max_steps)
    if complete == 0:
        return np.zeros(0)
    kl_costs = np.zeros_like(rewards) if kl_costs is None else kl_costs
    return soft_returns_to_go(rewards, kl_costs, gamma)[:complete]


@dataclass
class EvalStats:
    """Totals over a set of held-out episodes; `q`/`g` pair Q(s_t, a_t) with G_t."""

    episodes: int = 0
    successes: int = 0
    returns: list[float] = field(default_factory=list)
    unsafe: int = 0
    min_margin: float = math.inf
    outcomes: list[bool] = field(default_factory=list)
    """success of each episode, in held-out order: lets a benchmark score episodes that were
    never used for choosing settings apart from those that were"""
    steps: int = 0
    """steps counted towards success and return (the first max_steps of each episode)"""
    interventions: int = 0
    """counted steps where a shield replaced the policy's action"""
    statuses: StatusCounter = field(default_factory=StatusCounter)
    behavior_fallbacks: int = 0
    q: list[float] = field(default_factory=list)
    g: list[float] = field(default_factory=list)
    calibration_incomplete: int = 0
    """calibration episodes cut before the returns of all their counted steps were complete"""
    reached_costly: int = 0
    """episodes that reached the goal within the time limit after a step inside a costly box
    (the task's cost region): reached, and yet not a success"""
    lengths: list[int] = field(default_factory=list)
    """counted steps of each episode, in held-out order (fewer than max_steps: the goal)"""
    discounted_returns: list[float] = field(default_factory=list)
    """each episode's discounted return over its counted steps (what the critic estimates);
    this, `costly_steps`, `reached` and `reached_costly` come from evaluate_heldout only (the
    graph's episode summaries fill `lengths`, not them)"""
    costly_steps: list[int] = field(default_factory=list)
    """each episode's counted steps inside a costly box"""
    reached: list[bool] = field(default_factory=list)
    """whether each episode reached the goal within the time limit (a costly step or not)"""

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes if self.episodes else math.nan

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns)) if self.returns else math.nan

    @property
    def calibration_defined(self) -> bool:
        """Pairs from every calibration episode: keeping the complete ones only (those that
        reached the goal, where no tail was run) would select the lucky outcomes."""
        return bool(self.q) and self.calibration_incomplete == 0

    @property
    def calibration_error(self) -> float:
        """mean |Q - G| / mean |G| over the pairs; NaN unless `calibration_defined`."""
        if not self.calibration_defined:
            return math.nan
        return value_calibration_error(np.array(self.q), np.array(self.g))

    @property
    def calibration_bias(self) -> float:
        """mean (Q - G) over the pairs, in return units; NaN unless `calibration_defined`."""
        if not self.calibration_defined:
            return math.nan
        return value_calibration_bias(np.array(self.q), np.array(self.g))

    def add_episode(self, episode_return: float, success: bool, length: int) -> None:
        self.episodes += 1
        self.successes += int(success)
        self.outcomes.append(bool(success))
        self.returns.append(float(episode_return))
        self.lengths.append(int(length))
        self.steps += int(length)

    def add_calibration(self, q_values, rewards, terminated: bool, max_steps: int, tail: int,
                        gamma: float, kl_costs=None) -> None:
        """Pair Q(s_t, a_t) (at least one per complete step) with G_t of one calibration
        episode (`complete_returns`); an episode whose counted steps are not all complete adds
        no pair and makes the calibration undefined."""
        g = complete_returns(rewards, terminated, max_steps, tail, gamma, kl_costs)
        if g.size < min(len(rewards), max_steps):
            self.calibration_incomplete += 1
            return
        self.q += [float(v) for v in np.asarray(q_values, dtype=float)[:g.size]]
        self.g += [float(v) for v in g]

    def summary(self) -> dict:
        return {'episodes': self.episodes, 'success_rate': self.success_rate,
                'return': self.mean_return, 'outcomes': [int(o) for o in self.outcomes],
                'unsafe': self.unsafe,
                'min_margin': self.min_margin, 'statuses': self.statuses.as_dict(),
                'behavior_fallbacks': self.behavior_fallbacks,
                'calibration_pairs': len(self.q), 'calibration_bias': self.calibration_bias,
                'calibration_error': self.calibration_error,
                'reached_costly': self.reached_costly}


def evaluate_heldout(problem: ArmProblem, act: Actor, episodes: int, gamma: float,
                     q_function: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
                     calibration_episodes: int = 0, calibration_tail: int = 0,
                     progress: Callable[[int], None] | None = None,
                     first: int = 0) -> EvalStats:
    """Run held-out episodes first..first+episodes-1 with `act`; every state is judged by the
    referee. `progress(episodes done)` after each episode, if given. `first` > 0 reaches
    episodes no run's own evaluation used (a test split, bench/bench_tasks_test.py).

    With `q_function(obs (N, D), actions) -> (N,)`, the first `calibration_episodes` run
    `calibration_tail` steps past the time limit (unless the goal is reached) so that the
    returns of their counted steps are complete, and pair Q with G (`complete_returns`).
    """
    if first < 0:
        raise ValueError(f'first must be >= 0, got {first}')
    stats = EvalStats()
    rng = np.random.default_rng(EVAL_RNG_SEED)
    env = problem.env
    max_steps = env.task.config.max_steps
    for index in range(episodes):
        obs, info = env.reset(seed=heldout_episode_seed(first + index))
        stats.unsafe += int(info['unsafe'])
        stats.min_margin = min(stats.min_margin, info['min_margin'])
        calibrate = q_function is not None and index < calibration_episodes
        tail = calibration_tail if calibrate else 0
        observations, actions, rewards, kl_costs = [], [], [], []
        total, discounted, success, terminated, reached = 0.0, 0.0, False, False, False
        costly = 0
        while True:
            choice = act(obs, rng)
            stats.behavior_fallbacks += int(choice.fallback)
            if choice.status is not None:
                stats.statuses.record([choice.status])
            observations.append(obs)
            actions.append(choice.action)
            kl_costs.append(choice.kl_cost)
            obs, reward, terminated, _, info = env.step(choice.action)
            stats.unsafe += int(info['unsafe'])
            stats.min_margin = min(stats.min_margin, info['min_margin'])
            rewards.append(reward)
            if len(rewards) <= max_steps:
                total += reward
                discounted += gamma ** (len(rewards) - 1) * reward
                success = success or info['success']
                reached = reached or terminated  # the env ends an episode at the goal
                costly += int(info.get('costly', False))
                stats.interventions += int(choice.replaced)
            # Past the time limit only for calibration: keep going, stop at the goal.
            if terminated or len(rewards) >= max_steps + tail:
                break
        stats.add_episode(total, success, min(len(rewards), max_steps))
        stats.reached_costly += int(reached and costly > 0 and not success)
        stats.discounted_returns.append(discounted)
        stats.costly_steps.append(costly)
        stats.reached.append(reached)
        if calibrate:
            complete = complete_returns(rewards, terminated, max_steps, tail, gamma).size
            q = q_function(np.array(observations[:complete]), np.array(actions[:complete])) \
                if complete else []
            stats.add_calibration(q, rewards, terminated, max_steps, tail, gamma, kl_costs)
        if progress is not None:
            progress(index + 1)
    return stats
