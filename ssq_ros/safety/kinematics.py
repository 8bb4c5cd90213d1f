"""Forward kinematics of the end effector and the collision spheres, batched, plus Jacobians.

The support check evaluates hundreds of configurations per control step (candidates x samples
along each swept path), so `sphere_positions` and `ee_position` run a vectorised product of
joint transforms in numpy over the whole batch, built from the pinocchio model's joint
placements. The Jacobian of one configuration (one per control step) comes from pinocchio
itself; `ee_jacobians` builds a batch of them from the same vectorised frames.
Inputs are in the robot's command order (`RobotModel.joint_names`).
"""
from __future__ import annotations

import numpy as np
import pinocchio as pin

from ssq_ros.safety.robot import RobotModel

_AXES = {'X': (1.0, 0.0, 0.0), 'Y': (0.0, 1.0, 0.0), 'Z': (0.0, 0.0, 1.0)}


def joint_axis(joint: pin.JointModel) -> tuple[str, np.ndarray]:
    """('revolute'|'prismatic', unit axis) of a 1-DoF pinocchio joint; others raise ValueError."""
    name = joint.shortname()
    for prefix, kind in (('JointModelR', 'revolute'), ('JointModelP', 'prismatic')):
        suffix = name[len(prefix):]
        if name.startswith(prefix) and suffix in _AXES:
            return kind, np.array(_AXES[suffix])
        if name.startswith(prefix) and suffix in ('evoluteUnaligned', 'rismaticUnaligned'):
            axis = np.asarray(joint.extract().axis, dtype=float)
            return kind, axis / np.linalg.norm(axis)
    raise ValueError(f'joint type {name} is not supported (revolute or prismatic only)')


def axis_rotations(axes: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., J, 3, 3) about unit axes (J, 3) by angles (..., J) (Rodrigues)."""
    axes = np.atleast_2d(axes)
    x, y, z = axes[:, 0], axes[:, 1], axes[:, 2]
    zero = np.zeros_like(x)
    skew = np.stack([np.stack([zero, -z, y], -1), np.stack([z, zero, -x], -1),
                     np.stack([-y, x, zero], -1)], -2)
    s = np.sin(angles)[..., None, None]
    c = np.cos(angles)[..., None, None]
    return np.eye(3) + s * skew + (1.0 - c) * (skew @ skew)


class Kinematics:
    """Batched FK of the end effector and collision spheres of one RobotModel."""

    def __init__(self, robot: RobotModel):
        self.robot = robot
        model = robot.model
        self._data = model.createData()
        self._parents = [model.parents[i] for i in range(1, model.njoints)]
        self._placements = [(model.jointPlacements[i].rotation.copy(),
                             model.jointPlacements[i].translation.copy())
                            for i in range(1, model.njoints)]
        self._axes = [joint_axis(model.joints[i]) for i in range(1, model.njoints)]
        self._axis_array = np.array([axis for _, axis in self._axes])
        self._revolute = np.array([kind == 'revolute' for kind, _ in self._axes], dtype=float)
        self._from_pinocchio = np.argsort(robot.to_pinocchio)
        self._ee_frame_id = model.getFrameId(robot.ee_frame)
        self._ee_joint, self._ee_local = self._frame_point(robot.ee_frame, np.zeros(3))
        self._moves_ee = np.zeros(len(self._parents), dtype=bool)  # joints upstream of the hand
        joint = self._ee_joint
        while joint > 0:
            self._moves_ee[joint - 1] = True
            joint = model.parents[joint]
        points = [self._frame_point(f, o) for f, o in
                  zip(robot.sphere_frames, robot.sphere_offsets, strict=True)]
        self._sphere_joints = np.array([j for j, _ in points])
        self._sphere_local = np.array([p for _, p in points])
        self.lever_bound = self._lever_bound()
        """R such that a joint motion dq moves no sphere centre by more than R * sum|dq_i|."""

    def _lever_bound(self) -> float:
        """Longest chain (sum of link offsets, plus prismatic travel) from any joint to any
        sphere centre: a point at most R from every upstream joint axis moves at most
        R * |angle| per revolute joint and |travel| per prismatic joint (R >= 1 m covers it)."""
        model = self.robot.model
        chain = np.zeros(model.njoints)
        for k in range(1, model.njoints):
            reach = np.linalg.norm(model.jointPlacements[k].translation)
            if self._axes[k - 1][0] == 'prismatic':
                index = model.joints[k].idx_q
                reach += max(abs(model.lowerPositionLimit[index]),
                             abs(model.upperPositionLimit[index]))
            chain[k] = chain[model.parents[k]] + (reach if model.parents[k] > 0 else 0.0)
        lengths = chain[self._sphere_joints] + np.linalg.norm(self._sphere_local, axis=1)
        has_prismatic = any(kind == 'prismatic' for kind, _ in self._axes)
        return float(max(lengths.max(), 1.0 if has_prismatic else 0.0))

    def _frame_point(self, frame: str, offset: np.ndarray) -> tuple[int, np.ndarray]:
        """(joint index, point in that joint's frame) of a point fixed in a named frame."""
        placement = self.robot.model.frames[self.robot.model.getFrameId(frame)].placement
        return (self.robot.model.frames[self.robot.model.getFrameId(frame)].parentJoint,
                placement.rotation @ np.asarray(offset, dtype=float) + placement.translation)

    def check_configurations(self, q: np.ndarray) -> np.ndarray:
        """q as a finite (B, dof) array; raises ValueError naming the problem otherwise."""
        q = np.asarray(q, dtype=float)
        if q.ndim == 1:
            q = q[None]
        if q.ndim != 2 or q.shape[1] != self.robot.dof:
            raise ValueError(f'joint positions must have shape ({self.robot.dof},) or '
                             f'(B, {self.robot.dof}), got {q.shape}')
        if not np.all(np.isfinite(q)):
            raise ValueError('joint positions contain NaN or inf')
        return q

    def joint_frames(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World rotations (B, J+1, 3, 3) and origins (B, J+1, 3) of every joint (0 = world)."""
        q = self.check_configurations(q)
        q_pin = q[:, self.robot.to_pinocchio]
        batch, count = q.shape[0], len(self._parents) + 1
        rotations = np.empty((batch, count, 3, 3))
        origins = np.empty((batch, count, 3))
        rotations[:, 0] = np.eye(3)
        origins[:, 0] = 0.0
        # All joint motions at once; only the chain product below is sequential.
        motions = axis_rotations(self._axis_array, q_pin * self._revolute)
        for k, (parent, (fixed_rot, fixed_pos), (kind, axis)) in enumerate(
                zip(self._parents, self._placements, self._axes, strict=True)):
            parent_rot = rotations[:, parent]
            rotation = parent_rot @ fixed_rot
            origin = origins[:, parent] + parent_rot @ fixed_pos
            if kind == 'revolute':
                rotation = rotation @ motions[:, k]
            else:
                origin = origin + (rotation @ axis) * q_pin[:, k, None]
            rotations[:, k + 1] = rotation
            origins[:, k + 1] = origin
        return rotations, origins

    def sphere_positions(self, q: np.ndarray) -> np.ndarray:
        """Centres (B, S, 3) of the collision spheres, in `robot.sphere_names` order."""
        rotations, origins = self.joint_frames(q)
        joints = self._sphere_joints
        return origins[:, joints] + np.einsum('bsij,sj->bsi', rotations[:, joints],
                                              self._sphere_local)

    def ee_position(self, q: np.ndarray) -> np.ndarray:
        """End-effector positions (B, 3) for a batch, (3,) for one configuration."""
        single = np.asarray(q).ndim == 1
        rotations, origins = self.joint_frames(q)
        points = origins[:, self._ee_joint] + rotations[:, self._ee_joint] @ self._ee_local
        return points[0] if single else points

    def ee_jacobian(self, q: np.ndarray) -> np.ndarray:
        """Linear velocity Jacobian (3, dof) of the end effector, world-aligned, command order."""
        q = self.check_configurations(q)[0]
        model, data = self.robot.model, self._data
        q_pin = q[self.robot.to_pinocchio]
        jacobian = pin.computeFrameJacobian(model, data, q_pin, self._ee_frame_id,
                                            pin.ReferenceFrame.LOCAL_WORLD_ALIGNED)
        return jacobian[:3, self._from_pinocchio]

    def ee_jacobians(self, q: np.ndarray) -> np.ndarray:
        """`ee_jacobian` for a batch (B, dof) -> (B, 3, dof), from the vectorised joint frames:
        column k is axis_k x (p_ee - o_k) for a revolute joint upstream of the hand, axis_k
        for a prismatic one, zero for joints that do not move the hand."""
        rotations, origins = self.joint_frames(q)
        ee = origins[:, self._ee_joint] + rotations[:, self._ee_joint] @ self._ee_local
        axes = np.einsum('bkij,kj->bki', rotations[:, 1:], self._axis_array)
        lever = np.cross(axes, ee[:, None] - origins[:, 1:])
        columns = np.where(self._revolute[None, :, None] > 0, lever, axes)
        columns = columns * self._moves_ee[None, :, None]
        return columns.transpose(0, 2, 1)[:, :, self._from_pinocchio]

    def frame_placement(self, q: np.ndarray, frame: str) -> pin.SE3:
        """World placement of any frame of the model (a URDF link) at one configuration."""
        q = self.check_configurations(q)[0]
        pin.framesForwardKinematics(self.robot.model, self._data, q[self.robot.to_pinocchio])
        return self._data.oMf[self.robot.model.getFrameId(frame)].copy()

    def ee_position_pinocchio(self, q: np.ndarray) -> np.ndarray:
        """End-effector position from pinocchio's own FK (reference for the batched one)."""
        q = self.check_configurations(q)[0]
        pin.framesForwardKinematics(self.robot.model, self._data, q[self.robot.to_pinocchio])
        return self._data.oMf[self._ee_frame_id].translation.copy()
