"""The simulated arm: a velocity-controlled MuJoCo arm stepped one control period at a time.

Like a real velocity controller, the simulated one ramps its velocity target toward each new
command at a bounded acceleration (synchronised across joints, so the direction in joint space is
kept) and servoes the joints to that target with effort-limited velocity actuators. The referee
judges the state every `referee_stride` physics steps; `step` returns the worst verdict of the
period.

By default this servo is the support check's model (docs/safety.md, "The assumption it rests
on"). The physics options of `SERVO_OPTIONS` make it a servo that is not the model, with real
MuJoCo: `actuation_latency` queues each command for that many physics steps (the ramp keeps
going to the previous command meanwhile), `tracking_time_constant` puts a first-order filter
between the ramp and the actuators, `payload_mass` and `armature_scale` change the model the
scene compiles, and `state_latency`, `state_noise` and `timestamp_jitter` change only what is
measured: `measured_q`, `measured_qdot`, `measured_stamp` and `measured_ee_position()`, which the
env and the nodes read, while the referee and `q`, `qdot` are the true state.
"""
from __future__ import annotations

from collections import deque

import mujoco
import numpy as np

from ssq_ros.safety.robot import RobotModel
from ssq_ros.sim.referee import Referee, RefereeVerdict
from ssq_ros.sim.scene import PhysicsConfig, Scene


class ArmSimulator:
    """One arm in one scene: reset to a state, step with a joint-velocity command.

    `seed` seeds the generator of the measurement noise and stamp jitter (unused by default).
    """

    def __init__(self, robot: RobotModel, scene: Scene, physics: PhysicsConfig, seed: int = 0):
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
        self.actuation_steps = physics.steps_of(physics.actuation_latency)
        self.state_steps = physics.steps_of(physics.state_latency)
        tau = physics.tracking_time_constant
        # Exact discretisation of x' = (u - x) / tau for u held over one physics step.
        self.lag_gain = 0.0 if tau == 0 else float(-np.expm1(-physics.timestep / tau))
        self.rng = np.random.default_rng(seed)
        self._probe = mujoco.MjData(scene.model)  # kinematics of a measured posture
        self._steps = 0  # physics steps since reset
        self._pending: deque[tuple[int, np.ndarray]] = deque()  # (due physics step, command)
        self._history: deque[tuple[np.ndarray, np.ndarray]] = deque(maxlen=self.state_steps + 1)
        self._set_servo(np.zeros(robot.dof))
        self._noise = np.zeros(robot.dof)
        self._measured = (np.zeros(robot.dof), np.zeros(robot.dof), 0.0)

    # -- the true state (the referee's) --------------------------------------------------------

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

    # -- what a controller measures (state_latency, state_noise, timestamp_jitter) -------------

    @property
    def measured_q(self) -> np.ndarray:
        """Joint positions as measured at the end of the last reset or step."""
        return self._measured[0].copy()

    @property
    def measured_qdot(self) -> np.ndarray:
        return self._measured[1].copy()

    @property
    def measured_stamp(self) -> float:
        """The time the measured state claims to be from: the true time it was taken
        (`state_latency` ago), plus the stamp jitter."""
        return self._measured[2]

    def measured_ee_position(self) -> np.ndarray:
        """The end effector at the measured joint positions (the true one when they are)."""
        if self.state_steps == 0 and self.physics.state_noise == 0:
            return self.ee_position()
        self._probe.qpos[:] = self.data.qpos
        self._probe.qpos[self.scene.qpos_index] = self._measured[0]
        mujoco.mj_kinematics(self.model, self._probe)
        return self._probe.site_xpos[self.scene.ee_site].copy()

    def _record(self) -> None:
        if self.state_steps:
            self._history.append((self.q, self.qdot))

    def _measure(self) -> None:
        if self.state_steps:
            q, qdot = (v.copy() for v in self._history[0])
        else:
            q, qdot = self.q, self.qdot
        stamp = self.time - self.physics.state_latency
        if self.physics.state_noise > 0:
            noise = self.rng.normal(0.0, self.physics.state_noise, self.robot.dof)
            q = q + noise
            qdot = qdot + (noise - self._noise) / self.physics.control_period
            self._noise = noise
        if self.physics.timestamp_jitter > 0:
            stamp += float(self.rng.normal(0.0, self.physics.timestamp_jitter))
        self._measured = (q, qdot, stamp)

    # -- the servo -----------------------------------------------------------------------------

    def _set_servo(self, velocity: np.ndarray) -> None:
        """The servo at rest on `velocity`: ramp done, filter settled, nothing queued."""
        self._target = velocity.copy()
        self._start, self._change = velocity.copy(), np.zeros_like(velocity)
        self._ramp, self._elapsed = 0.0, 0
        self._filtered = velocity.copy()
        self._pending.clear()

    def _activate(self, command: np.ndarray) -> None:
        """A new command reaches the servo: ramp from the current target toward it."""
        self._start = self._target
        self._change = command - self._start
        self._ramp = float(np.max(np.abs(self._change) / self.ramp_rate))
        self._elapsed = 0

    def _servo_step(self) -> np.ndarray:
        """The actuators' velocity target for the next physics step."""
        self._steps += 1
        while self._pending and self._pending[0][0] <= self._steps:
            self._activate(self._pending.popleft()[1])
        self._elapsed += 1
        progress = 1.0 if self._ramp <= 0 else min(1.0, self._elapsed * self.physics.timestep
                                                   / self._ramp)
        self._target = self._start + self._change * progress
        if self.lag_gain == 0:
            return self._target
        self._filtered = self._filtered + self.lag_gain * (self._target - self._filtered)
        return self._filtered

    def set_goal(self, position: np.ndarray) -> None:
        self.data.mocap_pos[self.scene.goal_mocap] = position

    def reset(self, q: np.ndarray, qdot: np.ndarray | None = None) -> RefereeVerdict:
        """Put the arm at (q, qdot) with the controller's target at qdot; judge that state.

        The arm is taken to have been in this state for as long as `state_latency` looks back,
        and to have been commanded qdot for as long as `actuation_latency` delays."""
        mujoco.mj_resetData(self.model, self.data)
        qdot = np.zeros(self.robot.dof) if qdot is None else np.asarray(qdot, dtype=float)
        self.data.qpos[self.scene.qpos_index] = q
        self.data.qvel[self.scene.dof_index] = qdot
        self._set_servo(qdot)
        self._steps = 0
        self.data.ctrl[self.scene.actuator_index] = qdot
        mujoco.mj_forward(self.model, self.data)
        self._history.clear()
        for _ in range(self.state_steps + 1 if self.state_steps else 0):
            self._record()
        if self.physics.state_noise > 0:
            self._noise = self.rng.normal(0.0, self.physics.state_noise, self.robot.dof)
        self._measure()
        return self.referee.judge(self.data)

    def step(self, command: np.ndarray) -> RefereeVerdict:
        """Give the servo a joint-velocity command and simulate one control period; the worst
        referee verdict of the period.

        The command reaches the servo `actuation_latency` after it is given (at once by
        default). A malformed command (wrong size, NaN/inf) raises ValueError before anything
        moves.
        """
        command = np.asarray(command, dtype=float)
        if command.shape != (self.robot.dof,) or not np.all(np.isfinite(command)):
            raise ValueError(f'command must be {self.robot.dof} finite joint velocities, got '
                             f'{command!r}')
        self._pending.append((self._steps + 1 + self.actuation_steps, command.copy()))
        worst = None
        for k in range(1, self.substeps + 1):
            self.data.ctrl[self.scene.actuator_index] = self._servo_step()
            mujoco.mj_step(self.model, self.data)
            self._record()
            if k % self.physics.referee_stride == 0 or k == self.substeps:
                verdict = self.referee.judge(self.data)
                worst = verdict if worst is None else worst.worse(verdict)
        self._measure()
        return worst
