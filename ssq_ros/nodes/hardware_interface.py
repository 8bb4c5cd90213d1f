"""hardware_interface: the node between the ssq_ros graph and a real arm's ros2_control controller.

In:  /joint_states (sensor_msgs/JointState, the driver's order, reordered by name)
     /ssq/joint_command (std_msgs/Float64MultiArray, joint velocities in robot.yaml order)
     /ssq/estop_button (std_msgs/Bool, true latches the e-stop)
     services /ssq/estop and /ssq/estop_reset (std_srvs/Trigger)
Out: the controller's topic (/<controller>/commands or /<controller>/joint_trajectory),
     ~/status (std_msgs/String) and /diagnostics.

All decisions live in `ssq_ros.safety.command_filter.CommandGate` (clamps, watchdog, e-stop,
one commander) and `ssq_ros.safety.safe_set_filter.SafeSetFilter` (every command checked against
the whole safe set of the experiment's safe-set yaml, at the measured state); this node only
converts messages and reads the ROS graph's count of command publishers. A forward controller
keeps executing its last command, so silence is not a stop: a steady-clock timer re-sends every
control period, a stop when the watchdog or the e-stop says so.
"""
from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from builtin_interfaces.msg import Duration as DurationMsg
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from ssq_ros.config import ConfigError, spec
from ssq_ros.nodes.common import (
    JointStateInput,
    NodeDiagnostics,
    StatusReporter,
    declare_config,
    run_node,
    stamp_seconds,
    wait_until_delivered,
)
from ssq_ros.nodes.interfaces import (  # noqa: F401  (STANDARD_CONTROLLERS: importable here too)
    COMMAND_QOS,
    COMMAND_TOPIC,
    SENSOR_QOS,
    STANDARD_CONTROLLERS,
)
from ssq_ros.safety.command_filter import (
    CommandGate,
    CommandLimitsConfig,
    GateOutput,
    JointLimits,
)
from ssq_ros.safety.joint_state import JointStateError, JointStateReader
from ssq_ros.safety.robot import load_robot
from ssq_ros.safety.safe_set import SafeSet, load_safe_set_config
from ssq_ros.safety.safe_set_filter import FilterResult, SafeSetFilter
from ssq_ros.safety.status import SafetyStatus
from ssq_ros.safety.support import SupportCheck, load_support_config
from ssq_ros.safety.tracking import ServoRecorder, TrackingConfig, TrackingMonitor
from ssq_ros.training.config import load_run_config, resolve_config_file

_TOPIC_TOKEN = re.compile(r'[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*')


@dataclass(frozen=True)
class HardwareInterfaceConfig(JointStateInput, NodeDiagnostics):
    """Parameters of the hardware_interface node (config/hardware.yaml)."""

    config_file: str = spec('', doc="experiment YAML whose robot and safe set every command is "
                            "checked against; '' is the package's train_sim.yaml")
    robot_config: str = spec('', doc="robot yaml with joints, URDF and acceleration limits; '' "
                             'is the one config_file names')
    controller: str = spec('forward_velocity_controller', doc='name of the active ros2_control '
                           'controller that receives the commands')
    controller_kind: str = spec('', doc="what the controller expects; '' derives it from a "
                                'standard controller name', choices=('', 'velocity', 'position',
                                                                     'trajectory'))
    control_rate: float = spec(100.0, doc='commands per second sent to the controller [Hz]',
                               low=1.0, high=1000.0)
    state_timeout: float = spec(0.1, doc='stop if no valid joint state for this long [s]',
                                low=0.001, high=1.0)
    command_timeout: float = spec(0.1, doc='stop if no valid command for this long [s]',
                                  low=0.001, high=1.0)
    actuation_delay: float = spec(0.01, doc='time until the controller acts on a command [s] '
                                  '(its update period plus transport); the position clamp '
                                  'brakes this much earlier', low=0.0, high=1.0)
    allow_multiple_commanders: bool = spec(False, doc='move even while more than one node '
                                           'publishes on /ssq/joint_command (each command is '
                                           'still checked against the safe set)')
    ignored_joints: tuple[str, ...] = spec((), doc='joints in /joint_states that are not '
                                           'controlled and dropped on purpose (e.g. gripper)')
    record_path: str = spec('', doc="write every sent command and accepted joint state to "
                            "this JSON-lines file (ssq-identify's input); '' records nothing")
    limits: CommandLimitsConfig = field(default_factory=CommandLimitsConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def resolve_controller(cfg: HardwareInterfaceConfig) -> tuple[str, str]:
    """(kind, topic) of the configured controller; a contradiction is a ConfigError."""
    if not _TOPIC_TOKEN.fullmatch(cfg.controller):
        raise ConfigError(f'controller: {cfg.controller!r} is not a valid controller name')
    known = STANDARD_CONTROLLERS.get(cfg.controller.rsplit('/', 1)[-1])
    kind = cfg.controller_kind or known
    if kind is None:
        raise ConfigError(f'controller_kind: must be set for the non-standard controller '
                          f'{cfg.controller!r} (velocity, position or trajectory)')
    if known is not None and known != kind:
        raise ConfigError(f'controller_kind: {kind!r} contradicts controller '
                          f'{cfg.controller!r}, which takes {known} commands')
    suffix = 'joint_trajectory' if kind == 'trajectory' else 'commands'
    return kind, f'/{cfg.controller}/{suffix}'


class HardwareInterface(Node):
    """`now` is the watchdog's time source in seconds (monotonic; a test may drive its own)."""

    def __init__(self, now: Callable[[], float] = time.monotonic, **node_options: Any) -> None:
        super().__init__('hardware_interface', **node_options)
        self.now = now
        self.cfg = declare_config(self, HardwareInterfaceConfig)
        self.kind, self.controller_topic = resolve_controller(self.cfg)
        experiment = load_run_config(self.cfg.config_file)
        robot_file = self.cfg.robot_config or str(resolve_config_file(experiment.robot))
        self.robot = load_robot(robot_file)
        safe_set_file = resolve_config_file(experiment.safe_set)
        self.period = 1.0 / self.cfg.control_rate
        try:
            limits = JointLimits.from_robot(self.robot, self.cfg.limits)
            self.reader = JointStateReader.for_robot(
                self.robot, self.cfg.position_tolerance, require_velocity=True,
                max_stamp_age=self.cfg.max_stamp_age, ignored_joints=self.cfg.ignored_joints)
            support_config = load_support_config(safe_set_file)
            # The check looks ahead by the larger of this node's actuation delay and the
            # latency the support model was configured (identified) with.
            delay = max(self.cfg.actuation_delay, support_config.actuation_latency)
            support = SupportCheck(
                SafeSet(self.robot, load_safe_set_config(safe_set_file)), support_config,
                SafeSetFilter.check_period(self.period, delay))
            self.tracking = None if not self.cfg.tracking.enabled else TrackingMonitor(
                self.robot.joint_names, support.rate, support_config.actuation_latency,
                support_config.tracking_time_constant, self.cfg.tracking)
        except ValueError as exc:
            raise ConfigError(f'{robot_file} and {safe_set_file} with limits.*: {exc}') from exc
        self.safe_set_filter = SafeSetFilter(support)
        self.last_refusal_explained = -float('inf')
        self.last_state_time = -float('inf')
        self.gate = CommandGate(limits, self.period, self.cfg.state_timeout,
                                self.cfg.command_timeout, delay,
                                self.safe_set_filter, self.cfg.allow_multiple_commanders)
        self.recorder = ServoRecorder(self.cfg.record_path, self.robot.joint_names) \
            if self.cfg.record_path else None
        self.reporter = StatusReporter(self, self.cfg.diagnostics_period, self.cfg.controller)
        self.reporter.extra['controller_topic'] = self.controller_topic
        self.reporter.extra['safe_set'] = str(safe_set_file)
        self.create_timer(self.cfg.diagnostics_period, self.update_diagnostics,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))

        msg_type = JointTrajectory if self.kind == 'trajectory' else Float64MultiArray
        self.controller_pub = self.create_publisher(msg_type, self.controller_topic, COMMAND_QOS)
        self.create_subscription(JointState, '/joint_states', self.on_joint_state, SENSOR_QOS)
        self.create_subscription(Float64MultiArray, COMMAND_TOPIC, self.on_command, COMMAND_QOS)
        self.create_subscription(Bool, '/ssq/estop_button', self.on_estop_button, COMMAND_QOS)
        self.create_service(Trigger, '/ssq/estop', self.on_estop)
        self.create_service(Trigger, '/ssq/estop_reset', self.on_estop_reset)
        # Steady clock: the watchdog must keep running if /clock (sim time) stops.
        self.timer = self.create_timer(self.period, self.on_timer,
                                       clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(
            f'{self.kind} commands for {", ".join(self.robot.joint_names)} -> '
            f'{self.controller_topic} at {self.cfg.control_rate:g} Hz; watchdog '
            f'{self.cfg.state_timeout:g} s (state) / {self.cfg.command_timeout:g} s (command); '
            f'every command checked against the safe set of {safe_set_file}')

    def on_joint_state(self, msg: JointState) -> None:
        now = self.now()
        try:
            sample = self.reader.accept(msg.name, msg.position, msg.velocity,
                                        stamp_seconds(msg.header.stamp),
                                        self.get_clock().now().nanoseconds * 1e-9)
        except JointStateError as exc:
            self.reporter.reject(exc.status, exc.reason)
            return
        self.gate.update_state(sample.positions, now, sample.velocities)
        if self.recorder is not None:
            self.recorder.measured(now, sample.positions, sample.velocities)
        if self.tracking is not None:
            self.check_tracking(now, sample.positions, sample.velocities)

    def check_tracking(self, now: float, position, velocity) -> None:
        """Feed the tracking monitor; a fault latches TRACKING_FAULT_STOP (reset: e-stop
        reset). After a gap in the states the comparison starts afresh."""
        if now - self.last_state_time > self.cfg.state_timeout:
            self.tracking.reset()
        self.last_state_time = now
        fault = self.tracking.measured(now, position, velocity)
        if fault is None or self.gate.fault is not None or self.gate.estopped:
            return
        self.gate.latch_fault(SafetyStatus.TRACKING_FAULT_STOP)
        self.reporter.extra['tracking_fault'] = str(fault)
        self.get_logger().error(f'tracking fault, {fault}: the arm does not follow the servo '
                                'model the support check relies on; stopped, call '
                                '/ssq/estop_reset to resume')
        self.send(self.gate.step(now), now)

    def on_command(self, msg: Float64MultiArray) -> None:
        now = self.now()
        reason = self.gate.submit(msg.data, now)
        if reason is not None and reason not in (SafetyStatus.ESTOPPED,
                                                 SafetyStatus.TRACKING_FAULT_STOP):
            # Counted with the stop it causes (below); here only the details are logged.
            self.reporter.explain(reason, f'{len(msg.data)} values for '
                                  f'{len(self.robot.joint_names)} joints')
        self.send(self.step(now), now)
        self.timer.reset()  # the next periodic send is one full period after this one

    def on_timer(self) -> None:
        now = self.now()
        self.send(self.step(now), now)

    def step(self, now: float) -> GateOutput:
        """The gate's command, with the command topic's publisher count as of now."""
        self.gate.set_command_publishers(self.count_publishers(COMMAND_TOPIC))
        return self.gate.step(now)

    def update_diagnostics(self) -> None:
        """Timing of the safe-set check and the commanders, for /diagnostics."""
        p50, p99, count = self.safe_set_filter.timing_ms()
        self.reporter.extra['safe_set_check_p50_ms'] = f'{p50:.3f}'
        self.reporter.extra['safe_set_check_p99_ms'] = f'{p99:.3f}'
        self.reporter.extra['safe_set_checks_timed'] = str(count)
        self.reporter.extra['command_publishers'] = str(self.count_publishers(COMMAND_TOPIC))
        if self.tracking is not None:
            bound = self.cfg.tracking
            self.reporter.extra['tracking_worst_position'] = \
                f'{self.tracking.worst_position.max():.4f} (bound {bound.position_bound:g})'
            self.reporter.extra['tracking_worst_velocity'] = \
                f'{self.tracking.worst_velocity.max():.4f} (bound {bound.velocity_bound:g})'

    def on_estop_button(self, msg: Bool) -> None:
        was_latched = self.gate.estopped
        self.gate.set_button(bool(msg.data))
        if self.gate.estopped and not was_latched:
            self.get_logger().error('e-stop button pressed: stopping')
            now = self.now()
            self.send(self.gate.step(now), now)

    def on_estop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.gate.estop()
        now = self.now()
        self.send(self.gate.step(now), now)
        self.get_logger().error('e-stop requested: stopping; call /ssq/estop_reset to resume')
        response.success, response.message = True, 'e-stop latched'
        return response

    def on_estop_reset(self, request: Trigger.Request,
                       response: Trigger.Response) -> Trigger.Response:
        refusal = self.gate.reset(self.now())
        response.success = refusal is None
        if refusal is None and self.tracking is not None:
            self.tracking.reset()
            self.reporter.extra.pop('tracking_fault', None)
        response.message = 'e-stop released; waiting for a new command' if refusal is None \
            else f'e-stop stays latched: {refusal}'
        self.get_logger().warning(response.message)
        return response

    def send(self, out: GateOutput, decided_at: float) -> None:
        """Publish `out`, the gate's output for time `decided_at`, in the controller's message
        type and count its reactions."""
        self.reporter.record(out.statuses)
        now = self.now()
        if self.tracking is not None:
            self.tracking.sent(now, out.velocity)
        if self.recorder is not None:
            self.recorder.sent(now, out.velocity, decided_at)
        if out.safe_set is not None and out.safe_set.refused:
            self.explain_refusal(out.safe_set)
        if SafetyStatus.MULTIPLE_COMMANDERS_STOP in out.statuses:
            self.get_logger().error(
                f'{self.count_publishers(COMMAND_TOPIC)} nodes publish on {COMMAND_TOPIC}: '
                'stopped until only one does (allow_multiple_commanders: false)',
                throttle_duration_sec=2.0)
        if self.kind == 'velocity':
            self.controller_pub.publish(Float64MultiArray(data=out.velocity.tolist()))
        elif out.position is None:
            return  # no joint state yet: nothing known to hold; the controller holds itself
        elif self.kind == 'position':
            self.controller_pub.publish(Float64MultiArray(data=out.position.tolist()))
        else:
            nanosec = int(round(self.period * 1e9))
            point = JointTrajectoryPoint(
                positions=out.position.tolist(), velocities=out.velocity.tolist(),
                time_from_start=DurationMsg(sec=nanosec // 10 ** 9, nanosec=nanosec % 10 ** 9))
            # A zero header stamp means 'start now' to joint_trajectory_controller.
            self.controller_pub.publish(JointTrajectory(joint_names=list(self.robot.joint_names),
                                                        points=[point]))

    def explain_refusal(self, result: FilterResult) -> None:
        """Name the constraint behind a refused command, at most once a second (it costs
        another pass of the check)."""
        now = self.now()
        if now - self.last_refusal_explained < 1.0:
            return
        self.last_refusal_explained = now
        refused = result.explain()
        reason = (f'command would reach {refused.constraint} (margin '
                  f'{refused.min_margin:.4f}); sent {result.scale:g} of it')
        self.reporter.extra['last_safe_set_refusal'] = reason
        self.get_logger().warning(f'safe set: {reason}')

    def before_shutdown(self) -> None:
        """Leave the arm stopped: a forward controller would otherwise keep the last command."""
        self.gate.estop()
        now = self.now()
        self.send(self.gate.step(now), now)
        wait_until_delivered(self.controller_pub)
        if self.recorder is not None:
            self.recorder.close()
        if self.tracking is not None:
            self.get_logger().info(
                'tracking: worst position error '
                f'{self.tracking.worst_position.max():.4f} (bound '
                f'{self.cfg.tracking.position_bound:g}), worst mean velocity error '
                f'{self.tracking.worst_velocity.max():.4f} (bound '
                f'{self.cfg.tracking.velocity_bound:g})')
        self.get_logger().info('shut down with a stop command sent')


def main(args: list[str] | None = None) -> None:
    sys.exit(run_node(HardwareInterface, args))
