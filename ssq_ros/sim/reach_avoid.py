"""The reach-avoid task: move the hand to a goal whose straight path crosses a keep-out zone.

Starts are random safe postures around the home posture, at rest; goals are sampled in a goal
box, clear of every zone, such that the segment from the start's hand position to the goal
passes through a keep-out zone (so the direct route is unsafe and the arm has to go around).
Reward per step: `-distance_weight * |goal - hand|`, plus `success_bonus` on reaching the goal
(which ends the episode); the episode is truncated after `max_steps` control steps.

Observation (float32, in this order; `OBSERVATION_LAYOUT` gives the slices):
    q          joint positions [rad], command order             (n)
    qdot       joint velocities [rad/s]                          (n)
    ee         hand position in the world [m]                    (3)
    goal       goal position in the world [m]                    (3)
    to_goal    goal - ee [m]                                     (3)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssq_ros.config import spec
from ssq_ros.safety.kinematics import Kinematics
from ssq_ros.safety.safe_set import SafeSet, box_signed_distance, sphere_distance


@dataclass(frozen=True)
class TaskConfig:
    max_steps: int = spec(200, doc='control steps before the episode is truncated', low=1)
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
    goal_clearance: float = spec(0.08, doc='goals keep this distance from zones, table, walls',
                                 low=0.0, high=1.0)
    require_crossing: bool = spec(True, doc='goals only where the straight path crosses a zone')
    max_sampling_attempts: int = spec(200, doc='starts tried before giving up', low=1)


def observation_layout(dof: int) -> dict[str, slice]:
    sizes = (('q', dof), ('qdot', dof), ('ee', 3), ('goal', 3), ('to_goal', 3))
    layout, start = {}, 0
    for name, size in sizes:
        layout[name] = slice(start, start + size)
        start += size
    return layout


def segment_hits_box(start: np.ndarray, end: np.ndarray, center: np.ndarray,
                     half: np.ndarray) -> bool:
    """Whether the segment start-end intersects an axis-aligned box (slab method)."""
    direction = end - start
    low, high = 0.0, 1.0
    for axis in range(3):
        lo, hi = center[axis] - half[axis], center[axis] + half[axis]
        if abs(direction[axis]) < 1e-12:
            if not lo <= start[axis] <= hi:
                return False
            continue
        t0, t1 = sorted(((lo - start[axis]) / direction[axis],
                         (hi - start[axis]) / direction[axis]))
        low, high = max(low, t0), min(high, t1)
        if low > high:
            return False
    return True


def segment_hits_sphere(start: np.ndarray, end: np.ndarray, center: np.ndarray,
                        radius: float) -> bool:
    """Whether the segment start-end comes within `radius` of `center`."""
    direction = end - start
    t = np.clip((center - start) @ direction / max(direction @ direction, 1e-24), 0.0, 1.0)
    return bool(np.linalg.norm(start + t * direction - center) <= radius)


class ReachAvoidTask:
    """Samples episodes and scores steps; no physics here (see ssq_ros.sim.env)."""

    def __init__(self, safe_set: SafeSet, config: TaskConfig):
        self.safe_set = safe_set
        self.kinematics: Kinematics = safe_set.kinematics
        self.config = config
        self.robot = safe_set.robot
        self.layout = observation_layout(self.robot.dof)
        self.observation_size = self.layout['to_goal'].stop

    def crosses_zone(self, start: np.ndarray, goal: np.ndarray) -> bool:
        zones = self.safe_set.config
        return any(segment_hits_box(start, goal, np.array(z.center), np.array(z.half_extents))
                   for z in zones.keep_out_boxes) or any(
            segment_hits_sphere(start, goal, np.array(z.center), z.radius)
            for z in zones.keep_out_spheres)

    def goal_margin(self, points: np.ndarray) -> np.ndarray:
        """Clearance (N,) of candidate goal points from every zone, the table and the walls."""
        cfg = self.safe_set.config
        margins = [np.full(len(points), np.inf)]
        if cfg.table_height is not None:
            margins.append(points[:, 2] - cfg.table_height)
        if cfg.workspace is not None:
            lower, upper = np.array(cfg.workspace.lower), np.array(cfg.workspace.upper)
            margins.append(np.minimum(points - lower, upper - points).min(axis=1))
        margins += [box_signed_distance(points, np.array(z.center), np.array(z.half_extents))
                    for z in cfg.keep_out_boxes]
        margins += [sphere_distance(points, z.center) - z.radius for z in cfg.keep_out_spheres]
        return np.min(margins, axis=0)

    def sample_start(self, rng: np.random.Generator) -> np.ndarray:
        """A safe posture at rest near home, with at least `start_margin` everywhere."""
        cfg, safe_set = self.config, self.safe_set
        for _ in range(cfg.max_sampling_attempts):
            qs = self.robot.home + rng.uniform(-cfg.start_noise, cfg.start_noise,
                                               (64, self.robot.dof))
            qs = np.clip(qs, safe_set.position_lower, safe_set.position_upper)
            margins = safe_set.margins(qs, np.zeros_like(qs)).min(axis=1)
            good = np.flatnonzero(margins >= cfg.start_margin)
            if good.size:
                return qs[good[0]]
        raise RuntimeError('no safe start posture found: the safe set leaves no room near home')

    def sample_goal(self, rng: np.random.Generator, ee_start: np.ndarray) -> np.ndarray | None:
        """A clear goal whose straight path from `ee_start` crosses a zone, or None."""
        cfg = self.config
        points = rng.uniform(cfg.goal_lower, cfg.goal_upper, (256, 3))
        points = points[self.goal_margin(points) >= cfg.goal_clearance]
        for point in points:
            if not cfg.require_crossing or self.crosses_zone(ee_start, point):
                if np.linalg.norm(point - ee_start) > 2 * cfg.success_radius:
                    return point
        return None

    def sample_episode(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(start posture, goal position) of a new episode."""
        for _ in range(self.config.max_sampling_attempts):
            q = self.sample_start(rng)
            goal = self.sample_goal(rng, self.kinematics.ee_position(q))
            if goal is not None:
                return q, goal
        raise RuntimeError('no start/goal pair found whose straight path crosses a keep-out '
                           'zone: check task.goal_lower/goal_upper against the zones')

    def reward(self, ee: np.ndarray, goal: np.ndarray) -> tuple[float, bool]:
        """(reward, reached) for the hand at `ee`."""
        distance = float(np.linalg.norm(goal - ee))
        reached = distance <= self.config.success_radius
        reward = -self.config.distance_weight * distance
        return reward + (self.config.success_bonus if reached else 0.0), reached

    def observation(self, q: np.ndarray, qdot: np.ndarray, ee: np.ndarray,
                    goal: np.ndarray) -> np.ndarray:
        return np.concatenate([q, qdot, ee, goal, goal - ee]).astype(np.float32)
