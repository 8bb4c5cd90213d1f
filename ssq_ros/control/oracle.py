"""A scripted oracle for the reach-avoid tasks: it plans the hand's way around the keep-out
zones and follows it with the discrete primitives mu allows. A baseline, not a learner: a goal
it reaches in N steps is reachable in N steps with mu's support (docs/tasks.md).

Planner (`HandPlanner`): a distance-to-goal field over a grid of hand positions covering the
workspace. A cell the hand cannot take (a keep-out box or sphere, the table or the workspace
bound, each grown by the hand's extent at the home posture, the safe set's clearance and a
`margin`) or should not (a task's costly box, grown by the `margin`) costs
`blocked_cost` times a free cell to cross, so the field leads around the zones wherever a way
exists and still points somewhere from inside a grown zone. Cells next to the goal hold their
straight distance to it, so the last centimetres aim at the goal itself.

Oracle (`ScriptedOracle`): at each state, among the primitives the support check allows
(mu's support: `Decision.allowed` of the discrete `SafeBehaviorController`), the one whose hand
position one control period later has the smallest distance-to-goal; hold when none of them
gets closer. ROS-free and MuJoCo-free: it reads only the safety layer's kinematics.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssq_ros.config import spec
from ssq_ros.control.safe_behavior import SafeBehaviorController
from ssq_ros.safety.safe_set import BoxZone, SafeSet


@dataclass(frozen=True)
class OracleConfig:
    resolution: float = spec(0.03, doc='grid cell of the hand-position planner [m]',
                             low=0.005, high=0.2)
    hand_reach: float = spec(0.15, doc='collision spheres whose centre lies this close to the '
                             'end effector at the home posture make up the hand [m]',
                             low=0.0, high=1.0)
    margin: float = spec(0.03, doc='extra distance the planned path keeps from what the hand '
                         'cannot take, beyond the clearance: the rest of the arm and the servo '
                         'need room too [m]', low=0.0, high=0.5)
    blocked_cost: float = spec(30.0, doc='cost of crossing a cell the hand cannot take, '
                               'relative to a free cell', low=1.0, high=1e6)


# The 26 neighbours of a grid cell and their lengths in cells.
NEIGHBOURS = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)
                       if (i, j, k) != (0, 0, 0)])
NEIGHBOUR_LENGTHS = np.linalg.norm(NEIGHBOURS, axis=1)


def hand_extent(safe_set: SafeSet, reach: float) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) offsets (3,) from the end effector of the box around the hand's spheres
    (those within `reach` of it) at the home posture, the safe set's clearance included."""
    kinematics, robot = safe_set.kinematics, safe_set.robot
    home = robot.home
    ee = kinematics.ee_position(home)
    centres = kinematics.sphere_positions(home[None])[0] - ee
    radii = robot.cover_radii + safe_set.config.cartesian_clearance
    near = np.linalg.norm(centres, axis=1) <= reach
    if not near.any():
        raise ValueError(f'oracle hand_reach {reach:g} m: no collision sphere lies that close to '
                         'the end effector at the home posture')
    return (centres[near] - radii[near, None]).min(axis=0), \
        (centres[near] + radii[near, None]).max(axis=0)


class HandPlanner:
    """Distance-to-goal fields over hand positions for one safe set (see the module doc)."""

    def __init__(self, safe_set: SafeSet, config: OracleConfig,
                 avoid: tuple[BoxZone, ...] = ()):
        cfg = safe_set.config
        if cfg.workspace is None:
            raise ValueError('the oracle plans inside safe_set.workspace: the safe set has none')
        self.config = config
        lower, upper = hand_extent(safe_set, config.hand_reach)
        lower, upper = lower - config.margin, upper + config.margin
        res = config.resolution
        self.origin = np.array(cfg.workspace.lower, dtype=float)
        shape = np.ceil((np.array(cfg.workspace.upper) - self.origin) / res).astype(int) + 1
        axes = [self.origin[i] + res * np.arange(shape[i]) for i in range(3)]
        self.points = np.stack(np.meshgrid(*axes, indexing='ij'), axis=-1)
        # Where the hand can be: its box inside the workspace, above the table, off every zone.
        free = np.all((self.points + lower >= cfg.workspace.lower)
                      & (self.points + upper <= cfg.workspace.upper), axis=-1)
        if cfg.table_height is not None:
            free &= self.points[..., 2] + lower[2] >= cfg.table_height
        for box in cfg.keep_out_boxes:
            low = np.subtract(box.center, box.half_extents) - upper
            high = np.add(box.center, box.half_extents) - lower
            free &= ~np.all((self.points > low) & (self.points < high), axis=-1)
        for sphere in cfg.keep_out_spheres:
            # The sphere grown by the box's largest half size: a bound, not the exact shape.
            grow = sphere.radius + np.max(np.maximum(-lower, upper))
            free &= np.linalg.norm(self.points - sphere.center, axis=-1) > grow
        for box in avoid:  # costly regions: the end effector itself keeps out, with the margin
            grow = np.add(box.half_extents, config.margin)
            free &= ~np.all(np.abs(self.points - box.center) < grow, axis=-1)
        self.free = free
        self.cost = np.where(free, 1.0, config.blocked_cost)
        self._field_goal: np.ndarray | None = None
        self._field: np.ndarray | None = None

    def field(self, goal: np.ndarray) -> np.ndarray:
        """Distance-to-`goal` [m] of every cell along the cheapest 26-connected path (cached
        for the last goal)."""
        goal = np.asarray(goal, dtype=float)
        if self._field_goal is not None and np.array_equal(goal, self._field_goal):
            return self._field
        res = self.config.resolution
        straight = np.linalg.norm(self.points - goal, axis=-1)
        field = np.where(straight <= 1.5 * res, straight, np.inf)
        padded = np.full(np.add(field.shape, 2), np.inf)
        inner = tuple(slice(1, n + 1) for n in field.shape)
        # Relax every cell from its neighbours until nothing changes (Bellman-Ford on the grid;
        # the number of sweeps is the longest path in cells).
        while True:
            padded[inner] = field
            best = field
            for offset, length in zip(NEIGHBOURS, NEIGHBOUR_LENGTHS, strict=True):
                shifted = padded[tuple(slice(1 + o, n + 1 + o)
                                       for o, n in zip(offset, field.shape, strict=True))]
                best = np.minimum(best, shifted + length * res * self.cost)
            if np.array_equal(best, field):
                break
            field = best
        self._field_goal, self._field = goal.copy(), field
        return field

    def distance(self, goal: np.ndarray, points: np.ndarray) -> np.ndarray:
        """Distance-to-`goal` (N,) of hand positions (N, 3), trilinear between the cells."""
        field = self.field(goal)
        scaled = (np.asarray(points, dtype=float) - self.origin) / self.config.resolution
        scaled = np.clip(scaled, 0.0, np.array(field.shape) - 1.000001)
        base = np.floor(scaled).astype(int)
        frac = scaled - base
        total = np.zeros(len(scaled))
        for corner in np.ndindex(2, 2, 2):
            weight = np.prod(np.where(corner, frac, 1.0 - frac), axis=1)
            index = tuple((base + corner).T)
            total += weight * field[index]
        return total


class ScriptedOracle:
    """Follows the planner's field with the primitives mu's support allows (module doc)."""

    def __init__(self, controller: SafeBehaviorController, planner: HandPlanner,
                 control_period: float):
        if not controller.discrete:
            raise ValueError('the oracle chooses among the discrete primitives: give it the '
                             'discrete behavior controller')
        self.controller = controller
        self.planner = planner
        self.steps = controller.actions.directions * control_period
        self.hold = controller.actions.hold_index

    def choose(self, q: np.ndarray, goal: np.ndarray, allowed: np.ndarray) -> int:
        """The primitive to take at posture `q`: among the `allowed` ones (mu's support at
        the state), the one whose next hand position is closest to `goal` along the planned
        field; hold when none gets closer."""
        hand = self.controller.kinematics.ee_position(q)
        distance = self.planner.distance(goal, hand + self.steps)
        distance[~np.asarray(allowed, dtype=bool)] = np.inf
        distance[self.hold] = self.planner.distance(goal, hand[None])[0]
        return int(np.argmin(distance))


def make_oracle(controller: SafeBehaviorController, control_period: float,
                config: OracleConfig | None = None,
                avoid: tuple[BoxZone, ...] = ()) -> ScriptedOracle:
    """The oracle of `controller`'s safe set (a discrete controller: mu's own), planning
    around the boxes `avoid` too (a task's costly regions)."""
    planner = HandPlanner(controller.support.safe_set, config or OracleConfig(), avoid)
    return ScriptedOracle(controller, planner, control_period)
