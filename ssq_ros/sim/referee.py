"""The referee: an unsafe-state check from MuJoCo's own state and geometry.

It never calls the safety layer. Joint positions and velocities are read from MuJoCo and judged
against MuJoCo's joint ranges and the URDF velocity limits (no margins); distances are
`mj_geomDistance` between the arm's real collision geoms (not the safety layer's spheres) and the
table, the workspace walls and the keep-out zones, and between the geoms of the two links of
every self-collision pair the scene lists (`self_collision:A|B`, the pairs the safe set checks;
negative when they penetrate). Every "zero unsafe states" claim of the project is counted by
this class.
"""
from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from ssq_ros.sim.scene import Scene

# Distances beyond this are reported as this (mj_geomDistance stops looking further).
DISTANCE_CAP = 0.5
# Self-collision distances beyond this are reported as this: geom pairs whose bounding spheres
# are further apart are not measured (most of them in most postures), which keeps the referee's
# cost close to what it was without self-collision pairs.
SELF_DISTANCE_CAP = 0.1


@dataclass(frozen=True)
class RefereeVerdict:
    """unsafe iff min_margin < 0; `constraint` names the tightest (e.g. 'keep_out:fixture')."""

    unsafe: bool
    min_margin: float
    constraint: str

    def worse(self, other: RefereeVerdict) -> RefereeVerdict:
        return other if other.min_margin < self.min_margin else self


class Referee:
    """Judges the state held in an MjData of `scene.model`."""

    def __init__(self, scene: Scene):
        self.scene = scene
        model = scene.model
        joint_ids = [model.joint(n).id for n in scene.joint_names]
        self.lower = model.jnt_range[joint_ids, 0].copy()
        self.upper = model.jnt_range[joint_ids, 1].copy()
        self.names = ([f'joint_position:{n}' for n in scene.joint_names]
                      + [f'joint_velocity:{n}' for n in scene.joint_names]
                      + [name for name, _ in scene.hazards]
                      + [name for name, _ in scene.self_pairs])
        pairs = [geoms for _, geoms in scene.self_pairs]
        self._self_geoms = (np.concatenate(pairs) if pairs else np.zeros((0, 2), dtype=int))
        self._self_starts = np.cumsum([0] + [len(g) for g in pairs[:-1]]).astype(np.intp)
        bound = model.geom_rbound[self._self_geoms]
        # rbound 0 marks an unbounded geom (a plane): never skipped.
        self._self_bound = np.where(np.all(bound > 0, axis=1), bound.sum(axis=1), -np.inf)

    def margins(self, data: mujoco.MjData) -> np.ndarray:
        """Every margin, named by `self.names`; geometry from the current qpos."""
        scene, model = self.scene, self.scene.model
        mujoco.mj_kinematics(model, data)
        q = data.qpos[scene.qpos_index]
        qdot = data.qvel[scene.dof_index]
        position = np.minimum(q - self.lower, self.upper - q)
        velocity = scene.velocity_limit - np.abs(qdot)
        distances = [min(mujoco.mj_geomDistance(model, data, int(arm), geom, DISTANCE_CAP, None)
                         for arm in scene.arm_geoms) for _, geom in scene.hazards]
        return np.concatenate([position, velocity, distances, self.self_margins(data)])

    def self_margins(self, data: mujoco.MjData) -> np.ndarray:
        """Signed distance between the geoms of each self-collision pair (negative when they
        penetrate), capped at SELF_DISTANCE_CAP; needs the current geom positions."""
        if not len(self._self_geoms):
            return np.zeros(0)
        model, geoms = self.scene.model, self._self_geoms
        apart = data.geom_xpos[geoms[:, 0]] - data.geom_xpos[geoms[:, 1]]
        lower = np.sqrt(np.einsum('gi,gi->g', apart, apart)) - self._self_bound
        distances = np.full(len(geoms), SELF_DISTANCE_CAP)
        for row in np.flatnonzero(lower < SELF_DISTANCE_CAP):
            distances[row] = mujoco.mj_geomDistance(model, data, int(geoms[row, 0]),
                                                    int(geoms[row, 1]), SELF_DISTANCE_CAP,
                                                    None)
        return np.minimum.reduceat(distances, self._self_starts)

    def judge(self, data: mujoco.MjData) -> RefereeVerdict:
        margins = self.margins(data)
        if not np.all(np.isfinite(margins)):
            return RefereeVerdict(True, float('-inf'), 'non-finite state')
        index = int(np.argmin(margins))
        return RefereeVerdict(bool(margins[index] < 0.0), float(margins[index]),
                              self.names[index])
