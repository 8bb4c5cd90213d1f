"""safety_monitor: the independent referee of the graph, its e-stop, and the safety picture for
RViz.

In:  /joint_states (judged against the safe set S by the safety layer, not by any controller, and
     by the geometry judge: the URDF's collision geometry, exact distances, no spheres),
     /ssq/sim/verdict (the simulator's referee, in sim), /ssq/goal, /ssq/run_phase.
Out: /ssq/safety/status (diagnostic_msgs/DiagnosticArray, latched: unsafe-state counts per judge
     and phase, minimum margins; ERROR once any state was unsafe), /ssq/safety/markers
     (visualization_msgs/MarkerArray, latched), ~/status and /diagnostics (UNSAFE_STATE and
     MONITOR_ESTOP counted, the last e-stop reason), and calls /ssq/estop (std_srvs/Trigger,
     hardware_interface's latch) when a measured state leaves S or comes within `estop_margin`
     of it, or the referee reports an unsafe state. Reset stays manual (/ssq/estop_reset).

Marker namespaces (docs/topics.md): `table`, `workspace`, `keep_out`, `goal`, `ee_trail` (hand
positions coloured by S's margin: green safe, red near the boundary, magenta outside),
`status_text`, and `costly` (the task's costly regions, not part of S) where the task has any.
Counting and colours: `ssq_ros.graph_logic.monitor`.
"""
from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, PointStamped
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import ColorRGBA, String
from std_srvs.srv import Trigger
from visualization_msgs.msg import Marker, MarkerArray

from ssq_ros.config import spec
from ssq_ros.graph_logic.monitor import EstopTrigger, SafetyTally, margin_color
from ssq_ros.graph_logic.phases import decode_phase
from ssq_ros.nodes.common import (
    JointStateInput,
    StatusReporter,
    declare_config,
    run_node,
    stamp_seconds,
)
from ssq_ros.nodes.interfaces import LATCHED_QOS, SENSOR_QOS, VERDICT_QOS
from ssq_ros.safety.geometry_judge import GeometryJudge
from ssq_ros.safety.joint_state import JointStateError, JointStateReader
from ssq_ros.safety.robot import load_robot
from ssq_ros.safety.safe_set import SafeSet, load_safe_set_config
from ssq_ros.safety.status import SafetyStatus
from ssq_ros.training.config import load_run_config, resolve_config_file

MARKER_NAMESPACES = ('table', 'workspace', 'keep_out', 'goal', 'ee_trail', 'status_text')
ZONE_COLOR = (0.9, 0.15, 0.1, 0.35)
TABLE_COLOR = (0.55, 0.45, 0.35, 0.8)
WORKSPACE_COLOR = (0.3, 0.5, 1.0, 0.8)
GOAL_COLOR = (0.1, 0.8, 0.2, 0.6)
COSTLY_COLOR = (1.0, 0.6, 0.1, 0.3)


@dataclass(frozen=True)
class SafetyMonitorConfig(JointStateInput):
    """Parameters of the safety_monitor node (config/nodes.yaml)."""

    config_file: str = spec('', doc="experiment YAML (robot, safe set); '' is the package's "
                            'train_sim.yaml')
    frame_id: str = spec('', doc="frame of the safe set and of the markers; '' is the robot's "
                         'base (its URDF root link)')
    trail_length: int = spec(300, doc='hand positions kept in the ee_trail marker', low=2,
                             high=100_000)
    comfortable_margin: float = spec(0.1, doc='margin drawn fully green [m or rad]',
                                     low=1e-3, high=10.0)
    publish_period: float = spec(0.2, doc='seconds between status and marker messages (wall '
                                 'clock)', low=0.02, high=60.0)
    position_tolerance: float = spec(0.5, doc='refuse joint states further than this outside '
                                     'the URDF limits [rad]', low=0.0, high=2.0)
    geometry_judge: bool = spec(True, doc="also judge every state with the URDF's collision "
                                'geometry (exact distances, independent of the safe set\'s '
                                'spheres)')
    estop_on_violation: bool = spec(True, doc='latch the e-stop through hardware_interface '
                                    '(/ssq/estop) when a state leaves S or the referee reports '
                                    'an unsafe state')
    estop_margin: float = spec(0.0, doc='also latch when a measured state comes within this '
                               'margin of leaving S [m or rad]; 0 latches only outside S',
                               low=0.0, high=0.5)


def _color(rgba: tuple[float, ...]) -> ColorRGBA:
    return ColorRGBA(r=float(rgba[0]), g=float(rgba[1]), b=float(rgba[2]), a=float(rgba[3]))


def _point(xyz) -> Point:
    return Point(x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2]))


class SafetyMonitor(Node):
    def __init__(self, **node_options: Any) -> None:
        super().__init__('safety_monitor', **node_options)
        self.cfg = declare_config(self, SafetyMonitorConfig)
        run_config = load_run_config(self.cfg.config_file)
        robot = load_robot(resolve_config_file(run_config.robot))
        safe_set_file = resolve_config_file(run_config.safe_set)
        self.safe_set = SafeSet(robot, load_safe_set_config(safe_set_file))
        self.frame_id = self.cfg.frame_id or robot.base_frame
        self.geometry_judge = GeometryJudge(
            robot, self.safe_set.config,
            self_collision_pairs=self.safe_set.self_collision.pairs) \
            if self.cfg.geometry_judge else None
        self.goal_radius = run_config.sim.task.success_radius
        self.costly_boxes = run_config.sim.task.costly_boxes
        self.tally = SafetyTally(self.safe_set)
        self.reader = JointStateReader.for_robot(robot, self.cfg.position_tolerance,
                                                 max_stamp_age=self.cfg.max_stamp_age)
        self.reporter = StatusReporter(self, self.cfg.publish_period * 5, 'safety_monitor')
        self.estop_trigger = EstopTrigger(self.cfg.estop_margin)
        self.estop_client = self.create_client(Trigger, '/ssq/estop')
        self.trail: deque[tuple[np.ndarray, float]] = deque(maxlen=self.cfg.trail_length)
        self.goal: np.ndarray | None = None
        self.status_pub = self.create_publisher(DiagnosticArray, '/ssq/safety/status',
                                                LATCHED_QOS)
        self.marker_pub = self.create_publisher(MarkerArray, '/ssq/safety/markers', LATCHED_QOS)
        self.create_subscription(JointState, '/joint_states', self.on_joint_state, SENSOR_QOS)
        self.create_subscription(DiagnosticArray, '/ssq/sim/verdict', self.on_verdict,
                                 VERDICT_QOS)
        self.create_subscription(PointStamped, '/ssq/goal', self.on_goal, LATCHED_QOS)
        self.create_subscription(String, '/ssq/run_phase', self.on_phase, LATCHED_QOS)
        self.static_markers = self.zone_markers()
        self.started = str(time.time_ns())
        self.create_timer(self.cfg.publish_period, self.publish,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))

    # ------------------------------------------------------------------ inputs
    def on_joint_state(self, msg: JointState) -> None:
        stamp = stamp_seconds(msg.header.stamp)
        if self.reader.last_stamp is not None and stamp == self.reader.last_stamp:
            return  # the same state re-sent: judged once
        try:
            sample = self.reader.accept(msg.name, msg.position, msg.velocity, stamp,
                                        self.get_clock().now().nanoseconds * 1e-9)
        except JointStateError as exc:
            self.reporter.reject(exc.status, exc.reason)
            if exc.sample is None:
                return
            sample = exc.sample  # only its timing is wrong: the arm was there, so judge it
        unsafe, margin, constraint = self.tally.on_state(sample.positions, sample.velocities)
        if unsafe:
            self.get_logger().error(f'UNSAFE state: {constraint} margin {margin:.4f}')
            self.reporter.record([SafetyStatus.UNSAFE_STATE])
        if self.cfg.estop_on_violation:
            self.latch(self.estop_trigger.on_margin(margin, constraint, self.wall_time()))
        if self.geometry_judge is not None:
            verdict = self.geometry_judge.evaluate(sample.positions, sample.velocities)
            self.tally.on_geometry(not verdict.safe, verdict.min_margin, verdict.constraint)
            if not verdict.safe:
                self.get_logger().error(f'UNSAFE state (URDF geometry): {verdict.constraint} '
                                        f'margin {verdict.min_margin:.4f}')
                self.reporter.record([SafetyStatus.UNSAFE_STATE])
                if self.cfg.estop_on_violation:
                    self.latch(self.estop_trigger.request(
                        f'URDF geometry: {verdict.constraint} margin '
                        f'{verdict.min_margin:.4f}', self.wall_time()))
        ee = self.safe_set.kinematics.ee_position(sample.positions)
        self.trail.append((ee, margin))

    def on_verdict(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            try:
                unsafe = values['unsafe'] == '1'
                margin = float(values['min_margin'])
                constraint = values.get('constraint', '')
            except (KeyError, ValueError) as exc:
                self.get_logger().warning(f'refused referee verdict: {exc!r}',
                                          throttle_duration_sec=1.0)
                continue
            self.tally.on_referee(unsafe, margin, constraint)
            if unsafe:
                self.get_logger().error(f'referee: UNSAFE state, {constraint} margin '
                                        f'{margin:.4f}')
                self.reporter.record([SafetyStatus.UNSAFE_STATE])
                if self.cfg.estop_on_violation:
                    self.latch(self.estop_trigger.request(
                        f'referee: {constraint} margin {margin:.4f}', self.wall_time()))

    def wall_time(self) -> float:
        return Clock(clock_type=ClockType.STEADY_TIME).now().nanoseconds * 1e-9

    def latch(self, reason: str | None) -> None:
        """Call hardware_interface's e-stop for `reason` (None: nothing to do)."""
        if reason is None:
            return
        self.reporter.record([SafetyStatus.MONITOR_ESTOP])
        self.reporter.extra['estop_requests'] = str(self.estop_trigger.requests)
        self.reporter.extra['last_estop_reason'] = reason
        if not self.estop_client.service_is_ready():
            self.get_logger().error(f'e-stop needed ({reason}) but /ssq/estop is not available: '
                                    'no hardware_interface in this graph',
                                    throttle_duration_sec=2.0)
            return
        self.estop_client.call_async(Trigger.Request())
        self.get_logger().error(f'e-stop latched: {reason}; reset by hand with /ssq/estop_reset '
                                'once the cause is cleared')

    def on_goal(self, msg: PointStamped) -> None:
        goal = np.array([msg.point.x, msg.point.y, msg.point.z])
        if np.all(np.isfinite(goal)):
            self.goal = goal
        else:
            self.get_logger().warning('refused goal: not finite', throttle_duration_sec=1.0)

    def on_phase(self, msg: String) -> None:
        try:
            self.tally.phase = decode_phase(msg.data).phase
        except ValueError as exc:
            self.get_logger().error(f'refused run phase: {exc}')

    # ------------------------------------------------------------------ outputs
    def _marker(self, ns: str, marker_id: int, kind: int, rgba: tuple[float, ...]) -> Marker:
        marker = Marker(ns=ns, id=marker_id, type=kind, action=Marker.ADD, color=_color(rgba))
        marker.header.frame_id = self.frame_id
        marker.pose.orientation.w = 1.0
        return marker

    def zone_markers(self) -> list[Marker]:
        """Table, workspace box and keep-out zones of the safe set, and the task's costly
        regions (they never change)."""
        cfg, markers = self.safe_set.config, []
        if cfg.table_height is not None:
            table = self._marker('table', 0, Marker.CUBE, TABLE_COLOR)
            table.pose.position.z = cfg.table_height - 0.01
            table.scale.x = table.scale.y = 2.0
            table.scale.z = 0.02
            markers.append(table)
        if cfg.workspace is not None:
            box = self._marker('workspace', 0, Marker.LINE_LIST, WORKSPACE_COLOR)
            box.scale.x = 0.005
            low, high = np.array(cfg.workspace.lower), np.array(cfg.workspace.upper)
            corners = [np.where([i & 1, i & 2, i & 4], high, low) for i in range(8)]
            for a in range(8):
                for bit in (1, 2, 4):
                    if not a & bit:
                        box.points += [_point(corners[a]), _point(corners[a | bit])]
            markers.append(box)
        markers += [self._box_marker('keep_out', index, zone, ZONE_COLOR)
                    for index, zone in enumerate(cfg.keep_out_boxes)]
        for index, zone in enumerate(cfg.keep_out_spheres, start=len(cfg.keep_out_boxes)):
            ball = self._marker('keep_out', index, Marker.SPHERE, ZONE_COLOR)
            ball.pose.position = _point(zone.center)
            ball.scale.x = ball.scale.y = ball.scale.z = 2.0 * zone.radius
            ball.text = zone.name
            markers.append(ball)
        markers += [self._box_marker('costly', index, zone, COSTLY_COLOR)
                    for index, zone in enumerate(self.costly_boxes)]
        return markers

    def _box_marker(self, ns: str, index: int, zone, rgba: tuple[float, ...]) -> Marker:
        """A named axis-aligned box (a keep-out zone, a costly region) as a CUBE."""
        cube = self._marker(ns, index, Marker.CUBE, rgba)
        cube.pose.position = _point(zone.center)
        cube.scale.x, cube.scale.y, cube.scale.z = (2.0 * h for h in zone.half_extents)
        cube.text = zone.name
        return cube

    def dynamic_markers(self) -> list[Marker]:
        markers = []
        if self.goal is not None:
            goal = self._marker('goal', 0, Marker.SPHERE, GOAL_COLOR)
            goal.pose.position = _point(self.goal)
            goal.scale.x = goal.scale.y = goal.scale.z = 2.0 * self.goal_radius
            markers.append(goal)
        if len(self.trail) >= 2:
            trail = self._marker('ee_trail', 0, Marker.LINE_STRIP, (1.0, 1.0, 1.0, 1.0))
            trail.scale.x = 0.006
            trail.points = [_point(p) for p, _ in self.trail]
            trail.colors = [_color(margin_color(m, self.cfg.comfortable_margin))
                            for _, m in self.trail]
            markers.append(trail)
        values = self.tally.values()
        text = self._marker('status_text', 0, Marker.TEXT_VIEW_FACING,
                            (1.0, 1.0, 1.0, 1.0) if not self.tally.unsafe_total
                            else (1.0, 0.0, 1.0, 1.0))
        text.pose.position.z = 1.2
        text.scale.z = 0.05
        text.text = (f'unsafe states: {self.tally.unsafe_total} '
                     f'(S: {values["safe_set_unsafe_states"]}, referee: '
                     f'{values["referee_unsafe_states"]}); margin '
                     f'{self.tally.last_margin:.3f} ({self.tally.last_constraint})')
        markers.append(text)
        return markers

    def publish(self) -> None:
        values = self.tally.values()
        # Its counts start at 0 in every process: a reader that keeps totals across a restart
        # of the monitor (q_learner) adds them up when this changes.
        values['monitor_started'] = self.started
        unsafe = self.tally.unsafe_total
        status = DiagnosticStatus(
            level=DiagnosticStatus.ERROR if unsafe else DiagnosticStatus.OK,
            name='safety_monitor', hardware_id='safety_monitor',
            message=f'{unsafe} unsafe states' if unsafe else 'no unsafe state',
            values=[KeyValue(key=k, value=v) for k, v in values.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.status_pub.publish(msg)
        stamp = self.get_clock().now().to_msg()
        markers = self.static_markers + self.dynamic_markers()
        for marker in markers:
            marker.header.stamp = stamp
        self.marker_pub.publish(MarkerArray(markers=markers))


def main(args: list[str] | None = None) -> None:
    sys.exit(run_node(SafetyMonitor, args))
