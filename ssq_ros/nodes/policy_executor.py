"""policy_executor: the latest extracted policy acting on the arm behind the support shield.

In:  /joint_states (sensor_msgs/JointState, any joint order), /ssq/goal
     (geometry_msgs/PointStamped), /ssq/policy (std_msgs/UInt8MultiArray, latched: exported
     TorchScript bytes), /ssq/run_phase (std_msgs/String, when `act_only_in_eval`),
     /clicked_point (geometry_msgs/PointStamped, RViz's Publish Point tool, when
     `operator_goals`: checked by `graph_logic.episode_goal.operator_goal`, then the goal;
     refused ones counted as GOAL_REFUSED with the reason in /diagnostics).
Out: /ssq/joint_command (std_msgs/Float64MultiArray, joint velocities, robot.yaml order),
     /ssq/goal (latched; an accepted operator goal, for the markers),
     /ssq/executor/decisions (labelled Float64MultiArray: the state's stamp and the action),
     ~/status and /diagnostics (every command counted by its `SafetyStatus`: OK,
     ACTION_OUTSIDE_SUPPORT_FALLBACK, NO_POLICY_YET, NO_SAFE_ACTION_STOP, ...).

A new policy version replaces the running one between two states (no restart); a policy for
other spaces, or bytes that do not load, are refused and the running one stays. Without a
policy, mu's own draw is sent (NO_POLICY_YET). Each measured state gets one decision; a state
re-sent with the same stamp gets the command decided for it again (`LastCommand`), never an
older one. `run_dir/policy.pt` is loaded at start when it exists; `policy_file` names another
export of the run instead (ssq-select's choice, docs/training.md), which must then exist.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from geometry_msgs.msg import PointStamped
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, String, UInt8MultiArray

from ssq_ros.config import ConfigError, spec
from ssq_ros.deploy.executor import ShieldedExecutor
from ssq_ros.deploy.export import ExportedPolicy, PolicyExportError, load_exported_policy
from ssq_ros.graph_logic.episode_goal import OperatorGoalError, operator_goal
from ssq_ros.graph_logic.phases import RunPhase, decode_phase
from ssq_ros.graph_logic.shielded_step import shielded_command
from ssq_ros.nodes.common import (
    JointStateInput,
    NodeDiagnostics,
    StatusReporter,
    declare_config,
    run_node,
    stamp_seconds,
)
from ssq_ros.nodes.interfaces import (
    COMMAND_QOS,
    COMMAND_TOPIC,
    LATCHED_QOS,
    SENSOR_QOS,
    TRANSITION_QOS,
)
from ssq_ros.nodes.transition_msg import LastCommand, decision_message
from ssq_ros.safety.joint_state import JointSample, JointStateError, JointStateReader
from ssq_ros.safety.status import SafetyStatus
from ssq_ros.safety.support import CommandsInFlight
from ssq_ros.task.setup import build_task_problem
from ssq_ros.training.config import load_run_config

DEFAULT_POLICY_FILE = 'policy.pt'


@dataclass(frozen=True)
class PolicyExecutorConfig(JointStateInput, NodeDiagnostics):
    """Parameters of the policy_executor node (config/nodes.yaml)."""

    config_file: str = spec('', doc="experiment YAML (robot, safe set, actions, mu); '' is the "
                            "package's train_sim.yaml")
    run_dir: str = spec('', doc="run folder whose policy_file is loaded at start if present; "
                        "'' for none")
    policy_file: str = spec(DEFAULT_POLICY_FILE,
                            doc="file in run_dir loaded at start: policy.pt (the run's last "
                                "export, skipped if absent), or ssq-select's policy_selected.pt "
                                '/ policy_averaged.pt (required then)')
    act_only_in_eval: bool = spec(False, doc='act only in the eval_policy phase of a train_sim '
                                  'run, with the policy version it announces')
    operator_goals: bool = spec(False, doc="take goals from RViz's Publish Point tool "
                                '(/clicked_point), checked against the task before use')
    greedy: bool = spec(True, doc="the policy's most likely action inside the support, "
                        'instead of a draw')


class PolicyExecutor(Node):
    def __init__(self, **node_options: Any) -> None:
        super().__init__('policy_executor', **node_options)
        self.cfg = declare_config(self, PolicyExecutorConfig)
        run_config = load_run_config(self.cfg.config_file)
        self.problem = build_task_problem(run_config)
        self.shield = ShieldedExecutor(greedy=self.cfg.greedy, seed=run_config.schedule.seed)
        self.rng = np.random.default_rng(run_config.schedule.seed)
        robot = self.problem.setup.robot
        self.reader = JointStateReader.for_robot(robot, self.cfg.position_tolerance,
                                                 max_stamp_age=self.cfg.max_stamp_age)
        self.reporter = StatusReporter(self, self.cfg.diagnostics_period, 'policy_executor')
        self.goal: np.ndarray | None = None
        # The commands the arm follows until the next one acts (the support check's latency);
        # a new goal starts a new episode from rest.
        self.sent = CommandsInFlight(self.problem.setup.robot.dof,
                                     self.problem.setup.support.commands_in_flight)
        self.operator_goal: np.ndarray | None = None
        self.latest: JointSample | None = None
        self.answered_stamp = -1.0
        self.phase: RunPhase | None = None
        self.required_version = 0
        self.command_pub = self.create_publisher(Float64MultiArray, COMMAND_TOPIC,
                                                 COMMAND_QOS)
        self.last_command = LastCommand(self.command_pub, self.reporter.extra)
        self.decision_pub = self.create_publisher(Float64MultiArray, '/ssq/executor/decisions',
                                                  TRANSITION_QOS)
        self.create_subscription(JointState, '/joint_states', self.on_joint_state, SENSOR_QOS)
        self.create_subscription(PointStamped, '/ssq/goal', self.on_goal, LATCHED_QOS)
        self.create_subscription(UInt8MultiArray, '/ssq/policy', self.on_policy, LATCHED_QOS)
        self.create_subscription(String, '/ssq/run_phase', self.on_phase, LATCHED_QOS)
        if self.cfg.operator_goals:
            self.goal_pub = self.create_publisher(PointStamped, '/ssq/goal', LATCHED_QOS)
            # Volatile: RViz publishes clicks volatile, and an old click must not become a goal.
            self.create_subscription(PointStamped, '/clicked_point', self.on_clicked_point,
                                     COMMAND_QOS)
        if Path(self.cfg.policy_file).name != self.cfg.policy_file:
            raise ConfigError(f'parameter policy_file: a file name in run_dir, got '
                              f'{self.cfg.policy_file!r}')
        stored = Path(self.cfg.run_dir) / self.cfg.policy_file if self.cfg.run_dir else None
        if stored is not None and stored.is_file():
            self.install(stored, str(stored))
        elif stored is not None and self.cfg.policy_file != DEFAULT_POLICY_FILE:
            raise ConfigError(f'parameter policy_file: {stored} does not exist')

    @property
    def version(self) -> int:
        return 0 if self.shield.policy is None else self.shield.policy.policy_version

    # ------------------------------------------------------------------ inputs
    def install(self, source: bytes | Path, where: str) -> None:
        try:
            policy: ExportedPolicy = load_exported_policy(source)
            if policy.spaces != self.problem.spaces:
                raise PolicyExportError(f'policy for {policy.spaces}, this arm and task have '
                                        f'{self.problem.spaces}')
            self.shield.set_policy(policy)
        except (PolicyExportError, ValueError) as exc:
            self.get_logger().error(f'refused policy from {where}: {exc}')
            return
        self.reporter.extra['policy_version'] = str(policy.policy_version)
        self.get_logger().info(f'running policy v{policy.policy_version} from {where}')

    def on_policy(self, msg: UInt8MultiArray) -> None:
        self.install(bytes(msg.data), '/ssq/policy')
        self.try_act()

    def on_goal(self, msg: PointStamped) -> None:
        goal = np.array([msg.point.x, msg.point.y, msg.point.z])
        if not np.all(np.isfinite(goal)):
            self.get_logger().error('refused goal: not finite', throttle_duration_sec=1.0)
            return
        if self.operator_goal is not None and np.array_equal(goal, self.operator_goal):
            return  # its own operator goal coming back: the arm goes on, no new episode
        self.goal, self.operator_goal = goal, None
        self.sent.reset()  # an episode starts at rest

    def on_clicked_point(self, msg: PointStamped) -> None:
        point = np.array([msg.point.x, msg.point.y, msg.point.z])
        try:
            if self.latest is None:
                raise OperatorGoalError('no joint state yet: the goal is checked from where the '
                                        'arm is')
            goal = operator_goal(self.problem.setup.task, point, msg.header.frame_id,
                                 self.latest.positions)
        except OperatorGoalError as exc:
            self.reporter.reject(SafetyStatus.GOAL_REFUSED, str(exc))
            return
        self.goal = self.operator_goal = goal
        out = PointStamped()
        out.header.stamp = self.get_clock().now().to_msg()
        out.header.frame_id = self.problem.setup.robot.base_frame
        out.point.x, out.point.y, out.point.z = (float(v) for v in goal)
        self.goal_pub.publish(out)
        self.get_logger().info(f'operator goal {np.round(goal, 3).tolist()} accepted')

    def on_phase(self, msg: String) -> None:
        try:
            announcement = decode_phase(msg.data)
        except ValueError as exc:
            self.get_logger().error(f'refused run phase: {exc}')
            return
        self.phase, self.required_version = announcement.phase, announcement.policy_version
        self.try_act()

    def on_joint_state(self, msg: JointState) -> None:
        stamp = stamp_seconds(msg.header.stamp)
        now = self.get_clock().now().nanoseconds * 1e-9
        if self.reader.is_repeat(msg.name, msg.position, msg.velocity, stamp, now):
            # The lockstep simulator re-sent the state: it has no command for it (lost, or
            # refused before it knew this node's name); the same command again, or a first one.
            if not self.last_command.send_again(stamp):
                self.try_act()
            return
        try:
            self.latest = self.reader.accept(msg.name, msg.position, msg.velocity, stamp,
                                             self.get_clock().now().nanoseconds * 1e-9)
        except JointStateError as exc:
            self.reporter.reject(exc.status, exc.reason)
            return
        self.try_act()

    # ------------------------------------------------------------------ acting
    def should_act(self) -> bool:
        if not self.cfg.act_only_in_eval:
            return True
        return self.phase is RunPhase.EVAL_POLICY and self.version >= self.required_version

    def try_act(self) -> None:
        sample = self.latest
        if sample is None or sample.stamp <= self.answered_stamp or self.goal is None \
                or not self.should_act():
            return
        self.answered_stamp = sample.stamp
        out = shielded_command(self.problem, self.shield, sample.positions,
                               sample.velocities, self.goal, self.rng, self.sent.commands)
        self.reporter.record([] if out.status is SafetyStatus.OK else [out.status])
        if out.action is not None:  # first, so it is there before the state it leads to
            self.decision_pub.publish(decision_message(self.problem.spaces, sample.stamp,
                                                       out.action))
        self.last_command.send(out.command, sample.stamp)
        self.sent.push(out.command)


def main(args: list[str] | None = None) -> None:
    sys.exit(run_node(PolicyExecutor, args))
