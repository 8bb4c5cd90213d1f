"""Malformed messages on every topic the graph's nodes subscribe to are refused with a logged,
counted reason and never produce a command.

Each node runs in-process with its real callbacks; a helper node talks to it over real DDS
(standing in for the simulator's reset service and the learner's acknowledgements where a node
needs them to act at all). Joint states: wrong lengths, NaN, unknown / duplicate / missing
joints, no velocities, implausible positions, stamps older than the last one or far from the
clock; reordered joints are accepted and put in robot.yaml order.
"""
import json
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PointStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.time import Time
from ros_helpers import EVENT_TIMEOUT
from sensor_msgs.msg import JointState
from std_msgs.msg import (
    Float64MultiArray,
    Int64,
    MultiArrayDimension,
    MultiArrayLayout,
    String,
    UInt8MultiArray,
)
from std_srvs.srv import Trigger

from ssq_ros.config import ConfigError
from ssq_ros.deploy.export import export_policy
from ssq_ros.nodes.common import COMMAND_QOS, DIAGNOSTICS_QOS, LATCHED_QOS, SENSOR_QOS
from ssq_ros.nodes.interfaces import EPISODE_QOS
from ssq_ros.nodes.mujoco_sim import MujocoSim
from ssq_ros.nodes.policy_executor import PolicyExecutor
from ssq_ros.nodes.q_learner import QLearner
from ssq_ros.nodes.safe_behavior import SafeBehavior
from ssq_ros.nodes.safety_monitor import SafetyMonitor
from ssq_ros.nodes.transition_msg import TRANSITION_QOS, command_message
from ssq_ros.task.setup import build_task_problem
from ssq_ros.training.config import load_run_config
from ssq_ros.training.learner import LearnerConfig, OnlineLearner

TINY = str(Path(__file__).parent / 'data' / 'train_sim_tiny.yaml')
JOINTS = [f'ssq_joint{i}' for i in range(1, 8)]
HOME = np.array([0.0, -0.3, 0.0, -2.0, 0.0, 1.8, 0.8])
GOAL = [0.5, 0.2, 0.3]


@pytest.fixture(scope='module')
def ros():
    rclpy.init()
    yield
    rclpy.shutdown()


class Harness:
    """The node under test plus a helper node, spun together."""

    def __init__(self, node):
        self.node = node
        self.helper = rclpy.create_node('malformed_helper')
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(node)
        self.executor.add_node(self.helper)
        self.commands: list[list[float]] = []
        for topic in ('/ssq/joint_command', '/forward_velocity_controller/commands'):
            self.helper.create_subscription(Float64MultiArray, topic,
                                            lambda m: self.commands.append(list(m.data)),
                                            COMMAND_QOS)
        self.states = self.helper.create_publisher(JointState, '/joint_states', SENSOR_QOS)

    def spin(self, seconds=0.3):
        """Spin for `seconds`: for checks that nothing happens."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.02)

    def wait(self, until, timeout=EVENT_TIMEOUT):
        """Spin until `until()`; False after `timeout` s (generous: a loaded machine may take
        seconds for what takes milliseconds idle, issue 16)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.02)
            if until():
                return True
        return False

    def close(self):
        self.executor.shutdown()
        self.helper.destroy_node()
        self.node.destroy_node()


def now_seconds(node) -> float:
    return node.get_clock().now().nanoseconds * 1e-9


def joint_state(names, positions, velocities, stamp) -> JointState:
    msg = JointState(name=list(names), position=[float(v) for v in positions],
                     velocity=[float(v) for v in velocities])
    msg.header.stamp = Time(nanoseconds=int(stamp * 1e9)).to_msg()
    return msg


def malformed_states(now: float, last: float):
    """(reason, message) pairs, each to be refused."""
    q, v = HOME, np.zeros(7)
    yield 'STATE_REJECTED_SIZE', joint_state(JOINTS, q[:6], v, now)
    yield 'STATE_REJECTED_SIZE', joint_state(JOINTS, q, v[:5], now)
    yield 'STATE_REJECTED_NONFINITE', joint_state(JOINTS, np.where(q == q[2], np.nan, q), v,
                                                  now)
    yield 'STATE_REJECTED_NONFINITE', joint_state(JOINTS, q, np.full(7, np.inf), now)
    yield 'UNKNOWN_JOINT', joint_state(JOINTS[:6] + ['elbow'], q, v, now)
    yield 'DUPLICATE_JOINT', joint_state(JOINTS[:6] + [JOINTS[0]], q, v, now)
    yield 'MISSING_JOINT', joint_state(JOINTS[:6], q[:6], v[:6], now)
    yield 'STATE_REJECTED_SIZE', joint_state(JOINTS, q, [], now)  # no velocities
    yield 'STATE_IMPLAUSIBLE', joint_state(JOINTS, q + np.eye(7)[0] * 9.0, v, now)
    yield 'STATE_OUT_OF_ORDER', joint_state(JOINTS, q, v, last - 0.01)
    yield 'STATE_STAMP_OFF_CLOCK', joint_state(JOINTS, q, v, now - 5.0)
    yield 'STATE_STAMP_OFF_CLOCK', joint_state(JOINTS, q, v, now + 5.0)


def check_states_refused(harness, reporter, last_stamp):
    """Every malformed state is counted under its reason and commands nothing."""
    sent = len(harness.commands)
    for reason, msg in malformed_states(now_seconds(harness.node), last_stamp):
        before = reporter.counts().get(reason, 0)
        harness.states.publish(msg)
        assert harness.wait(lambda r=reason, b=before: reporter.counts().get(r, 0) > b), \
            f'{reason} not refused: {reporter.counts()}'
    harness.spin(0.2)
    assert len(harness.commands) == sent


# ---------------------------------------------------------------------- safe_behavior
def test_safe_behavior_refuses_bad_states_phases_and_acks(ros):
    node = SafeBehavior(parameter_overrides=[Parameter('config_file', value=TINY)])
    harness = Harness(node)
    start = now_seconds(node)

    def answer(request, response):
        response.success = True
        response.message = json.dumps({'episode': 0, 'goal': GOAL, 'stamp': start})
        return response

    harness.helper.create_service(Trigger, '/ssq/sim/reset', answer)
    acks = harness.helper.create_publisher(Int64, '/ssq/learner/ack', COMMAND_QOS)
    phases = harness.helper.create_publisher(String, '/ssq/run_phase', LATCHED_QOS)
    try:
        acks.publish(Int64(data=-1))
        assert harness.wait(lambda: node.loop.active)
        # Reordered joints: accepted, in robot.yaml order, answered with a command.
        order = [3, 0, 6, 1, 5, 2, 4]
        harness.states.publish(joint_state([JOINTS[i] for i in order], HOME[order],
                                           np.zeros(7), now_seconds(node)))
        assert harness.wait(lambda: len(harness.commands) == 1)
        np.testing.assert_allclose(node.latest.positions, HOME)
        check_states_refused(harness, node.reporter, node.latest.stamp)
        # A fresh state, then the same (already answered) one again, as the lockstep simulator
        # re-sends a state it got no command for: the command decided for it again, no new
        # decision.
        harness.states.publish(joint_state(JOINTS, HOME, np.zeros(7), now_seconds(node)))
        assert harness.wait(lambda: len(harness.commands) == 2)
        held = len(node.held)
        harness.states.publish(joint_state(JOINTS, HOME, np.zeros(7), node.latest.stamp))
        assert harness.wait(lambda: len(harness.commands) == 3)
        harness.spin(0.3)
        assert len(harness.commands) == 3 and harness.commands[2] == harness.commands[1]
        assert len(node.held) == held and node.reporter.extra['commands_repeated'] == '1'
        # Another state under that stamp is no repeat: refused (out of order, or too old by
        # now on a loaded machine), nothing sent.
        def refusals():
            counts = node.reporter.counts()
            return counts.get('STATE_OUT_OF_ORDER', 0) + counts.get('STATE_STAMP_OFF_CLOCK', 0)
        before = refusals()
        harness.states.publish(joint_state(JOINTS, HOME + 0.01, np.zeros(7), node.latest.stamp))
        assert harness.wait(lambda: refusals() > before)
        harness.spin(0.2)
        assert len(harness.commands) == 3
        for text in ('', 'warp_speed', 'train policy_version=x'):
            phases.publish(String(data=text))
            harness.spin(0.2)
            assert node.phase.value == 'train'
        held = len(node.held)  # the fresh state's transition
        acks.publish(Int64(data=-7))
        harness.spin(0.2)
        assert node.learner_here and len(node.held) == held  # the refused ack changed nothing
        decisions = harness.helper.create_publisher(Float64MultiArray,
                                                    '/ssq/executor/decisions', TRANSITION_QOS)
        stamp_dim = MultiArrayDimension(label='stamp', size=1, stride=1)
        for dims, data in (([stamp_dim], [1.0]),  # no action
                           ([stamp_dim, MultiArrayDimension(label='action', size=1, stride=1)],
                            [1.0, 2.5]),  # not an index
                           ([stamp_dim, MultiArrayDimension(label='action', size=1, stride=1)],
                            [float('nan'), 2.0])):
            decisions.publish(Float64MultiArray(layout=MultiArrayLayout(dim=dims), data=data))
        harness.spin(0.5)
        assert node.executor_actions == {} and len(harness.commands) == 3
    finally:
        harness.close()


# ---------------------------------------------------------------------- mujoco_sim
def test_mujoco_sim_refuses_bad_commands_without_stepping(ros):
    node = MujocoSim(parameter_overrides=[Parameter('config_file', value=TINY),
                                          Parameter('relay_joint_command', value=True)])
    harness = Harness(node)
    commands = harness.helper.create_publisher(Float64MultiArray,
                                               '/forward_velocity_controller/commands',
                                               COMMAND_QOS)
    relay = harness.helper.create_publisher(Float64MultiArray, '/ssq/joint_command',
                                            COMMAND_QOS)
    try:
        harness.spin(0.5)
        for publisher, data, reason in (
                (commands, [0.1] * 6, 'COMMAND_REJECTED_SIZE'),
                (commands, [0.1] * 8, 'COMMAND_REJECTED_SIZE'),
                (commands, [], 'COMMAND_REJECTED_SIZE'),
                (relay, [0.1] * 6 + [float('nan')], 'COMMAND_REJECTED_NONFINITE'),
                (relay, [float('inf')] * 7, 'COMMAND_REJECTED_NONFINITE')):
            before = node.reporter.counts().get(reason, 0)
            sim_time = node.sim_time
            publisher.publish(Float64MultiArray(data=data))
            assert harness.wait(lambda r=reason, b=before:
                                node.reporter.counts().get(r, 0) > b)
            assert node.sim_time == sim_time  # nothing moved
        q_before, sim_time = node.env.joint_state()[0], node.sim_time
        relay_stamp = node.stamp.nanoseconds * 1e-9
        relay.publish(command_message(np.full(7, 0.2), relay_stamp))
        assert harness.wait(lambda: node.sim_time > sim_time)
        assert not np.allclose(node.env.joint_state()[0], q_before)
        # A command computed for an earlier state is never applied to the current one: a
        # second copy of the command just applied is dropped quietly (a commander answering a
        # re-sent state), one for any other state with a warning.
        sim_time = node.sim_time
        relay.publish(command_message(np.full(7, 0.2), relay_stamp))
        assert harness.wait(lambda: node.reporter.extra.get('repeated_commands') == '1')
        before = node.reporter.counts().get('COMMAND_FOR_OTHER_STATE', 0)
        relay.publish(command_message(np.full(7, 0.2), relay_stamp - node.period))
        assert harness.wait(lambda: node.reporter.counts().get('COMMAND_FOR_OTHER_STATE', 0)
                            > before)
        assert node.sim_time == sim_time
        relay.publish(command_message(np.full(7, 0.2), node.stamp.nanoseconds * 1e-9))
        assert harness.wait(lambda: node.sim_time > sim_time)
    finally:
        harness.close()


# ---------------------------------------------------------------------- q_learner
def test_q_learner_refuses_bad_transitions_and_episodes(ros, tmp_path):
    node = QLearner(parameter_overrides=[Parameter('config_file', value=TINY),
                                         Parameter('run_dir', value=str(tmp_path))])
    harness = Harness(node)
    transitions = harness.helper.create_publisher(Float64MultiArray, '/ssq/transitions',
                                                  TRANSITION_QOS)
    episodes = harness.helper.create_publisher(Float64MultiArray, '/ssq/episodes', EPISODE_QOS)
    safety = harness.helper.create_publisher(DiagnosticArray, '/ssq/safety/status',
                                             LATCHED_QOS)
    diagnostics = harness.helper.create_publisher(DiagnosticArray, '/diagnostics',
                                                  DIAGNOSTICS_QOS)
    acks = []
    harness.helper.create_subscription(Int64, '/ssq/learner/ack',
                                       lambda m: acks.append(m.data), COMMAND_QOS)
    obs_dim = node.spaces.obs_dim
    fields = [('seq', 1), ('phase', 1), ('episode', 1), ('obs', obs_dim), ('action', 1),
              ('reward', 1), ('next_obs', obs_dim), ('done', 1),
              ('next_support', node.spaces.action_size)]

    def message(values, dims=fields):
        return Float64MultiArray(
            layout=MultiArrayLayout(dim=[MultiArrayDimension(label=n, size=s, stride=s)
                                         for n, s in dims]),
            data=[float(v) for v in values])

    good = np.concatenate([[0, 0, 0], np.zeros(obs_dim), [1], [-1.0], np.zeros(obs_dim), [0],
                           np.full(node.spaces.action_size, 1.0 / node.spaces.action_size)])
    bad = [message(good[:-1]), message(good, fields[::-1]),
           message(np.where(np.arange(good.size) == 4, np.nan, good)),
           message(np.where(np.arange(good.size) == 3 + obs_dim, 99.0, good)),  # action
           message(np.where(np.arange(good.size) == good.size - 1, 5.0, good)),  # support
           message(good, fields[:-1] + [('next_support', node.spaces.action_size + 1)])]
    try:
        for msg in bad:
            refused = node.refused
            transitions.publish(msg)
            assert harness.wait(lambda r=refused: node.refused > r)
        # Unknown phase code, success not 0/1, NaN return, a value missing.
        for values in ([9, 1, -1.0, 1, 5], [0, 1, -1.0, 0.5, 5], [0, 1, np.nan, 1, 5],
                       [0, 1, -1.0, 1]):
            refused = node.refused
            episodes.publish(message(values, [(n, 1) for n in ('phase', 'episode', 'return',
                                                               'success', 'length')]))
            assert harness.wait(lambda r=refused: node.refused > r)
        assert node.run.steps == 0 and all(a == -1 for a in acks)
        # Garbage in the monitor's status or in /diagnostics changes nothing and crashes nothing.
        safety.publish(DiagnosticArray(status=[DiagnosticStatus(values=[
            KeyValue(key='unsafe_states_train', value='many')])]))
        diagnostics.publish(DiagnosticArray(status=[DiagnosticStatus(
            name='/policy_executor', values=[KeyValue(key='OK', value='-3')])]))
        harness.spin(0.5)
        assert node.run.counters.unsafe_train == 0 and node.run.executor_statuses == {}
        transitions.publish(message(good))
        assert harness.wait(lambda: node.run.steps == 1 and 0 in acks)
    finally:
        harness.close()


# ---------------------------------------------------------------------- policy_executor
def test_policy_executor_refuses_bad_states_goals_policies_and_phases(ros):
    node = PolicyExecutor(parameter_overrides=[Parameter('config_file', value=TINY)])
    harness = Harness(node)
    goals = harness.helper.create_publisher(PointStamped, '/ssq/goal', LATCHED_QOS)
    policies = harness.helper.create_publisher(UInt8MultiArray, '/ssq/policy', LATCHED_QOS)
    phases = harness.helper.create_publisher(String, '/ssq/run_phase', LATCHED_QOS)
    try:
        goal = PointStamped()
        goal.point.x, goal.point.y, goal.point.z = GOAL
        goals.publish(goal)
        assert harness.wait(lambda: node.goal is not None)
        harness.states.publish(joint_state(JOINTS, HOME, np.zeros(7), now_seconds(node)))
        assert harness.wait(lambda: len(harness.commands) == 1)
        assert node.reporter.counts().get('NO_POLICY_YET') == 1
        # A re-sent state (same stamp): the command decided for it again, no new decision.
        harness.states.publish(joint_state(JOINTS, HOME, np.zeros(7), node.latest.stamp))
        assert harness.wait(lambda: len(harness.commands) == 2)
        assert harness.commands[1] == harness.commands[0]
        assert node.reporter.counts().get('NO_POLICY_YET') == 1
        check_states_refused(harness, node.reporter, node.latest.stamp)
        bad_goal = PointStamped()
        bad_goal.point.x = float('nan')
        goals.publish(bad_goal)
        policies.publish(UInt8MultiArray(data=b'not a policy at all'))
        phases.publish(String(data='eval_policy policy_version=two'))
        harness.spin(0.5)
        assert node.goal is not None and np.all(np.isfinite(node.goal))
        assert node.shield.policy is None and node.phase is None
        assert len(harness.commands) == 2
    finally:
        harness.close()


def test_policy_executor_runs_the_named_export_of_the_run_and_refuses_bad_names(ros, tmp_path):
    spaces = build_task_problem(load_run_config(TINY)).spaces
    learner = OnlineLearner(spaces, LearnerConfig(), seed=0)
    (tmp_path / 'policy_selected.pt').write_bytes(export_policy(learner))
    node = PolicyExecutor(parameter_overrides=[
        Parameter('config_file', value=TINY), Parameter('run_dir', value=str(tmp_path)),
        Parameter('policy_file', value='policy_selected.pt')])
    try:
        assert node.shield.policy is not None and node.shield.policy.spaces == spaces
    finally:
        node.destroy_node()
    # no policy.pt there: the default starts without a policy (the train graph's case)
    node = PolicyExecutor(parameter_overrides=[
        Parameter('config_file', value=TINY), Parameter('run_dir', value=str(tmp_path))])
    try:
        assert node.shield.policy is None
    finally:
        node.destroy_node()
    for name, reason in (('policy_averaged.pt', 'does not exist'),
                         ('../policy_selected.pt', 'a file name in run_dir')):
        with pytest.raises(ConfigError, match=reason):
            PolicyExecutor(parameter_overrides=[
                Parameter('config_file', value=TINY), Parameter('run_dir', value=str(tmp_path)),
                Parameter('policy_file', value=name)])


# ---------------------------------------------------------------------- safety_monitor
def test_safety_monitor_refuses_bad_states_and_verdicts(ros):
    node = SafetyMonitor(parameter_overrides=[Parameter('config_file', value=TINY)])
    harness = Harness(node)
    verdicts = harness.helper.create_publisher(DiagnosticArray, '/ssq/sim/verdict',
                                               DIAGNOSTICS_QOS)
    try:
        harness.states.publish(joint_state(JOINTS, HOME, np.zeros(7), now_seconds(node)))
        assert harness.wait(lambda: node.tally.total('safe_set').states == 1)
        check_states_refused(harness, node.reporter, node.reader.last_stamp)
        # Refused for timing alone (out of order, two off the clock), the states are still
        # judged: the referee counts where the arm was, whatever its stamp said.
        assert node.tally.total('safe_set').states == 4
        verdicts.publish(DiagnosticArray(status=[DiagnosticStatus(values=[
            KeyValue(key='unsafe', value='0'), KeyValue(key='min_margin', value='wide')])]))
        harness.spin(0.5)
        assert node.tally.total('referee').states == 0
        assert node.tally.unsafe_total == 0
    finally:
        harness.close()


def test_safety_monitor_draws_the_tasks_costly_regions_apart_from_the_safe_set(ros):
    from ssq_ros.paths import config_path
    node = SafetyMonitor(parameter_overrides=[
        Parameter('config_file', value=str(config_path('tasks/costly.yaml')))])
    try:
        by_ns = {}
        for marker in node.zone_markers():
            by_ns.setdefault(marker.ns, []).append(marker)
        (tray,) = by_ns['costly']
        assert tray.text == 'tray' and tray.type == tray.CUBE
        assert (tray.pose.position.x, tray.scale.x, tray.scale.z) == pytest.approx(
            (0.47, 0.1, 0.4))
        assert 'keep_out' not in by_ns  # the costly task's safe set has no zone
    finally:
        node.destroy_node()
    plain = SafetyMonitor(parameter_overrides=[Parameter('config_file', value=TINY)])
    try:
        assert not any(m.ns == 'costly' for m in plain.zone_markers())
    finally:
        plain.destroy_node()


def test_mujoco_sim_takes_position_targets_for_a_position_controller(ros):
    node = MujocoSim(parameter_overrides=[
        Parameter('config_file', value=TINY),
        Parameter('controller', value='forward_position_controller')])
    harness = Harness(node)
    commands = harness.helper.create_publisher(Float64MultiArray,
                                               '/forward_position_controller/commands',
                                               COMMAND_QOS)
    try:
        harness.spin(0.5)
        q0 = node.env.joint_state()[0]
        target = q0 + np.array([0.02, -0.02, 0.0, 0.0, 0.0, 0.0, 0.0])
        for _ in range(20):  # hold the target for a second of simulated time
            sim_time = node.sim_time
            commands.publish(Float64MultiArray(data=target.tolist()))
            assert harness.wait(lambda t=sim_time: node.sim_time > t)
        np.testing.assert_allclose(node.env.joint_state()[0], target, atol=5e-3)
        sim_time = node.sim_time
        commands.publish(Float64MultiArray(data=[float('nan')] * 7))
        harness.spin(0.3)
        assert node.sim_time == sim_time
    finally:
        harness.close()


def test_mujoco_sim_refuses_a_controller_it_cannot_stand_in_for(ros):
    with pytest.raises(ConfigError, match='command_kind'):
        MujocoSim(parameter_overrides=[Parameter('config_file', value=TINY),
                                       Parameter('controller',
                                                 value='joint_trajectory_controller')])
