"""SSQ against an epsilon-greedy Q-learning baseline on the cliff walk, scored against the truth.

SSQ: the masked random walk mu collects every transition (so training never enters the cliff),
the KLCritic learns Q on one-hot states from that replay, a categorical policy is extracted by
forward-KL weighted regression and executed masked by mu's support. Because mu does not depend on
Q, collecting first and training afterwards is the same as interleaving the two.
Baseline: tabular Q-learning acting epsilon-greedily with the same number of environment steps.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ssq_ros.config import spec
from ssq_ros.gridworld.env import GridWorld, cliff_walk, masked_random_walk, safe_action_mask
from ssq_ros.gridworld.solve import (
    policy_evaluation,
    soft_value_iteration,
    support_optimal_value_iteration,
)
from ssq_ros.learning.behavior import sample_index
from ssq_ros.learning.critic import CriticConfig, KLCritic
from ssq_ros.learning.evaluation import (
    UnsafeVisitCounter,
    discounted_returns_to_go,
    value_calibration_error,
)
from ssq_ros.learning.extraction import ExtractionConfig, PolicyExtractor
from ssq_ros.learning.replay import ReplayBuffer


def _default_critic() -> CriticConfig:
    return CriticConfig(alpha=0.02, gamma=0.95, tau=0.05, lr=1e-3, hidden_sizes=(64, 64),
                        num_q=2, batch_size=256, grad_clip=10.0)


def _default_extraction() -> ExtractionConfig:
    return ExtractionConfig(hidden_sizes=(64, 64), lr=1e-3, batch_size=256)


@dataclass
class GridworldConfig:
    """One gridworld experiment: the world, the budgets, the learners."""

    rows: int = spec(4, low=2, high=20, doc='grid rows (the cliff is the bottom row)')
    cols: int = spec(12, low=3, high=40, doc='grid columns')
    slip: float = spec(0.0, low=0.0, high=0.9,
                       doc='probability that a move goes to a perpendicular direction')
    env_steps: int = spec(20_000, low=100, high=10_000_000,
                          doc='environment steps per seed, for SSQ behavior and the baseline')
    episode_limit: int = spec(500, low=10, high=100_000,
                              doc='steps before a time-limit reset (not a terminal state)')
    critic_updates: int = spec(2000, low=1, high=10_000_000, doc='critic gradient steps')
    extraction_updates: int = spec(500, low=1, high=10_000_000, doc='policy gradient steps')
    eval_episodes: int = spec(20, low=1, high=100_000,
                              doc='rollouts of each learned policy to count eval unsafe visits')
    baseline_epsilon: float = spec(0.1, low=0.0, high=1.0, doc='epsilon of the baseline')
    baseline_lr: float = spec(0.5, low=1e-4, high=1.0, doc='step size of the baseline')
    critic: CriticConfig = spec(default_factory=_default_critic, doc='SSQ critic')
    extraction: ExtractionConfig = spec(default_factory=_default_extraction,
                                        doc='SSQ policy extraction')


def collect_behavior_data(world: GridWorld, mu: np.ndarray, steps: int, episode_limit: int,
                          rng: np.random.Generator) -> tuple[ReplayBuffer, int]:
    """Run mu for `steps` steps; the replay and the number of unsafe states entered."""
    obs, actions, rewards, next_obs, dones, supports = [], [], [], [], [], []
    counter = UnsafeVisitCounter()
    state, age = world.start, 0
    for _ in range(steps):
        action = sample_index(mu[state], rng)
        next_state, reward, done = world.step(state, action, rng)
        counter.record(bool(world.unsafe[next_state]))
        obs.append(state)
        actions.append(action)
        rewards.append(reward)
        next_obs.append(next_state)
        dones.append(float(done))
        supports.append(mu[next_state])
        state, age = next_state, age + 1
        if done or age >= episode_limit:
            state, age = world.start, 0
    eye = np.eye(world.n_states, dtype=np.float32)
    replay = ReplayBuffer.discrete(steps, world.n_states, world.n_actions)
    replay.add_batch(eye[obs], np.array(actions), np.array(rewards), eye[next_obs],
                     np.array(dones), np.array(supports))
    return replay, counter.count


def train_ssq(world: GridWorld, mu: np.ndarray, config: GridworldConfig, seed: int
              ) -> tuple[KLCritic, PolicyExtractor, ReplayBuffer, int]:
    """Collect with mu, fit the critic, extract the policy; returns them and the unsafe count."""
    rng = np.random.default_rng(seed)
    replay, unsafe_visits = collect_behavior_data(world, mu, config.env_steps,
                                                  config.episode_limit, rng)
    critic = KLCritic(world.n_states, config.critic, n_actions=world.n_actions, seed=seed)
    for _ in range(config.critic_updates):
        critic.update(replay.sample(config.critic.batch_size, rng))
    extractor = PolicyExtractor(critic, config.extraction, seed=seed + 1)
    for _ in range(config.extraction_updates):
        batch = replay.sample(config.extraction.batch_size, rng)
        extractor.update(batch.next_obs, batch.next_support)
    return critic, extractor, replay, unsafe_visits


def eps_greedy_q_learning(world: GridWorld, config: GridworldConfig, seed: int
                          ) -> tuple[np.ndarray, int]:
    """Tabular Q-learning with epsilon-greedy exploration; (Q table, unsafe states entered)."""
    rng = np.random.default_rng(seed)
    gamma = config.critic.gamma
    q = np.zeros((world.n_states, world.n_actions))
    counter = UnsafeVisitCounter()
    state, age = world.start, 0
    for _ in range(config.env_steps):
        if rng.random() < config.baseline_epsilon:
            action = int(rng.integers(world.n_actions))
        else:
            best = np.flatnonzero(q[state] == q[state].max())
            action = int(rng.choice(best))
        next_state, reward, done = world.step(state, action, rng)
        counter.record(bool(world.unsafe[next_state]))
        target = reward + (0.0 if done else gamma * q[next_state].max())
        q[state, action] += config.baseline_lr * (target - q[state, action])
        state, age = next_state, age + 1
        if done or age >= config.episode_limit:
            state, age = world.start, 0
    return q, counter.count


def extracted_policy_table(world: GridWorld, mu: np.ndarray,
                           extractor: PolicyExtractor) -> np.ndarray:
    """pi_theta(a|s) for every state, masked by mu's support (S, A)."""
    with torch.no_grad():
        eye = torch.eye(world.n_states)
        return extractor.policy.log_probs(eye, torch.as_tensor(mu, dtype=torch.float32)
                                          ).exp().double().numpy()


def greedy_policy_table(q: np.ndarray) -> np.ndarray:
    """Deterministic argmax policy (S, A)."""
    policy = np.zeros_like(q)
    policy[np.arange(q.shape[0]), np.argmax(q, axis=1)] = 1.0
    return policy


@dataclass
class Rollouts:
    """Evaluation episodes of one policy: what it did and how often it entered the cliff."""

    episodes: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # (states, actions, rewards)
    unsafe_visits: int


def rollout(world: GridWorld, policy: np.ndarray, episodes: int, episode_limit: int,
            rng: np.random.Generator) -> Rollouts:
    """Run `policy` (S, A) for `episodes` episodes from the start."""
    counter = UnsafeVisitCounter()
    recorded = []
    for _ in range(episodes):
        state, states, actions, rewards = world.start, [], [], []
        for _ in range(episode_limit):
            action = sample_index(policy[state] / policy[state].sum(), rng)
            next_state, reward, done = world.step(state, action, rng)
            counter.record(bool(world.unsafe[next_state]))
            states.append(state)
            actions.append(action)
            rewards.append(reward)
            state = next_state
            if done:
                break
        recorded.append((np.array(states), np.array(actions), np.array(rewards)))
    return Rollouts(recorded, counter.count)


def calibration_error(q: np.ndarray, rollouts: Rollouts, gamma: float) -> float:
    """mean |Q(s_t, a_t) - G_t| / mean |G_t| over the rollouts' steps (observed returns)."""
    predicted, observed = [], []
    for states, actions, rewards in rollouts.episodes:
        predicted.append(q[states, actions])
        observed.append(discounted_returns_to_go(rewards, gamma))
    return value_calibration_error(np.concatenate(predicted), np.concatenate(observed))


@dataclass
class SeedResult:
    """One seed's JSON-ready metrics plus the arrays a plot needs."""

    metrics: dict
    ssq_policy: np.ndarray  # (S, A) extracted policy, masked by mu's support
    ssq_values: np.ndarray  # (S,) learned soft value V(s), NaN at terminal states


def run_seed(config: GridworldConfig, seed: int) -> SeedResult:
    """Train both methods on one seed and score them against the exact solutions."""
    world = cliff_walk(config.rows, config.cols, config.slip)
    mu = masked_random_walk(world)
    gamma, alpha = config.critic.gamma, config.critic.alpha
    _, v_soft = soft_value_iteration(world, mu, alpha, gamma)
    _, v_safe = support_optimal_value_iteration(world, safe_action_mask(world), gamma)
    rng = np.random.default_rng(seed + 10_000)

    critic, extractor, replay, ssq_unsafe = train_ssq(world, mu, config, seed)
    v_learned = critic.soft_value(torch.eye(world.n_states),
                                  torch.as_tensor(mu, dtype=torch.float32)).double().numpy()
    v_learned[world.terminal] = np.nan
    visited = np.unique(replay.arrays['obs'][:len(replay)].argmax(axis=1))
    visited = visited[~world.terminal[visited]]
    value_error = float(np.mean(np.abs(v_learned[visited] - v_soft[visited])
                                / np.abs(v_soft[visited])))
    ssq_policy = extracted_policy_table(world, mu, extractor)
    ssq_q = critic.q_values(torch.eye(world.n_states)).double().numpy()
    ssq_eval = rollout(world, ssq_policy, config.eval_episodes, config.episode_limit, rng)

    q_baseline, baseline_unsafe = eps_greedy_q_learning(world, config, seed)
    baseline_policy = greedy_policy_table(q_baseline)
    baseline_eval = rollout(world, baseline_policy, config.eval_episodes, config.episode_limit,
                            rng)
    metrics = {
        'seed': seed,
        'optimal_safe_return': float(v_safe[world.start]),
        'soft_optimal_return': float(v_soft[world.start]),
        'behavior_return': float(policy_evaluation(world, mu, gamma)[world.start]),
        'ssq': {
            'unsafe_visits_train': ssq_unsafe,
            'unsafe_visits_eval': ssq_eval.unsafe_visits,
            'eval_return': float(policy_evaluation(world, ssq_policy, gamma)[world.start]),
            'value_error': value_error,
            'calibration_error': calibration_error(ssq_q, ssq_eval, gamma),
            'policy_mass_outside_support': float(ssq_policy[mu == 0].sum()),
        },
        'eps_greedy_q': {
            'unsafe_visits_train': baseline_unsafe,
            'unsafe_visits_eval': baseline_eval.unsafe_visits,
            'eval_return': float(policy_evaluation(world, baseline_policy, gamma)[world.start]),
            'calibration_error': calibration_error(q_baseline, baseline_eval, gamma),
        },
    }
    return SeedResult(metrics, ssq_policy, v_learned)


def summarize(results: list[SeedResult]) -> dict:
    """Across seeds: unsafe visits summed, returns and errors averaged, per-seed rows kept."""
    rows = [r.metrics for r in results]
    methods = {}
    for method in ('ssq', 'eps_greedy_q'):
        summary = {}
        for key in rows[0][method]:
            values = [row[method][key] for row in rows]
            summary[key] = int(sum(values)) if key.startswith('unsafe') else float(
                np.mean(values))
        methods[method] = summary
    return {
        'optimal_safe_return': float(np.mean([row['optimal_safe_return'] for row in rows])),
        'soft_optimal_return': float(np.mean([row['soft_optimal_return'] for row in rows])),
        'behavior_return': float(np.mean([row['behavior_return'] for row in rows])),
        'methods': methods,
        'seeds': rows,
    }
