"""Run a policy in the reach-avoid env and count what the referee saw.

Three policies share one loop so that their numbers are comparable on the same budget:
`safe` (the safe behavior controller mu), `unshielded` (the same discrete mu with every action
allowed: what the support check prevents) and `random_joint` (uniform random joint velocities
within the safe-set velocity limits, a plain random policy).
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ssq_ros.sim.env import ReachAvoidEnv

POLICIES = ('safe', 'unshielded', 'random_joint')


@dataclass
class RolloutStats:
    policy: str
    steps: int = 0
    episodes: int = 0
    successes: int = 0
    unsafe_states: int = 0
    min_margin: float = float('inf')
    min_margin_constraint: str = ''
    unsafe_by_constraint: Counter = field(default_factory=Counter)
    hold_refused: int = 0
    fallbacks: int = 0
    wall_time_s: float = 0.0
    paths: list[np.ndarray] = field(default_factory=list)
    goals: list[np.ndarray] = field(default_factory=list)

    def summary(self) -> dict:
        """JSON-ready numbers (paths left out)."""
        return {'policy': self.policy, 'steps': self.steps, 'episodes': self.episodes,
                'successes': self.successes, 'unsafe_states': self.unsafe_states,
                'min_margin': self.min_margin,
                'min_margin_constraint': self.min_margin_constraint,
                'unsafe_by_constraint': dict(self.unsafe_by_constraint),
                'hold_refused': self.hold_refused, 'fallbacks': self.fallbacks,
                'wall_time_s': round(self.wall_time_s, 2),
                'steps_per_second': round(self.steps / max(self.wall_time_s, 1e-9), 1)}


def rollout(env: ReachAvoidEnv, policy: str, steps: int, seed: int,
            progress: Callable[[int], None] | None = None) -> RolloutStats:
    """`steps` control steps of `policy` from random starts toward random goals.

    An unsafe state is any control period in which the referee saw a negative margin.
    `hold_refused` counts states (safe policy only) where the support check would not accept
    hold, which the support check's design rules out.
    """
    if policy not in POLICIES:
        raise ValueError(f'unknown policy {policy!r} (known: {", ".join(POLICIES)})')
    if policy == 'random_joint' and (env.discrete or env.actions is not env.setup.joint):
        raise ValueError('random_joint needs a continuous env with joint actions')
    controller = None if policy == 'random_joint' else env.setup.behavior_controller(
        env.discrete)
    rng = np.random.default_rng(seed)
    stats = RolloutStats(policy)
    env.reset(seed=seed)
    path = [env.sim.ee_position()]
    stats.goals.append(env.goal.copy())
    started = time.monotonic()
    for step in range(steps):
        q, qdot = env.joint_state()
        if policy == 'random_joint':
            action = rng.uniform(env.actions.low, env.actions.high)
        else:
            if policy == 'safe':
                stats.hold_refused += not env.setup.support.hold_is_safe(q, qdot)
            decision = controller.act(q, qdot, rng, env.goal, shield=policy == 'safe',
                                      previous=env.in_flight.commands)
            stats.fallbacks += decision.fallback
            action = decision.action
        _, _, terminated, truncated, info = env.step(action)
        path.append(env.sim.ee_position())
        stats.steps += 1
        if info['min_margin'] < stats.min_margin:
            stats.min_margin, stats.min_margin_constraint = info['min_margin'], info['constraint']
        if info['unsafe']:
            stats.unsafe_states += 1
            stats.unsafe_by_constraint[info['constraint']] += 1
        if terminated or truncated:
            stats.episodes += 1
            stats.successes += int(terminated)
            stats.paths.append(np.array(path))
            env.reset()
            path = [env.sim.ee_position()]
            stats.goals.append(env.goal.copy())
        if progress is not None:
            progress(step)
    stats.paths.append(np.array(path))
    stats.wall_time_s = time.monotonic() - started
    return stats
