"""The simulated arm: a velocity-controlled MuJoCo arm stepped one control period at a time.

Like a real velocity controller, the simulated one ramps its velocity target toward each new
command at a bounded acceleration (synchronised across joints, so the direction in joint space is
kept) and servoes the joints to that target with effort-limited velocity actuators. The referee
judges the state every `referee_stride` physics steps; `step` returns the worst verdict of the
period.
"""
from __future__ import annotations

import mujoco
import numpy as np

from ssq_ros.safety.robot import RobotModel
from ssq_ros.sim.referee import Referee, RefereeVerdict
from ssq_ros.sim.scene import PhysicsConfig, Scene


class ArmSimulator:
    """One arm in one scene: reset to a state, step with a joint-velocity command."""

    def __init__(self, robot: RobotModel, scene: Scene, physics: PhysicsConfig):
        substeps = physics.control_period / physics.timestep
        if abs(substeps - round(substeps)) > 1e-6:
            raise ValueError(f'control_period {physics.control_period} is not a multiple of '
                             f'timestep {physics.timestep}')
        if not np.all(np.isfinite(robot.acceleration_limit)):
            raise ValueError('the simulated controller needs finite acceleration_limits')
        self.robot = robot
        self.scene = scene
        self.physics = physics
        self.substeps = int(round(substeps))
        self.model = scene.model
        self.data = mujoco.MjData(scene.model)
        self.referee = Referee(scene)
        self.ramp_rate = robot.acceleration_limit * physics.command_acceleration_fraction
        self._target = np.zeros(robot.dof)

    @property
    def q(self) -> np.ndarray:
        return self.data.qpos[self.scene.qpos_index].copy()

    @property
    def qdot(self) -> np.ndarray:
        return self.data.qvel[self.scene.dof_index].copy()

    @property
    def time(self) -> float:
        return float(self.data.time)

    def ee_position(self) -> np.ndarray:
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self.scene.ee_site].copy()

    def set_goal(self, position: np.ndarray) -> None:
        self.data.mocap_pos[self.scene.goal_mocap] = position

    def reset(self, q: np.ndarray, qdot: np.ndarray | None = None) -> RefereeVerdict:
        """Put the arm at (q, qdot) with the controller's target at qdot; judge that state."""
        mujoco.mj_resetData(self.model, self.data)
        qdot = np.zeros(self.robot.dof) if qdot is None else np.asarray(qdot, dtype=float)
        self.data.qpos[self.scene.qpos_index] = q
        self.data.qvel[self.scene.dof_index] = qdot
        self._target = qdot.copy()
        self.data.ctrl[self.scene.actuator_index] = qdot
        mujoco.mj_forward(self.model, self.data)
        return self.referee.judge(self.data)

    def step(self, command: np.ndarray) -> RefereeVerdict:
        """Track a joint-velocity command for one control period; the worst referee verdict.

        A malformed command (wrong size, NaN/inf) raises ValueError before anything moves.
        """
        command = np.asarray(command, dtype=float)
        if command.shape != (self.robot.dof,) or not np.all(np.isfinite(command)):
            raise ValueError(f'command must be {self.robot.dof} finite joint velocities, got '
                             f'{command!r}')
        start = self._target
        change = command - start
        ramp = float(np.max(np.abs(change) / self.ramp_rate))
        dt = self.physics.timestep
        worst = None
        for k in range(1, self.substeps + 1):
            progress = 1.0 if ramp <= 0 else min(1.0, k * dt / ramp)
            self.data.ctrl[self.scene.actuator_index] = start + change * progress
            mujoco.mj_step(self.model, self.data)
            if k % self.physics.referee_stride == 0 or k == self.substeps:
                verdict = self.referee.judge(self.data)
                worst = verdict if worst is None else worst.worse(verdict)
        self._target = start + change * (1.0 if ramp <= 0 else min(1.0, self.substeps * dt
                                                                     / ramp))
        return worst
