"""An independent judge of measured states: the URDF's own collision geometry, exact distances.

The shield (support check) and the safe set work on collision spheres. A judge that used the same
spheres would be fooled by the same wrong cover, so the safety monitor judges a robot's states
with this one instead: pinocchio's GeometryModel of the URDF's collision elements (meshes, boxes,
cylinders, ...), placed by pinocchio's kinematics, and coal's exact distance to the table, the
workspace walls and every keep-out zone of the safe-set config, with none of S's clearances or
margins (like the MuJoCo referee in simulation): joint positions against the URDF limits, joint
velocities against the URDF velocity limits, and the exact distance between the links of every
self-collision pair the safe set checks (`self_collision:A|B`).

Exact distances cost about 0.1 ms per mesh and zone, too much for every pair at a driver's rate,
so each geometry is first bounded by the sphere around its local bounding box: where that bound
is farther than `exact_within` from a zone, the bound itself is the margin (a lower bound of the
true distance, so a state is never judged safer than it is); nearer, coal computes the distance.
A state is unsafe iff its minimum margin is negative, which only exact distances can produce.

The table is not judged against links whose height no joint can change (those turned only about
the vertical axis, e.g. a UR's shoulder housing just above its mount): they can never come
closer to the table than the mount puts them, and their gap to it is the mount's, not the
motion's (`height_fixed_links`).
"""
from __future__ import annotations

import coal
import numpy as np
import pinocchio as pin

from ssq_ros.safety.collision_cover import package_search_dirs
from ssq_ros.safety.robot import RobotModel
from ssq_ros.safety.safe_set import SafeSetConfig, Verdict, box_signed_distance

HEIGHT_SAMPLES = 64  # random postures that tell which links' heights no joint can change
WALL = 1.0  # m: thickness of the slabs standing for the table and the workspace walls
REACH = 20.0  # m: half size of those slabs along the surface they stand for


class GeometryJudge:
    """Margins (named like the referee's) of measured states from the URDF collision geometry."""

    def __init__(self, robot: RobotModel, config: SafeSetConfig, exact_within: float = 0.05,
                 self_collision_pairs: tuple[tuple[str, str], ...] = ()):
        if not exact_within > 0.0:
            raise ValueError(f'exact_within must be positive, got {exact_within}')
        self.robot = robot
        self.exact_within = exact_within
        self.geometry = pin.GeometryModel()
        pin.buildGeomFromUrdf(robot.model, str(robot.urdf_path), pin.COLLISION, self.geometry,
                              package_dirs=package_search_dirs())
        self.data = robot.model.createData()
        self.geometry_data = pin.GeometryData(self.geometry)
        self.moving = [i for i, obj in enumerate(self.geometry.geometryObjects)
                       if obj.parentJoint != 0]
        if not self.moving:
            raise ValueError(f'{robot.urdf_path.name} has no collision geometry on the moving '
                             'links: nothing to judge')
        # Bounding sphere of each moving geometry, in its own frame.
        self._centres, self._radii = [], []
        for i in self.moving:
            shape = self.geometry.geometryObjects[i].geometry
            shape.computeLocalAABB()
            self._centres.append(np.array(shape.aabb_center, dtype=float))
            self._radii.append(float(shape.aabb_radius))
        self._radii = np.array(self._radii)
        self.hazards = self._hazards(config)
        fixed = self._height_fixed()
        self.height_fixed_links = tuple(sorted({
            robot.model.frames[self.geometry.geometryObjects[i].parentFrame].name
            for i, is_fixed in zip(self.moving, fixed, strict=True) if is_fixed}))
        self._judged_by_table = ~fixed
        links = [robot.model.frames[self.geometry.geometryObjects[i].parentFrame].name
                 for i in self.moving]
        # Per pair, the (k, l) indices into `moving` of the geometries of link A and of link B.
        self.pairs = tuple((a, b, [(k, m) for k, la in enumerate(links) if la == a
                                   for m, lb in enumerate(links) if lb == b])
                           for a, b in self_collision_pairs)
        for a, b, geometry_pairs in self.pairs:
            if not geometry_pairs:
                raise ValueError(f'self-collision pair {a}|{b}: a link without collision '
                                 'geometry in the URDF')
        self.names = tuple([f'joint_position:{n}' for n in robot.joint_names]
                           + [f'joint_velocity:{n}' for n in robot.joint_names]
                           + list(dict.fromkeys(name for name, *_ in self.hazards))
                           + [f'self_collision:{a}|{b}' for a, b, _ in self.pairs])
        self._request = coal.DistanceRequest()
        self._result = coal.DistanceResult()

    def _height_fixed(self) -> np.ndarray:
        """(G,) whether no posture changes the height of any point of each moving geometry:
        its placement's vertical row of rotation and its height stay the same."""
        robot = self.robot
        rng = np.random.default_rng(0)
        rows = []
        for q in rng.uniform(robot.position_lower, robot.position_upper,
                             (HEIGHT_SAMPLES, robot.dof)):
            pin.updateGeometryPlacements(robot.model, self.data, self.geometry,
                                         self.geometry_data, q[robot.to_pinocchio])
            rows.append([np.r_[self.geometry_data.oMg[i].rotation[2],
                               self.geometry_data.oMg[i].translation[2]] for i in self.moving])
        rows = np.array(rows)  # (samples, G, 4)
        return np.ptp(rows, axis=0).max(axis=1) < 1e-9

    @staticmethod
    def _hazards(config: SafeSetConfig) -> list[tuple[str, coal.CollisionGeometry,
                                                      coal.Transform3s, np.ndarray, np.ndarray]]:
        """(name, shape, placement, box centre, box half sizes) of every obstacle; several may
        share a name (the six workspace walls)."""
        hazards = []

        def box(name: str, centre, half) -> None:
            centre, half = np.asarray(centre, dtype=float), np.asarray(half, dtype=float)
            hazards.append((name, coal.Box(*(2.0 * half)), coal.Transform3s(np.eye(3), centre),
                            centre, half))

        if config.table_height is not None:
            box('table', (0.0, 0.0, config.table_height - WALL / 2), (REACH, REACH, WALL / 2))
        if config.workspace is not None:
            lower, upper = np.array(config.workspace.lower), np.array(config.workspace.upper)
            for axis in range(3):
                half = np.full(3, REACH)
                half[axis] = WALL / 2
                for side, offset in ((lower, -WALL / 2), (upper, WALL / 2)):
                    centre = (lower + upper) / 2
                    centre[axis] = side[axis] + offset
                    box('workspace', centre, half)
        for zone in config.keep_out_boxes:
            box(f'keep_out:{zone.name}', zone.center, zone.half_extents)
        for zone in config.keep_out_spheres:
            centre = np.asarray(zone.center, dtype=float)
            hazards.append((f'keep_out:{zone.name}', coal.Sphere(zone.radius),
                            coal.Transform3s(np.eye(3), centre), centre, None))
        return hazards

    def margins(self, q: np.ndarray, qdot: np.ndarray) -> np.ndarray:
        """Margins (C,) of one measured state, named by `self.names`."""
        q = np.asarray(q, dtype=float)
        qdot = np.asarray(qdot, dtype=float)
        dof = self.robot.dof
        if q.shape != (dof,) or qdot.shape != (dof,):
            raise ValueError(f'q and qdot must have shape ({dof},), got {q.shape}, {qdot.shape}')
        if not (np.all(np.isfinite(q)) and np.all(np.isfinite(qdot))):
            raise ValueError('q or qdot contains NaN or inf')
        robot = self.robot
        position = np.minimum(q - robot.position_lower, robot.position_upper - q)
        velocity = robot.velocity_limit - np.abs(qdot)
        pin.updateGeometryPlacements(robot.model, self.data, self.geometry, self.geometry_data,
                                     q[robot.to_pinocchio])
        placements = [self.geometry_data.oMg[i] for i in self.moving]
        centres = np.array([p.rotation @ c + p.translation
                            for p, c in zip(placements, self._centres, strict=True)])
        cartesian: dict[str, float] = {}
        for name, shape, where, centre, half in self.hazards:
            if half is None:
                bound = np.linalg.norm(centres - centre, axis=1) - shape.radius - self._radii
            else:
                bound = box_signed_distance(centres, centre, half) - self._radii
            if name == 'table':
                bound = np.where(self._judged_by_table, bound, np.inf)
            near = bound < self.exact_within
            worst = float(bound[~near].min()) if not near.all() else np.inf
            for k in np.flatnonzero(near):
                worst = min(worst, self._distance(self.moving[k], placements[k], shape, where))
            cartesian[name] = min(cartesian.get(name, np.inf), worst)
        pairs = []
        for _, _, geometry_pairs in self.pairs:
            worst = np.inf
            for k, m in geometry_pairs:
                bound = (np.linalg.norm(centres[k] - centres[m]) - self._radii[k]
                         - self._radii[m])
                if bound >= self.exact_within:
                    worst = min(worst, bound)
                    continue
                other = self.geometry.geometryObjects[self.moving[m]].geometry
                where = coal.Transform3s(placements[m].rotation, placements[m].translation)
                worst = min(worst, self._distance(self.moving[k], placements[k], other, where))
            pairs.append(worst)
        return np.concatenate([position, velocity, list(cartesian.values()), pairs])

    def _distance(self, index: int, placement: pin.SE3, shape: coal.CollisionGeometry,
                  where: coal.Transform3s) -> float:
        """coal's distance, negative (the penetration depth, at least 1e-9) when they touch."""
        obj = self.geometry.geometryObjects[index]
        here = coal.Transform3s(placement.rotation, placement.translation)
        self._result.clear()
        distance = coal.distance(obj.geometry, here, shape, where, self._request, self._result)
        if distance > 0.0:
            return float(distance)
        request, result = coal.CollisionRequest(), coal.CollisionResult()
        if coal.collide(obj.geometry, here, shape, where, request, result):
            depth = max((abs(c.penetration_depth) for c in result.getContacts()), default=0.0)
            return -max(depth, 1e-9)
        return 0.0

    def evaluate(self, q: np.ndarray, qdot: np.ndarray) -> Verdict:
        """The verdict on one measured state: safe iff every margin >= 0."""
        margins = self.margins(q, qdot)
        index = int(np.argmin(margins))
        return Verdict(bool(margins[index] >= 0.0), float(margins[index]), self.names[index])

