"""The referee: an unsafe-state check from MuJoCo's own state and geometry.

It never calls the safety layer. Joint positions and velocities are read from MuJoCo and judged
against MuJoCo's joint ranges and the URDF velocity limits (no margins); distances are
`mj_geomDistance` between the arm's real collision geoms (not the safety layer's spheres) and the
table, the workspace walls and the keep-out zones. Every "zero unsafe states" claim of the
project is counted by this class.
"""
from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from ssq_ros.sim.scene import Scene

# Distances beyond this are reported as this (mj_geomDistance stops looking further).
DISTANCE_CAP = 0.5


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
                      + [name for name, _ in scene.hazards])

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
        return np.concatenate([position, velocity, distances])

    def judge(self, data: mujoco.MjData) -> RefereeVerdict:
        margins = self.margins(data)
        if not np.all(np.isfinite(margins)):
            return RefereeVerdict(True, float('-inf'), 'non-finite state')
        index = int(np.argmin(margins))
        return RefereeVerdict(bool(margins[index] < 0.0), float(margins[index]),
                              self.names[index])
