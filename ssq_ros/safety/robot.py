"""The robot model every other layer uses: joints in command order, limits, collision spheres.

`load_robot('robot.yaml')` reads the URDF with pinocchio, keeps the joints the yaml names (every
other joint is locked at its neutral position), and checks every name against the URDF, so a
wrong name fails at start-up with the key that holds it. Any URDF arm works by configuration:
`urdf` may be an absolute path, a `package://pkg/...` URI or a file name in the package's urdf/
folder.

The collision spheres are verified against the URDF's collision geometry at load, fail closed
(ssq_ros/safety/collision_cover.py): every moving link's geometry must lie within the spheres on
the same rigid body up to `max_cover_error`; what remains is reported per link
(`RobotModel.link_cover_error`) and per sphere (`RobotModel.sphere_cover_error`), and the safe set
adds it to the sphere radii. `ssq-robot-setup` writes a robot yaml with a fitted cover.
"""
from __future__ import annotations

import math
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pinocchio as pin

from ssq_ros.config import ConfigError, load, spec
from ssq_ros.paths import urdf_path
from ssq_ros.safety import collision_cover as cover


@dataclass(frozen=True)
class CollisionSphereConfig:
    name: str = spec(doc='unique name, reported when this sphere limits a margin')
    frame: str = spec(doc='URDF link (or any pinocchio frame) the sphere is fixed to')
    radius: float = spec(doc='sphere radius [m]; must cover the link geometry', low=0.0,
                         high=2.0)
    offset: tuple[float, float, float] = spec((0.0, 0.0, 0.0),
                                              doc='sphere centre in the frame [m]')


@dataclass(frozen=True)
class RobotConfig:
    urdf: str = spec(doc='URDF: absolute path, package://pkg/path, or a file in urdf/')
    joint_names: tuple[str, ...] = spec(doc='actuated joints in command order')
    ee_frame: str = spec(doc='end-effector frame (a URDF link) the task and actions use')
    home: tuple[float, ...] = spec(doc='posture [rad] for the null-space term and resets')
    collision_spheres: tuple[CollisionSphereConfig, ...] = spec(
        doc='spheres covering every moving link; the safe set is checked on these')
    acceleration_limits: tuple[float, ...] | None = spec(
        None, doc='per-joint acceleration limit [rad/s^2]; none means unlimited', low=1e-6)
    max_cover_error: float = spec(
        0.02, doc='largest distance [m] by which a moving link\'s collision geometry may stick '
        'out of its spheres; a larger gap fails loading (regenerate the spheres with '
        'ssq-robot-setup), a smaller one is added to the sphere radii in the safe set',
        low=0.0, high=0.2)


@dataclass(frozen=True)
class RobotModel:
    """A loaded arm: limits as arrays in `joint_names` order plus the pinocchio model."""

    config: RobotConfig
    urdf_path: Path
    joint_names: tuple[str, ...]
    ee_frame: str
    model: pin.Model
    position_lower: np.ndarray
    position_upper: np.ndarray
    velocity_limit: np.ndarray
    effort_limit: np.ndarray
    acceleration_limit: np.ndarray
    home: np.ndarray
    sphere_names: tuple[str, ...]
    sphere_frames: tuple[str, ...]
    sphere_offsets: np.ndarray
    sphere_radii: np.ndarray
    to_pinocchio: np.ndarray
    """`q_pin = q[to_pinocchio]` reorders a command-order vector into pinocchio's order."""
    sphere_cover_error: np.ndarray
    """(S,) [m] per sphere: the worst distance by which the collision geometry of a link on the
    same rigid body lies outside the spheres of that body (0 where the cover is complete)."""
    link_cover_error: dict[str, float]
    """moving link with collision geometry -> the distance [m] it sticks out of its spheres."""

    @property
    def dof(self) -> int:
        return len(self.joint_names)

    @property
    def base_frame(self) -> str:
        """The URDF's root link (the TF root robot_state_publisher publishes): the frame the safe
        set, goals and markers are expressed in."""
        return next(f.name for f in self.model.frames if f.type == pin.FrameType.BODY)

    @property
    def cover_radii(self) -> np.ndarray:
        """`sphere_radii + sphere_cover_error`: radii whose balls contain every verified point of
        the arm's collision geometry; the safe set inflates these, not the bare radii."""
        return self.sphere_radii + self.sphere_cover_error


def resolve_package_uri(uri: str) -> Path:
    """Find the file a `package://pkg/rest` URI names, as ROS tools would.

    Searched in order: ROS_PACKAGE_PATH folders, `share/pkg` under every AMENT_PREFIX_PATH
    entry, and the cmeel prefix that pip-installed robotics packages (example-robot-data,
    pinocchio) use.
    """
    if not uri.startswith('package://'):
        raise ValueError(f'{uri!r} is not a package:// URI')
    package, _, rest = uri[len('package://'):].partition('/')
    candidates = []
    for entry in os.environ.get('ROS_PACKAGE_PATH', '').split(os.pathsep):
        if entry:
            candidates += [Path(entry) / package, Path(entry)]
    for prefix in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / 'share' / package)
    for key in ('purelib', 'platlib'):
        candidates.append(Path(sysconfig.get_paths()[key]) / 'cmeel.prefix' / 'share' / package)
    for base in candidates:
        if base.name == package and (base / rest).is_file():
            return base / rest
    raise FileNotFoundError(f'{uri}: package {package!r} not found (searched ROS_PACKAGE_PATH, '
                            'AMENT_PREFIX_PATH and the cmeel prefix)')


def resolve_urdf(name: str, where: str = 'urdf') -> Path:
    """The URDF file a config names; a missing file is a ConfigError naming the key."""
    try:
        if name.startswith('package://'):
            return resolve_package_uri(name)
    except FileNotFoundError as exc:
        raise ConfigError(f'{where}: {exc}') from exc
    path = Path(name) if Path(name).is_absolute() else urdf_path(name)
    if not path.is_file():
        raise ConfigError(f'{where}: URDF file not found: {path}')
    return path


def load_robot(path: str | Path) -> RobotModel:
    """Read a robot yaml (see config/robot.yaml) and the URDF it names."""
    return build_robot(load(RobotConfig, path), where=str(path))


def build_robot(cfg: RobotConfig, where: str = 'robot') -> RobotModel:
    """A RobotModel from a parsed RobotConfig; every name is checked against the URDF."""
    path = resolve_urdf(cfg.urdf, f'{where}.urdf')
    try:
        full = pin.buildModelFromUrdf(str(path))
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f'{where}.urdf: pinocchio cannot read {path}: {exc}') from exc
    if len(set(cfg.joint_names)) != len(cfg.joint_names) or not cfg.joint_names:
        raise ConfigError(f'{where}.joint_names: must be a non-empty list of distinct names')
    urdf_joints = [full.names[i] for i in range(1, full.njoints)]
    for name in cfg.joint_names:
        if name not in urdf_joints:
            raise ConfigError(f'{where}.joint_names: unknown joint {name!r} (URDF joints: '
                              f'{", ".join(urdf_joints)})')
        joint = full.joints[full.getJointId(name)]
        if joint.nq != 1 or joint.nv != 1:
            raise ConfigError(f'{where}.joint_names: joint {name!r} is not a 1-DoF revolute '
                              f'or prismatic joint ({joint.shortname()})')
    locked = [full.getJointId(n) for n in urdf_joints if n not in cfg.joint_names]
    model = pin.buildReducedModel(full, locked, pin.neutral(full)) if locked else full

    pin_names = [model.names[i] for i in range(1, model.njoints)]
    to_pin = np.array([cfg.joint_names.index(n) for n in pin_names])
    from_pin = np.argsort(to_pin)  # command index -> pinocchio index
    idx_q = np.array([model.joints[i].idx_q for i in range(1, model.njoints)])[from_pin]
    idx_v = np.array([model.joints[i].idx_v for i in range(1, model.njoints)])[from_pin]
    lower = model.lowerPositionLimit[idx_q].copy()
    upper = model.upperPositionLimit[idx_q].copy()
    velocity = model.velocityLimit[idx_v].copy()
    effort = model.effortLimit[idx_v].copy()
    for label, values in (('position', np.r_[lower, upper]), ('velocity', velocity)):
        if not np.all(np.isfinite(values)) or (label == 'velocity' and np.any(values <= 0)):
            raise ConfigError(f'{where}.urdf: {path.name} lacks finite {label} limits for '
                              f'{", ".join(cfg.joint_names)}')
    dof = len(cfg.joint_names)
    if cfg.acceleration_limits is None:
        accel = np.full(dof, np.inf)
    elif len(cfg.acceleration_limits) != dof:
        raise ConfigError(f'{where}.acceleration_limits: expected {dof} values, got '
                          f'{len(cfg.acceleration_limits)}')
    else:
        accel = np.array(cfg.acceleration_limits, dtype=float)
    home = np.array(cfg.home, dtype=float)
    if home.shape != (dof,):
        raise ConfigError(f'{where}.home: expected {dof} values, got {len(cfg.home)}')
    if np.any(home < lower) or np.any(home > upper):
        raise ConfigError(f'{where}.home: outside the URDF joint limits')
    for key, frame in [('ee_frame', cfg.ee_frame)] + [
            (f'collision_spheres[{i}].frame', s.frame) for i, s in
            enumerate(cfg.collision_spheres)]:
        if not model.existFrame(frame):
            raise ConfigError(f'{where}.{key}: unknown frame {frame!r}')
        if sum(f.name == frame for f in model.frames) > 1:
            raise ConfigError(f'{where}.{key}: several frames of the URDF are named {frame!r} '
                              '(a link and a joint); use another link of the same body')
    names = tuple(s.name for s in cfg.collision_spheres)
    if len(set(names)) != len(names):
        raise ConfigError(f'{where}.collision_spheres: sphere names must be unique')
    if not names:
        raise ConfigError(f'{where}.collision_spheres: at least one sphere is needed')
    link_errors, per_sphere = verify_cover(cfg, path, full, locked, model, where)
    return RobotModel(
        config=cfg, urdf_path=path, joint_names=tuple(cfg.joint_names), ee_frame=cfg.ee_frame,
        model=model, position_lower=lower, position_upper=upper, velocity_limit=velocity,
        effort_limit=effort, acceleration_limit=accel, home=home, sphere_names=names,
        sphere_frames=tuple(s.frame for s in cfg.collision_spheres),
        sphere_offsets=np.array([s.offset for s in cfg.collision_spheres], dtype=float),
        sphere_radii=np.array([s.radius for s in cfg.collision_spheres], dtype=float),
        to_pinocchio=to_pin, sphere_cover_error=per_sphere, link_cover_error=link_errors)


def sphere_placements(model: pin.Model, cfg: RobotConfig) -> tuple[np.ndarray, np.ndarray]:
    """(parent joint ids (S,), centres (S, 3) in those joints' frames) of the spheres."""
    joints, centres = [], []
    for sphere in cfg.collision_spheres:
        frame = model.frames[model.getFrameId(sphere.frame)]
        joints.append(frame.parentJoint)
        centres.append(frame.placement.act(np.array(sphere.offset, dtype=float)))
    return np.array(joints, dtype=int), np.array(centres, dtype=float).reshape(-1, 3)


def verify_cover(cfg: RobotConfig, path: Path, full: pin.Model, locked: list[int],
                 model: pin.Model, where: str) -> tuple[dict[str, float], np.ndarray]:
    """Per-link and per-sphere cover errors (cached); a cover that misses fails closed."""
    joints, centres = sphere_placements(model, cfg)
    radii = np.array([s.radius for s in cfg.collision_spheres], dtype=float)
    key = cover.cover_key(path.read_bytes(), cfg.joint_names,
                          [(s.name, s.frame, s.offset, s.radius) for s in cfg.collision_spheres],
                          cover.SPACING)

    def compute() -> tuple[dict[str, float], np.ndarray]:
        try:
            links = cover.collision_points(path, full, locked)
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(f'{where}.urdf: cannot read the collision geometry of {path}: '
                              f'{exc}') from exc
        errors = cover.cover_errors(links, joints, centres, radii)
        return errors, cover.sphere_errors(links, errors, joints)

    link_errors, per_sphere = cover.cached_cover_errors(key, len(radii), compute)
    hint = ('; fit a new cover with `ssq-robot-setup --urdf URDF --ee FRAME --out FILE` '
            '(docs/hardware.md, "Setting up a new arm")')
    for link, error in sorted(link_errors.items(), key=lambda item: -item[1]):
        if not math.isfinite(error):
            raise ConfigError(f'{where}.collision_spheres: link {link!r} has collision geometry '
                              'but no sphere on a frame that moves with it' + hint)
        if error > cfg.max_cover_error:
            raise ConfigError(f'{where}.collision_spheres: the collision geometry of link '
                              f'{link!r} lies up to {error:.3f} m outside its spheres (more than '
                              f'max_cover_error {cfg.max_cover_error} m)' + hint)
    return link_errors, per_sphere


def link_collision_points(robot: RobotModel) -> dict[str, cover.LinkPoints]:
    """The points `load_robot` verified the cover on: every moving link's collision geometry
    in the frame of its parent joint of `robot.model` (see collision_cover.collision_points)."""
    full = pin.buildModelFromUrdf(str(robot.urdf_path))
    locked = [full.getJointId(full.names[i]) for i in range(1, full.njoints)
              if full.names[i] not in robot.joint_names]
    return cover.collision_points(robot.urdf_path, full, locked)
