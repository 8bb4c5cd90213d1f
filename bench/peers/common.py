"""What every method shares: training-time bookkeeping, the unsafe-state penalty, and the
held-out evaluation (ssq_ros's own `evaluate_heldout`) of a policy as it is or behind ssq_ros's
support shield.

Only ssq_ros is needed here (no peer library), so these parts are tested without the bench extra.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

from ssq_ros.learning.extraction import shield_action
from ssq_ros.training.evaluate import (
    Actor,
    Choice,
    evaluate_heldout,
    training_episode_seed,
)
from ssq_ros.training.problem import ArmProblem
from ssq_ros.training.provenance import code_version

__all__ = ['Curve', 'EvalPolicy', 'LongerEpisodes', 'MuAtState', 'SupportShield',
           'TrainingRecorder', 'UnsafePenalty', 'behavior_transitions', 'choose_action',
           'evaluate', 'machine_info', 'peer_actor', 'shield_continuous']


@dataclass
class Curve:
    """One point per finished training episode: env steps so far, return, cumulative unsafe."""

    steps: list[int] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    successes: list[bool] = field(default_factory=list)
    unsafe_cumulative: list[int] = field(default_factory=list)

    def add(self, step: int, episode_return: float, success: bool, unsafe_total: int) -> None:
        self.steps.append(int(step))
        self.returns.append(float(episode_return))
        self.successes.append(bool(success))
        self.unsafe_cumulative.append(int(unsafe_total))

    def as_dict(self) -> dict:
        return {'steps': self.steps, 'returns': self.returns, 'successes': self.successes,
                'unsafe_cumulative': self.unsafe_cumulative}


class TrainingRecorder(gym.Wrapper):
    """Counts the referee's unsafe states while a library trains, and fixes its episodes.

    Episode k starts from `training_episode_seed(run_seed, k)`, the start/goal sequence ssq-train
    uses, whatever seed the library passes to reset. Returns are the task's own (recorded below
    any reward shaping wrapped around this one).
    """

    def __init__(self, env: gym.Env, run_seed: int):
        super().__init__(env)
        self.run_seed = int(run_seed)
        self.episodes = 0
        self.steps = 0
        self.unsafe_states = 0
        self.min_margin = float('inf')
        self.curve = Curve()
        self._return = 0.0
        self._success = False

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=training_episode_seed(self.run_seed, self.episodes),
                                   options=options)
        self._count(info)
        self._return, self._success = 0.0, False
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        self._count(info)
        self._return += float(reward)
        self._success = self._success or bool(info['success'])
        if terminated or truncated:
            self.episodes += 1
            self.curve.add(self.steps, self._return, self._success, self.unsafe_states)
        return obs, reward, terminated, truncated, info

    def _count(self, info: dict) -> None:
        self.unsafe_states += int(info['unsafe'])
        self.min_margin = min(self.min_margin, float(info['min_margin']))


class UnsafePenalty(gym.Wrapper):
    """Reward minus `penalty` for every step the referee judged unsafe (penalised safe RL)."""

    def __init__(self, env: gym.Env, penalty: float):
        if not np.isfinite(penalty) or penalty < 0:
            raise ValueError(f'penalty must be a finite non-negative number, got {penalty!r}')
        super().__init__(env)
        self.penalty = float(penalty)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, float(reward) - self.penalty * float(info['unsafe']), terminated, \
            truncated, info


@dataclass
class EvalPolicy:
    """A trained policy as the evaluation sees it.

    Discrete: `scores(obs) -> (n,)`, higher is preferred (logits, log-probabilities or Q); the
    policy's action is the argmax. Continuous: `act(obs) -> (d,)`, the deterministic action.
    `q(observations (N, D), actions (N,) or (N, d)) -> (N,)` where the method has a critic.
    """

    name: str
    discrete: bool
    scores: Callable[[np.ndarray], np.ndarray] | None = None
    act: Callable[[np.ndarray], np.ndarray] | None = None
    q: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    model: object = None  # the trained library object, where one is kept for inspection

    def __post_init__(self) -> None:
        if (self.scores if self.discrete else self.act) is None:
            raise ValueError(f'{self.name}: a discrete policy needs scores, a continuous one act')


def choose_action(problem: ArmProblem, policy: EvalPolicy, obs: np.ndarray,
                  rng: np.random.Generator, shielded: bool) -> tuple[int | np.ndarray, bool]:
    """(action to execute, whether the shield replaced the policy's own action).

    The shield is mu's support at the current state: discrete, the best-scored action mu allows
    (the same argmax the ShieldedExecutor takes over the masked policy); continuous, the
    policy's action if the support check accepts it, else mu's safe sample nearest to it
    (peers have no density over mu's samples, so nearness is the common rule for all methods).
    """
    if problem.discrete:
        scores = np.asarray(policy.scores(obs), dtype=float)
        scores = np.where(np.isfinite(scores), scores, -np.inf)
        best = int(np.argmax(scores))
        if not shielded:
            return best, False
        allowed = problem.behavior(rng).probs > 0
        if allowed[best]:
            return best, False
        return int(np.argmax(np.where(allowed, scores, -np.inf))), True
    actions = problem.env.actions
    proposal = np.clip(np.asarray(policy.act(obs), dtype=float), actions.low, actions.high)
    if not shielded:
        return proposal, False
    return shield_continuous(problem, proposal, rng)


def shield_continuous(problem: ArmProblem, proposal: np.ndarray,
                      rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """(action to execute, whether it replaced `proposal`) at the env's current state: the
    proposal if the support check accepts it, else mu's safe sample nearest to it."""
    samples = problem.behavior(rng).samples
    nearness = -np.linalg.norm(samples - proposal, axis=1)
    decision = shield_action(proposal, problem.is_safe_here(), samples, nearness)
    return decision.action, decision.source != 'policy'


class MuAtState(gym.Wrapper):
    """Draws mu at the env's current state, once per state (`decision()`), for a learner that
    explores with mu's draw or masks its choice by mu's support. It executes every action as
    given: the shield is `SupportShield`."""

    def __init__(self, problem: ArmProblem, seed: int = 0):
        super().__init__(problem.env)
        self.problem = problem
        self.rng = np.random.default_rng(seed)
        self._decision = None

    def decision(self):
        """mu at the env's current state (drawn once per state, so a learner that masks its
        choice by mu's support and the shield that checks it see the same support)."""
        if self._decision is None:
            self._decision = self.problem.behavior(self.rng)
        return self._decision

    def reset(self, **kwargs):
        self._decision = None
        return self.env.reset(**kwargs)

    def step(self, action):
        self._decision = None
        return self.env.step(action)


class SupportShield(MuAtState):
    """Executes a learner's actions through mu's support while it trains, so it enters no
    state mu's support would not: the shield peers train behind. Continuous: the proposal if
    the support check accepts it, else mu's nearest safe sample (`shield_continuous`).
    Discrete: the proposed primitive if mu allows it, else mu's own draw (a learner's scores
    are not known here). info['executed_action'] is what ran (a learner should store it, not
    its proposal); `interventions` counts the replaced steps."""

    def __init__(self, problem: ArmProblem, seed: int = 0):
        super().__init__(problem, seed)
        self.interventions = 0

    def shielded(self, action) -> tuple[int | np.ndarray, bool]:
        if self.problem.discrete:
            proposal = int(np.asarray(action).reshape(()))
            decision = self.decision()
            if decision.probs[proposal] > 0:
                return proposal, False
            return int(decision.action), True
        actions = self.problem.env.actions
        proposal = np.clip(np.asarray(action, dtype=float), actions.low, actions.high)
        return shield_continuous(self.problem, proposal, self.rng)

    def step(self, action):
        executed, replaced = self.shielded(action)
        self.interventions += int(replaced)
        obs, reward, terminated, truncated, info = super().step(executed)
        return obs, reward, terminated, truncated, {**info, 'executed_action': executed,
                                                    'shield_replaced': replaced}


class LongerEpisodes(gym.Wrapper):
    """Training episodes that run past the task's time limit to `steps` control steps (the
    env's truncation is ignored until then), as ssq-train's `schedule.train_episode_steps`
    does for mu; the held-out evaluation keeps the task's limit."""

    def __init__(self, env: gym.Env, steps: int):
        if steps < 1:
            raise ValueError(f'steps must be >= 1, got {steps}')
        super().__init__(env)
        self.steps = int(steps)
        self._length = 0

    def reset(self, **kwargs):
        self._length = 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._length += 1
        return obs, reward, terminated, truncated and self._length >= self.steps, info


def behavior_transitions(problem: ArmProblem, run_seed: int, steps: int,
                         episode_steps: int) -> tuple[dict[str, np.ndarray], int]:
    """mu alone for `steps` env steps on the training episodes of run `run_seed` (the starts
    and goals an ssq-train run of that seed trains on), each run to `episode_steps` past the
    task's time limit as ssq-train's mu episodes are: (obs, action, reward, next_obs, done in
    time order; the referee's unsafe states, 0 unless mu's support failed)."""
    rng = np.random.default_rng(run_seed)
    rows: dict[str, list] = {k: [] for k in ('obs', 'action', 'reward', 'next_obs', 'done')}
    unsafe, episode, length = 0, 0, 0
    obs, info = problem.env.reset(seed=training_episode_seed(run_seed, episode))
    unsafe += int(info['unsafe'])
    for _ in range(steps):
        action = problem.behavior(rng).action
        next_obs, reward, terminated, truncated, info = problem.env.step(action)
        unsafe += int(info['unsafe'])
        length += 1
        for name, value in zip(rows, (obs, action, reward, next_obs, float(terminated)),
                               strict=True):
            rows[name].append(value)
        obs = next_obs
        if terminated or (truncated and length >= episode_steps):
            episode, length = episode + 1, 0
            obs, info = problem.env.reset(seed=training_episode_seed(run_seed, episode))
            unsafe += int(info['unsafe'])
    return {name: np.asarray(values, dtype=np.float32) for name, values in rows.items()}, unsafe


def peer_actor(problem: ArmProblem, policy: EvalPolicy, shielded: bool) -> Actor:
    """`policy` as an actor of ssq_ros's held-out evaluation, shielded (`choose_action`) or not."""
    def act(obs: np.ndarray, rng: np.random.Generator) -> Choice:
        action, replaced = choose_action(problem, policy, obs, rng, shielded)
        return Choice(action, replaced=replaced)
    return act


def evaluate(problem: ArmProblem, policy: EvalPolicy, episodes: int, shielded: bool,
             gamma: float, calibration_tail: int = 0, first: int = 0) -> dict:
    """Held-out episodes first..first+episodes-1 of ssq-train's evaluation (`evaluate_heldout`,
    the same loop and counting rules), run with `policy` (shielded or not); 'outcomes' holds
    each episode's success (0/1).

    With `policy.q` and calibration_tail > 0, every episode that times out runs
    `calibration_tail` uncounted steps further so the discounted returns G_t of the counted
    steps are complete, and Q(s_t, a_t) is compared with G_t.
    """
    calibrate = policy.q is not None and calibration_tail > 0
    stats = evaluate_heldout(problem, peer_actor(problem, policy, shielded), episodes, gamma,
                             q_function=policy.q if calibrate else None,
                             calibration_episodes=episodes if calibrate else 0,
                             calibration_tail=calibration_tail if calibrate else 0,
                             first=first)
    result = {'episodes': stats.episodes, 'success_rate': stats.success_rate,
              'outcomes': [int(o) for o in stats.outcomes],
              'return': stats.mean_return, 'unsafe_states': stats.unsafe, 'steps': stats.steps,
              'intervention_rate': stats.interventions / max(stats.steps, 1) if shielded
              else None}
    if stats.q:
        result['value_calibration_error'] = stats.calibration_error
    return result


def machine_info(torch_threads: int) -> dict:
    """CPU model, logical cores, torch threads and current load, and the code's git commit
    (code_commit, code_dirty: `ssq_ros.training.provenance`): what every table is tied to."""
    import os
    import platform

    model = platform.processor() or platform.machine()
    try:
        for line in open('/proc/cpuinfo'):
            if line.startswith('model name'):
                model = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    # The load average says how much of the machine other processes took while measuring.
    return {'cpu': model, 'logical_cores': os.cpu_count(), 'torch_threads': torch_threads,
            'python': platform.python_version(),
            'load_average_1_5_15min': [round(v, 2) for v in os.getloadavg()],
            **code_version()}
