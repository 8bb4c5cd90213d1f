"""The MuJoCo scene, built from the same URDF the safety layer reads (mujoco.MjSpec).

The URDF is rewritten only as far as MuJoCo needs: package:// mesh paths resolved, visual
elements dropped (MuJoCo cannot load .dae; the sim renders nothing), joints the robot yaml does
not command turned fixed (pinocchio locks them at the same zero position), and static links
kept as bodies so every URDF link is a body. To that model the scene adds velocity-servo
actuators with the URDF effort limits, gravity compensation (as a real arm's velocity controller
has), a physical table, the keep-out zones and workspace walls as geometry physics ignores (the
referee measures distances to it), a site per collision sphere and at the end effector, a
mocap goal marker, and physics.payload_mass as an extra body at the end effector. Arm geoms
collide with the table, and with each other only across the link pairs the safe set checks for
self-collision (explicit contact pairs; every other pair of arm geoms never touches in physics,
as before).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

from ssq_ros.config import ConfigError
from ssq_ros.safety.robot import RobotModel, resolve_package_uri
from ssq_ros.safety.safe_set import SafeSetConfig
from ssq_ros.safety.self_collision import pair_name, select_pairs
from ssq_ros.task.config import PhysicsConfig

ZONE_RGBA = (0.9, 0.15, 0.1, 0.35)
TABLE_RGBA = (0.55, 0.45, 0.35, 1.0)
GOAL_RGBA = (0.1, 0.8, 0.2, 0.6)
# Walls around the workspace: thick enough that no link can be beyond one undetected.
WALL_THICKNESS = 1.0
# physics.payload_mass is a solid sphere of this radius at the end-effector frame [m].
PAYLOAD_RADIUS = 0.05


@dataclass(frozen=True)
class Scene:
    """A compiled MuJoCo model plus the indices the simulator and the referee use."""

    model: mujoco.MjModel
    joint_names: tuple[str, ...]
    qpos_index: np.ndarray
    dof_index: np.ndarray
    actuator_index: np.ndarray
    velocity_limit: np.ndarray
    """From the URDF's <limit velocity>, read here from the XML (MuJoCo does not keep it)."""
    arm_geoms: np.ndarray
    """Geoms of moving links (static links cannot change their distances to anything)."""
    hazards: tuple[tuple[str, int], ...]
    """(constraint name, geom id) of the table, the workspace walls and the keep-out zones."""
    self_pairs: tuple[tuple[str, np.ndarray], ...]
    """('self_collision:A|B', geom id pairs (G, 2)) of every link pair the safe set checks for
    self-collision: the geoms of link A's body against those of link B's."""
    sphere_sites: np.ndarray
    ee_site: int
    goal_mocap: int


def urdf_for_mujoco(path: Path, joint_names: tuple[str, ...]) -> tuple[str, np.ndarray]:
    """URDF text MuJoCo can compile, and the velocity limits of `joint_names` from it."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise ConfigError(f'{path}: cannot read URDF: {exc}') from exc
    for link in root.findall('link'):
        for visual in link.findall('visual'):
            link.remove(visual)
    for mesh in root.iter('mesh'):
        filename = mesh.get('filename', '')
        if filename.startswith('package://'):
            mesh.set('filename', str(resolve_package_uri(filename)))
        elif filename.startswith('file://'):
            mesh.set('filename', filename[len('file://'):])
        elif filename and not Path(filename).is_absolute():
            mesh.set('filename', str(path.parent / filename))
    for tag in ('gazebo', 'transmission', 'mujoco'):
        for element in root.findall(tag):
            root.remove(element)
    velocity = {}
    for joint in root.findall('joint'):
        name = joint.get('name')
        if name in joint_names:
            limit = joint.find('limit')
            velocity[name] = float(limit.get('velocity')) if limit is not None else np.nan
        elif joint.get('type') != 'fixed':
            joint.set('type', 'fixed')
            for child in ('limit', 'axis', 'dynamics', 'mimic', 'safety_controller'):
                for element in joint.findall(child):
                    joint.remove(element)
    missing = [n for n in joint_names if n not in velocity or not np.isfinite(velocity[n])]
    if missing:
        raise ConfigError(f'{path}: no joint or no velocity limit for {missing}')
    mujoco_tag = ET.SubElement(root, 'mujoco')
    ET.SubElement(mujoco_tag, 'compiler', fusestatic='false', discardvisual='false',
                  strippath='false', balanceinertia='true')
    return ET.tostring(root, encoding='unicode'), np.array([velocity[n] for n in joint_names])


def build_scene(robot: RobotModel, safe_set: SafeSetConfig, physics: PhysicsConfig,
                goal_radius: float = 0.03) -> Scene:
    """Compile the scene for one robot and safe set."""
    xml, velocity_limit = urdf_for_mujoco(robot.urdf_path, robot.joint_names)
    spec_ = mujoco.MjSpec.from_string(xml)
    spec_.option.timestep = physics.timestep
    spec_.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    robot_bodies = [b for b in spec_.bodies if b.name != 'world']
    for body in robot_bodies:
        body.gravcomp = 1.0
    for index, geom in enumerate(spec_.geoms):
        # Arm geoms touch the table; each other only through the explicit pairs below.
        geom.contype, geom.conaffinity = 1, 0
        if not geom.name:
            geom.name = f'urdf_geom_{index}'
    for name, effort, limit in zip(robot.joint_names, robot.effort_limit, velocity_limit,
                                   strict=True):
        joint = spec_.joint(name)
        joint.armature = physics.armature * physics.armature_scale
        actuator = spec_.add_actuator(name=f'{name}_velocity', target=name,
                                      trntype=mujoco.mjtTrn.mjTRN_JOINT)
        actuator.set_to_velocity(kv=float(effort / physics.velocity_error_at_full_effort))
        actuator.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
        actuator.forcerange = [-float(effort), float(effort)]
        actuator.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE
        actuator.ctrlrange = [-float(limit), float(limit)]

    body_names = {b.name for b in robot_bodies}
    for index, (name, frame, offset) in enumerate(zip(
            robot.sphere_names, robot.sphere_frames, robot.sphere_offsets, strict=True)):
        if frame not in body_names:
            raise ConfigError(f'collision_spheres[{index}].frame: {frame!r} is not a URDF link')
        spec_.body(frame).add_site(name=f'sphere_{name}', pos=list(offset),
                                   size=[float(robot.sphere_radii[index])] * 3)
    if robot.ee_frame not in body_names:
        raise ConfigError(f'ee_frame: {robot.ee_frame!r} is not a URDF link')
    spec_.body(robot.ee_frame).add_site(name='ee', size=[0.01] * 3)
    if physics.payload_mass > 0:
        # An unmodelled load: its own body, no geom (it touches nothing), and no gravity
        # compensation (the controller's model does not know it), so the servo carries it.
        inertia = 0.4 * physics.payload_mass * PAYLOAD_RADIUS ** 2
        spec_.body(robot.ee_frame).add_body(name='payload', mass=physics.payload_mass,
                                            inertia=[inertia] * 3, explicitinertial=True,
                                            gravcomp=0.0)

    self_pairs = _add_self_collision_pairs(spec_, robot, safe_set, body_names)

    world = spec_.worldbody
    hazards: list[tuple[str, str]] = []
    if safe_set.table_height is not None:
        half = physics.table_half_size
        world.add_geom(name='table', type=mujoco.mjtGeom.mjGEOM_BOX,
                       size=[half, half, 0.25], pos=[0, 0, safe_set.table_height - 0.25],
                       rgba=TABLE_RGBA, contype=0, conaffinity=1)
        hazards.append(('table', 'table'))
    if safe_set.workspace is not None:
        hazards += [('workspace', n) for n in _add_workspace_walls(world, safe_set.workspace)]
    for zone in safe_set.keep_out_boxes:
        world.add_geom(name=f'zone_{zone.name}', type=mujoco.mjtGeom.mjGEOM_BOX,
                       size=list(zone.half_extents), pos=list(zone.center), rgba=ZONE_RGBA,
                       contype=0, conaffinity=0, group=2)
        hazards.append((f'keep_out:{zone.name}', f'zone_{zone.name}'))
    for zone in safe_set.keep_out_spheres:
        world.add_geom(name=f'zone_{zone.name}', type=mujoco.mjtGeom.mjGEOM_SPHERE,
                       size=[zone.radius, 0, 0], pos=list(zone.center), rgba=ZONE_RGBA,
                       contype=0, conaffinity=0, group=2)
        hazards.append((f'keep_out:{zone.name}', f'zone_{zone.name}'))
    goal = world.add_body(name='goal', mocap=True, pos=[0.5, 0.0, 0.5])
    goal.add_geom(type=mujoco.mjtGeom.mjGEOM_SPHERE, size=[goal_radius, 0, 0], rgba=GOAL_RGBA,
                  contype=0, conaffinity=0, group=2)

    model = spec_.compile()
    joint_ids = [model.joint(n).id for n in robot.joint_names]
    robot_body_ids = {model.body(b.name).id for b in robot_bodies}
    arm_geoms = np.array([g for g in range(model.ngeom)
                          if model.geom_bodyid[g] in robot_body_ids
                          and model.body_weldid[model.geom_bodyid[g]] != 0])
    return Scene(
        model=model, joint_names=robot.joint_names,
        qpos_index=np.array([model.jnt_qposadr[j] for j in joint_ids]),
        dof_index=np.array([model.jnt_dofadr[j] for j in joint_ids]),
        actuator_index=np.array([model.actuator(f'{n}_velocity').id for n in robot.joint_names]),
        velocity_limit=velocity_limit, arm_geoms=arm_geoms,
        hazards=tuple((name, model.geom(geom).id) for name, geom in hazards),
        self_pairs=tuple((name, np.array([[model.geom(a).id, model.geom(b).id]
                                          for a, b in geoms], dtype=int).reshape(-1, 2))
                         for name, geoms in self_pairs),
        sphere_sites=np.array([model.site(f'sphere_{n}').id for n in robot.sphere_names]),
        ee_site=model.site('ee').id, goal_mocap=int(model.body('goal').mocapid[0]))


def _add_self_collision_pairs(spec_: mujoco.MjSpec, robot: RobotModel,
                              safe_set: SafeSetConfig, body_names: set[str]
                              ) -> list[tuple[str, list[tuple[str, str]]]]:
    """An explicit contact pair for every geom of link A and every geom of link B, for each
    link pair (A, B) the safe set checks (ssq_ros.safety.self_collision.select_pairs); the
    names of those geom pairs per link pair. Contacts act only when two geoms touch, which S
    forbids, so they never perturb a run that stays in S."""
    if not safe_set.self_collision.enabled:
        return []
    geoms: dict[str, list[str]] = {name: [] for name in body_names}
    for geom in spec_.geoms:
        parent = geom.parent.name
        if parent in geoms:
            geoms[parent].append(geom.name)
    result = []
    for first, second in select_pairs(robot, safe_set.self_collision).enabled:
        pairs = [(a, b) for a in geoms.get(first, []) for b in geoms.get(second, [])]
        for a, b in pairs:
            spec_.add_pair(geomname1=a, geomname2=b)
        if pairs:
            result.append((pair_name((first, second)), pairs))
    return result


def _add_workspace_walls(world: mujoco.MjsBody, workspace) -> list[str]:
    """Six slabs just outside the workspace box; invisible, ignored by physics."""
    lower, upper = np.array(workspace.lower), np.array(workspace.upper)
    center, half = (lower + upper) / 2, (upper - lower) / 2
    names = []
    for axis in range(3):
        for side, face in (('lower', lower[axis]), ('upper', upper[axis])):
            size = half + WALL_THICKNESS
            size[axis] = WALL_THICKNESS / 2
            pos = center.copy()
            pos[axis] = face - WALL_THICKNESS / 2 if side == 'lower' else \
                face + WALL_THICKNESS / 2
            name = f'workspace_{"xyz"[axis]}_{side}'
            world.add_geom(name=name, type=mujoco.mjtGeom.mjGEOM_BOX, size=list(size),
                           pos=list(pos), rgba=(0, 0, 0, 0), contype=0, conaffinity=0, group=3)
            names.append(name)
    return names
