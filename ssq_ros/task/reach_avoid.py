"""The reach-avoid task: move the hand to a goal whose straight path crosses a keep-out zone.

Starts are random safe postures around the home posture, at rest. Goals are hand positions of
random postures anywhere in the joint limits, inside a goal box, kept only where the
end-effector actions themselves can hold them: the posture the actions settle in when they drive
the hand there from home (their null-space pull decides the elbow, a policy cannot) lies in S.
An episode's goal is one whose straight segment from the start's hand position passes through
a keep-out zone (so the direct route is unsafe and the arm has to go around).
The goal positions are split once into two disjoint halves: training episodes draw from one,
held-out episodes from the other, so an evaluation never shows a goal position learned on.
Reward per step: `-distance_weight * |goal - hand|`, plus `success_bonus` on reaching the goal
(which ends the episode), minus `costly_step_cost` for each step the hand ends inside one of
`costly_boxes`: regions the hand may enter (they are not part of the safe set) at a cost, an
objective mu does not know. An episode succeeds when it reaches the goal without a step inside
a costly box (`ReachAvoidTask.succeeded`); the episode is truncated after `max_steps` control
steps.

Observation (float32, in this order; `ReachAvoidTask.layout` gives the slices):
    q          joint positions [rad], command order             (n)
    qdot       joint velocities [rad/s]                          (n)
    ee         hand position in the world [m]                    (3)
    goal       goal position in the world [m]                    (3)
    to_goal    goal - ee [m]                                     (3)
    to_costly  nearest point of each costly box - ee [m], 0 inside  (3 per box; only with
               `observe_costly`)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssq_ros.config import ConfigError, spec
from ssq_ros.safety.actions import CartesianActions
from ssq_ros.safety.kinematics import Kinematics
from ssq_ros.safety.safe_set import BoxZone, SafeSet


@dataclass(frozen=True)
class TaskConfig:
    max_steps: int = spec(250, doc='control steps before the episode is truncated', low=1)
    success_radius: float = spec(0.04, doc='hand-to-goal distance that counts as reached [m]',
                                 low=1e-3, high=1.0)
    distance_weight: float = spec(1.0, doc='reward per step per metre of distance', low=0.0)
    success_bonus: float = spec(10.0, doc='reward on reaching the goal', low=0.0)
    start_noise: float = spec(0.6, doc='start posture = home + uniform(+-noise) per joint [rad]',
                              low=0.0, high=3.2)
    start_margin: float = spec(0.05, doc='starts keep at least this safe-set margin',
                               low=0.0, high=1.0)
    goal_lower: tuple[float, float, float] = spec((0.25, -0.45, 0.05), doc='goal box low corner')
    goal_upper: tuple[float, float, float] = spec((0.75, 0.45, 0.6), doc='goal box high corner')
    goal_margin: float = spec(0.03, doc='the posture reaching a goal keeps this safe-set margin',
                              low=0.0, high=1.0)
    require_crossing: bool = spec(True, doc='goals only where the straight path crosses a zone')
    max_sampling_attempts: int = spec(200, doc='starts tried before giving up', low=1)
    goal_pool_size: int = spec(20000, doc='random postures (or points) tried once to build the '
                               'goal pool', low=100, high=10_000_000)
    costly_boxes: tuple[BoxZone, ...] = spec(
        (), doc='axis-aligned regions the hand may enter at a cost (reward and success, not '
                'safety); goals are drawn where the straight path crosses one or a keep-out '
                'zone')
    costly_step_cost: float = spec(0.0, doc='reward subtracted for each step the hand ends '
                                   'inside a costly box', low=0.0)
    goal_sampling: str = spec('postures', choices=('postures', 'box'),
                              doc='goal pool candidates: hand positions of random postures '
                                  'anywhere in the joint limits, or uniform points of the goal '
                                  'box (for a box the random postures rarely reach)')
    observe_costly: bool = spec(False, doc="the observation ends with the hand's offset to "
                                'each costly box (to_costly): the region the reward charges '
                                'for, in a form a critic reads without carving the box out '
                                'of the hand position itself')


# Bumped whenever the same config yields other episodes, goals or rewards than before, so that
# stored results (bench/results/peers.json) can tell they were made on another task.
# 2: held-out goals from their own half of the pool; goals the actions can hold.
# 3: self-collision pairs in S and the cover error in the radii: 230 pool goals (was 521), and
#    fewer starts near home keep the start margin.
TASK_REVISION = 3
# The goal pool is a property of the task, not of an episode: the same seed every time.
GOAL_POOL_SEED = 20260101
# Which goal positions an episode draws from (the pool's even / odd entries; None: all of them).
GOAL_SPLITS = ('train', 'heldout')


def goal_split_of_seed(seed: int | None) -> str | None:
    """The package's episode convention: even env seeds are training episodes, odd ones
    held-out episodes (ssq_ros.training.evaluate); an unseeded episode may draw any goal."""
    if seed is None:
        return None
    return GOAL_SPLITS[int(seed) % 2]


def observation_layout(dof: int, costly_boxes: int = 0) -> dict[str, slice]:
    """The observation's slices by name; `costly_boxes` observed boxes add 'to_costly'."""
    sizes = (('q', dof), ('qdot', dof), ('ee', 3), ('goal', 3), ('to_goal', 3))
    if costly_boxes:
        sizes += (('to_costly', 3 * costly_boxes),)
    layout, start = {}, 0
    for name, size in sizes:
        layout[name] = slice(start, start + size)
        start += size
    return layout


def segment_hits_box(start: np.ndarray, ends: np.ndarray, center: np.ndarray,
                     half: np.ndarray) -> np.ndarray:
    """Whether each segment start-end (ends (..., 3)) meets an axis-aligned box (slab method)."""
    ends = np.asarray(ends, dtype=float)
    direction = ends - start
    low = np.zeros(ends.shape[:-1])
    high = np.ones(ends.shape[:-1])
    for axis in range(3):
        lo, hi = center[axis] - half[axis], center[axis] + half[axis]
        step = direction[..., axis]
        parallel = np.abs(step) < 1e-12
        inside = (lo <= start[axis]) & (start[axis] <= hi)
        safe_step = np.where(parallel, 1.0, step)
        t0, t1 = (lo - start[axis]) / safe_step, (hi - start[axis]) / safe_step
        enter = np.where(parallel, -np.inf if inside else np.inf, np.minimum(t0, t1))
        leave = np.where(parallel, np.inf if inside else -np.inf, np.maximum(t0, t1))
        low, high = np.maximum(low, enter), np.minimum(high, leave)
    return low <= high


def segment_hits_sphere(start: np.ndarray, ends: np.ndarray, center: np.ndarray,
                        radius: float) -> np.ndarray:
    """Whether each segment start-end (ends (..., 3)) comes within `radius` of `center`."""
    ends = np.asarray(ends, dtype=float)
    direction = ends - start
    length2 = np.maximum(np.sum(direction * direction, axis=-1), 1e-24)
    t = np.clip(np.sum((center - start) * direction, axis=-1) / length2, 0.0, 1.0)
    closest = start + t[..., None] * direction
    return np.linalg.norm(closest - center, axis=-1) <= radius


class ReachAvoidTask:
    """Samples episodes and scores steps; no physics here (see ssq_ros.sim.env)."""

    def __init__(self, safe_set: SafeSet, config: TaskConfig, actions: CartesianActions,
                 control_period: float):
        self.safe_set = safe_set
        self.actions = actions
        self.control_period = control_period
        self.kinematics: Kinematics = safe_set.kinematics
        self.config = config
        self.robot = safe_set.robot
        self._costly_centers = np.array([box.center for box in config.costly_boxes],
                                        dtype=float).reshape(-1, 3)
        self._costly_halves = np.array([box.half_extents for box in config.costly_boxes],
                                       dtype=float).reshape(-1, 3)
        observed = len(config.costly_boxes) if config.observe_costly else 0
        if config.observe_costly and not observed:
            raise ConfigError('task.observe_costly: the task has no costly_boxes to observe; '
                              'set it false or add task.costly_boxes')
        self.layout = observation_layout(self.robot.dof, observed)
        self.observation_size = max(part.stop for part in self.layout.values())
        self._goal_pool: np.ndarray | None = None

    def crosses_zone(self, start: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Whether the straight path from `start` to each end point (..., 3) meets a keep-out
        zone or a costly box."""
        zones = self.safe_set.config
        hits = np.zeros(np.shape(ends)[:-1], dtype=bool)
        for zone in (*zones.keep_out_boxes, *self.config.costly_boxes):
            hits |= segment_hits_box(start, ends, np.array(zone.center),
                                     np.array(zone.half_extents))
        for zone in zones.keep_out_spheres:
            hits |= segment_hits_sphere(start, ends, np.array(zone.center), zone.radius)
        return hits

    def safe_postures(self, rng: np.random.Generator, margin: float, count: int = 64
                      ) -> np.ndarray:
        """Random postures (K, n) near home, at rest, with at least `margin` everywhere."""
        cfg, safe_set = self.config, self.safe_set
        qs = self.robot.home + rng.uniform(-cfg.start_noise, cfg.start_noise,
                                           (count, self.robot.dof))
        qs = np.clip(qs, safe_set.position_lower, safe_set.position_upper)
        return qs[safe_set.margins(qs, np.zeros_like(qs)).min(axis=1) >= margin]

    def sample_start(self, rng: np.random.Generator) -> np.ndarray:
        """A safe posture at rest near home, with at least `start_margin` everywhere."""
        for _ in range(self.config.max_sampling_attempts):
            postures = self.safe_postures(rng, self.config.start_margin)
            if len(postures):
                return postures[0]
        # Say what stands in the way, so the user knows which setting to change.
        qs = np.clip(self.robot.home + rng.uniform(-self.config.start_noise,
                                                   self.config.start_noise,
                                                   (1000, self.robot.dof)),
                     self.safe_set.position_lower, self.safe_set.position_upper)
        margins = self.safe_set.margins(qs, np.zeros_like(qs))
        best = int(np.argmax(margins.min(axis=1)))
        tightest = int(np.argmin(margins[best]))
        raise RuntimeError(
            f'no start posture near home keeps task.start_margin {self.config.start_margin:g}: '
            f'the best of {len(qs)} tried keeps {margins[best, tightest]:.3f} '
            f'({self.safe_set.names[tightest]}); lower task.start_margin in the sim config or '
            'choose another home')

    def goal_pool(self) -> np.ndarray:
        """Hand positions (M, 3) in the goal box of postures anywhere in the joint limits with
        at least `goal_margin`, where the actions' own posture lies in S. Built once."""
        if self._goal_pool is None:
            cfg, safe_set = self.config, self.safe_set
            rng = np.random.default_rng(GOAL_POOL_SEED)
            if cfg.goal_sampling == 'box':
                points = rng.uniform(cfg.goal_lower, cfg.goal_upper, (cfg.goal_pool_size, 3))
            else:
                qs = rng.uniform(safe_set.position_lower, safe_set.position_upper,
                                 (cfg.goal_pool_size, self.robot.dof))
                qs = qs[safe_set.margins(qs, np.zeros_like(qs)).min(axis=1) >= cfg.goal_margin]
                points = self.kinematics.ee_position(qs)
                inside = np.all((points >= cfg.goal_lower) & (points <= cfg.goal_upper), axis=1)
                points = points[inside]
            if not len(points):
                raise RuntimeError('no safe posture puts the hand inside task.goal_lower/'
                                   'goal_upper: widen the goal box or the safe set')
            # A random posture may hold the hand there with an elbow the actions never take
            # (the scripted detour of bench_reach_time then failed on 9 of 30 held-out goals).
            settled = self.actions.settle(self.robot.home, points, self.control_period)
            held = np.linalg.norm(self.kinematics.ee_position(settled) - points, axis=1) \
                < cfg.success_radius / 4
            margin = safe_set.margins(settled, np.zeros_like(settled)).min(axis=1)
            # Box points have no posture of their own: the settled one keeps goal_margin.
            keep = cfg.goal_margin if cfg.goal_sampling == 'box' else 0.0
            self._goal_pool = points[held & (margin >= keep)]
            if not len(self._goal_pool):
                raise RuntimeError('no safe posture puts the hand inside task.goal_lower/'
                                   'goal_upper: widen the goal box or the safe set')
        return self._goal_pool

    def goals(self, split: str | None = None) -> np.ndarray:
        """The goal positions of one split ('train', 'heldout'), or the whole pool for None."""
        if split is None:
            return self.goal_pool()
        if split not in GOAL_SPLITS:
            raise ValueError(f'goal split must be one of {GOAL_SPLITS} or None, got {split!r}')
        return self.goal_pool()[GOAL_SPLITS.index(split)::2]

    def sample_goal(self, rng: np.random.Generator, ee_start: np.ndarray,
                    split: str | None = None, require_crossing: bool | None = None
                    ) -> np.ndarray | None:
        """A goal of `split` whose straight path from `ee_start` crosses a zone (or any goal
        when crossing is not required: `require_crossing`, else the task's setting), at least
        two success radii away; None if none is."""
        pool = self.goals(split)
        usable = np.linalg.norm(pool - ee_start, axis=1) > 2 * self.config.success_radius
        if self.config.require_crossing if require_crossing is None else require_crossing:
            usable &= self.crosses_zone(ee_start, pool)
        candidates = np.flatnonzero(usable)
        return pool[rng.choice(candidates)].copy() if candidates.size else None

    def sample_episode(self, rng: np.random.Generator, split: str | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
        """(start posture, goal position of `split`) of a new episode."""
        for _ in range(self.config.max_sampling_attempts):
            q = self.sample_start(rng)
            goal = self.sample_goal(rng, self.kinematics.ee_position(q), split)
            if goal is not None:
                return q, goal
        raise RuntimeError('no start/goal pair found whose straight path crosses a keep-out '
                           'zone: check task.goal_lower/goal_upper against the zones')

    def in_costly_region(self, ee: np.ndarray) -> bool:
        """Whether the hand at `ee` is inside one of the costly boxes."""
        return bool(np.any(np.all(self.costly_offsets(ee) == 0.0, axis=1)))

    def reward(self, ee: np.ndarray, goal: np.ndarray) -> tuple[float, bool]:
        """(reward, reached) for the hand at `ee`."""
        distance = float(np.linalg.norm(goal - ee))
        reached = distance <= self.config.success_radius
        reward = -self.config.distance_weight * distance
        if self.config.costly_boxes and self.in_costly_region(ee):
            reward -= self.config.costly_step_cost
        return reward + (self.config.success_bonus if reached else 0.0), reached

    @staticmethod
    def succeeded(reached: bool, costly_steps: int) -> bool:
        """An episode's success, the one rule of ssq-train and the ROS graph: the goal reached
        with no step inside a costly box."""
        return bool(reached) and costly_steps == 0

    def costly_offsets(self, ee: np.ndarray) -> np.ndarray:
        """The nearest point of each costly box minus the hand (boxes, 3); 0 inside one."""
        ee = np.asarray(ee, dtype=float)
        nearest = np.clip(ee, self._costly_centers - self._costly_halves,
                          self._costly_centers + self._costly_halves)
        return nearest - ee

    def observation(self, q: np.ndarray, qdot: np.ndarray, ee: np.ndarray,
                    goal: np.ndarray) -> np.ndarray:
        parts = [q, qdot, ee, goal, goal - ee]
        if 'to_costly' in self.layout:
            parts.append(self.costly_offsets(ee).ravel())
        return np.concatenate(parts).astype(np.float32)

    def with_goal(self, obs: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """The observation `obs` as it reads with `goal` instead of its own (hindsight
        relabelling); the robot's part is unchanged."""
        obs = np.array(obs, dtype=np.float32)
        goal = np.asarray(goal, dtype=float)
        if obs.shape != (self.observation_size,) or goal.shape != (3,) \
                or not np.all(np.isfinite(goal)):
            raise ValueError(f'with_goal: expected an observation ({self.observation_size},) '
                             f'and a finite goal (3,), got {obs.shape} and {goal!r}')
        obs[self.layout['goal']] = goal
        obs[self.layout['to_goal']] = goal - obs[self.layout['ee']]
        return obs
