"""The safe set S: named constraints, each with a signed margin (>= 0 inside S).

Constraints: joint positions inside the URDF limits shrunk by a margin, joint velocities below a
fraction of the URDF limits, for every collision sphere (radius plus a clearance) staying above
the table plane, inside the workspace box and outside every keep-out box and sphere, and for
every link pair that can touch (ssq_ros/safety/self_collision.py) their spheres apart by a
clearance. Joint margins are in rad and rad/s, Cartesian margins in metres; the minimum over all
of them decides.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssq_ros.config import ConfigError, load, spec
from ssq_ros.safety.kinematics import Kinematics
from ssq_ros.safety.robot import RobotModel
from ssq_ros.safety.self_collision import SelfCollisionConfig, self_collision_margins


@dataclass(frozen=True)
class BoxZone:
    name: str = spec(doc='name reported when this zone limits the margin')
    center: tuple[float, float, float] = spec(doc='box centre in the world frame [m]')
    half_extents: tuple[float, float, float] = spec(doc='half sizes along x, y, z [m]',
                                                    low=1e-4)


@dataclass(frozen=True)
class SphereZone:
    name: str = spec(doc='name reported when this zone limits the margin')
    center: tuple[float, float, float] = spec(doc='sphere centre in the world frame [m]')
    radius: float = spec(doc='sphere radius [m]', low=1e-4)


@dataclass(frozen=True)
class WorkspaceBox:
    lower: tuple[float, float, float] = spec(doc='lowest x, y, z every sphere must stay above')
    upper: tuple[float, float, float] = spec(doc='highest x, y, z every sphere must stay below')


@dataclass(frozen=True)
class SafeSetConfig:
    joint_position_margin: float = spec(0.05, doc='distance kept from URDF joint limits [rad]',
                                        low=0.0, high=0.5)
    joint_velocity_fraction: float = spec(0.5, doc='fraction of the URDF velocity limit allowed',
                                          low=0.01, high=1.0)
    cartesian_clearance: float = spec(0.03, doc='gap kept between spheres and zones/table [m]',
                                      low=0.0, high=0.5)
    table_height: float | None = spec(0.0, doc='table top z [m]; null for no table')
    workspace: WorkspaceBox | None = spec(None, doc='box every sphere stays inside; null for none')
    keep_out_boxes: tuple[BoxZone, ...] = spec((), doc='axis-aligned boxes no sphere may enter')
    keep_out_spheres: tuple[SphereZone, ...] = spec((), doc='spheres no sphere may enter')
    self_collision: SelfCollisionConfig = spec(
        default_factory=SelfCollisionConfig,
        doc='pairs of the arm\'s own links kept apart (see ssq_ros/safety/self_collision.py)')


def load_safe_set_config(path: str | Path) -> SafeSetConfig:
    """The `safe_set` section of a safe-set yaml, with cross-field checks."""
    cfg = load(SafeSetConfig, path, 'safe_set')
    names = [z.name for z in cfg.keep_out_boxes] + [z.name for z in cfg.keep_out_spheres]
    if len(set(names)) != len(names):
        raise ConfigError(f'{path}:safe_set: keep-out zone names must be unique: {names}')
    if cfg.workspace is not None and not np.all(np.subtract(cfg.workspace.upper,
                                                            cfg.workspace.lower) > 0):
        raise ConfigError(f'{path}:safe_set.workspace: upper must exceed lower on every axis')
    return cfg


def box_signed_distance(points: np.ndarray, center: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Signed distance (...,) from points (..., 3) to an axis-aligned box; negative inside."""
    # Per-axis arithmetic: numpy reductions over a length-3 last axis are slow in a hot loop.
    dx, dy, dz = (np.abs(points[..., i] - center[i]) - half[i] for i in range(3))
    outside = np.sqrt(np.maximum(dx, 0.0) ** 2 + np.maximum(dy, 0.0) ** 2
                      + np.maximum(dz, 0.0) ** 2)
    inside = np.minimum(np.maximum(np.maximum(dx, dy), dz), 0.0)
    return outside + inside


def inside_box_distance(points: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Distance (...,) from points (..., 3) to the nearest face of a box they should be inside
    of; negative outside."""
    gaps = [np.minimum(points[..., i] - lower[i], upper[i] - points[..., i]) for i in range(3)]
    return np.minimum(np.minimum(gaps[0], gaps[1]), gaps[2])


def sphere_distance(points: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Euclidean distance (...,) from points (..., 3) to a point."""
    return np.sqrt(sum((points[..., i] - center[i]) ** 2 for i in range(3)))


MOUNT_SAMPLES, MOUNT_SEED = 2000, 0  # postures that tell which spheres sit on the mount


@dataclass(frozen=True)
class Verdict:
    """One state's judgement: safe iff min_margin >= 0; `constraint` names the tightest."""

    safe: bool
    min_margin: float
    constraint: str


class SafeSet:
    """Margins of the configured constraints for batches of states."""

    def __init__(self, robot: RobotModel, config: SafeSetConfig,
                 kinematics: Kinematics | None = None):
        self.robot = robot
        self.config = config
        self.kinematics = kinematics or Kinematics(robot)
        margin = config.joint_position_margin
        self.position_lower = robot.position_lower + margin
        self.position_upper = robot.position_upper - margin
        if np.any(self.position_lower >= self.position_upper):
            raise ConfigError('safe_set.joint_position_margin: leaves no room between the '
                              'joint limits of ' + ', '.join(robot.joint_names))
        self.velocity_limit = robot.velocity_limit * config.joint_velocity_fraction
        self.inflated_radii = robot.cover_radii + config.cartesian_clearance
        self.table_mounted = self._table_mounted() if config.table_height is not None \
            else np.zeros(robot.sphere_radii.shape, dtype=bool)
        """Spheres left out of the table check: no posture lifts them clear of it."""
        names = [f'joint_position:{n}' for n in robot.joint_names]
        names += [f'joint_velocity:{n}' for n in robot.joint_names]
        if config.table_height is not None:
            names.append('table')
        if config.workspace is not None:
            names.append('workspace')
        names += [f'keep_out:{z.name}' for z in config.keep_out_boxes]
        names += [f'keep_out:{z.name}' for z in config.keep_out_spheres]
        self.self_collision = self_collision_margins(robot, config.self_collision)
        """Margins of the enabled link pairs, the last columns of `margins`."""
        self.self_collision_columns = slice(len(names), len(names) + len(self.self_collision))
        names += self.self_collision.names
        self.names: tuple[str, ...] = tuple(names)

    def _table_mounted(self) -> np.ndarray:
        """(S,) spheres below the table's clearance in every one of MOUNT_SAMPLES random
        postures of the safe joint range (seeded), as MoveIt's setup assistant disables the
        pairs it finds always in collision: such a sphere sits on the arm's mount (a UR's
        shoulder housings 2-3 cm above the table top), no motion takes it off the table, and
        checking it would leave S empty. Whether the real links touch the table is judged by
        the URDF geometry (safety_monitor, the referee), not by these spheres."""
        rng = np.random.default_rng(MOUNT_SEED)
        qs = rng.uniform(self.position_lower, self.position_upper,
                         (MOUNT_SAMPLES, self.robot.dof))
        heights = self.kinematics.sphere_positions(qs)[..., 2]
        return np.all(heights - self.config.table_height - self.inflated_radii < 0.0, axis=0)

    def cartesian_margins(self, spheres: np.ndarray) -> np.ndarray:
        """Margins (B, C_cart) of sphere centres (B, S, 3): table, workspace, zones in order."""
        cfg, radii = self.config, self.inflated_radii
        columns = []
        if cfg.table_height is not None:
            above = spheres[..., 2] - cfg.table_height - radii
            columns.append(np.where(self.table_mounted, np.inf, above).min(axis=-1))
        if cfg.workspace is not None:
            inside = inside_box_distance(spheres, np.array(cfg.workspace.lower),
                                         np.array(cfg.workspace.upper))
            columns.append((inside - radii).min(axis=-1))
        for zone in cfg.keep_out_boxes:
            dist = box_signed_distance(spheres, np.array(zone.center),
                                       np.array(zone.half_extents))
            columns.append((dist - radii).min(axis=-1))
        for zone in cfg.keep_out_spheres:
            dist = sphere_distance(spheres, zone.center) - zone.radius
            columns.append((dist - radii).min(axis=-1))
        return np.stack(columns, axis=-1) if columns else np.zeros(spheres.shape[:1] + (0,))

    def margins(self, q: np.ndarray, qdot: np.ndarray, spheres: np.ndarray | None = None
                ) -> np.ndarray:
        """Margins (B, C) of states, columns named by `self.names`; `spheres` (B, S, 3) may
        pass sphere centres already computed for q."""
        q = self.kinematics.check_configurations(q)
        qdot = np.asarray(qdot, dtype=float)
        if qdot.size != q.size:
            raise ValueError(f'joint velocities must match positions {q.shape}, got '
                             f'{qdot.shape}')
        qdot = qdot.reshape(q.shape)
        if not np.all(np.isfinite(qdot)):
            raise ValueError('joint velocities contain NaN or inf')
        position = np.minimum(q - self.position_lower, self.position_upper - q)
        velocity = self.velocity_limit - np.abs(qdot)
        if spheres is None:
            spheres = self.kinematics.sphere_positions(q)
        cartesian = self.cartesian_margins(spheres)
        return np.concatenate([position, velocity, cartesian, self.self_collision(spheres)],
                              axis=-1)

    def evaluate(self, q: np.ndarray, qdot: np.ndarray) -> Verdict:
        """Verdict for one state."""
        margins = self.margins(q, qdot)[0]
        index = int(np.argmin(margins))
        return Verdict(bool(margins[index] >= 0.0), float(margins[index]), self.names[index])

