"""What the tests of the hardware_interface node share: a peer that plays the arm and the graph.

Imported by test_ros_hardware_interface.py (the peer publishes /joint_states itself) and
test_ros_hw_with_sim.py (mujoco_sim publishes them; the peer only commands and records).
"""
import signal
import subprocess
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray, String
from std_srvs.srv import Trigger

from ssq_ros.nodes.common import COMMAND_QOS, DIAGNOSTICS_QOS, LATCHED_QOS
from ssq_ros.paths import config_path
from ssq_ros.safety.robot import load_robot

ROBOT = load_robot(config_path('robot.yaml'))
JOINTS = ROBOT.joint_names

# How long a test waits for an event (a node process up, a log line, a topic message, a service)
# before it fails. Generous on purpose: node processes that import torch/mujoco/pinocchio took
# over 30 s to come up on a loaded 2-core machine (issue 16). Waiting costs nothing when the
# event comes; only a real failure waits this long.
STARTUP_TIMEOUT = 180.0
EVENT_TIMEOUT = 60.0  # an event a running node reacts with (a status, a reply, a message)
# A watchdog timeout the node under test cannot trip from a test publisher starved by load
# (the node's upper bound for state_timeout and command_timeout), for tests not about it.
GENEROUS_WATCHDOG = 1.0


def wait_until(predicate, timeout=EVENT_TIMEOUT, what='the condition', poll=0.02,
               while_waiting=None):
    """Wait until `predicate()` is true; returns its value, or fails naming `what` (a string or
    a callable giving one, called only on failure) after `timeout` s. `while_waiting()` runs
    between polls instead of sleeping (e.g. to keep publishing)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f'{what() if callable(what) else what} not within {timeout:g} s')
        if while_waiting is None:
            time.sleep(poll)
        else:
            while_waiting()


class ArmPeer:
    """Publishes joint states and commands, records controller messages with arrival times."""

    def __init__(self, controller_topic='/forward_velocity_controller/commands',
                 msg_type=Float64MultiArray):
        self.node = Node('arm_peer')
        self.received = []  # (monotonic time, message)
        self.status = []
        self.diagnostics = []
        self.lock = threading.Lock()
        self.state_pub = self.node.create_publisher(JointState, '/joint_states', 10)
        self.command_pub = self.node.create_publisher(Float64MultiArray, '/ssq/joint_command',
                                                      COMMAND_QOS)
        self.button_pub = self.node.create_publisher(Bool, '/ssq/estop_button', COMMAND_QOS)
        self.node.create_subscription(msg_type, controller_topic, self._on_controller, 100)
        self.node.create_subscription(String, '/hardware_interface/status',
                                      lambda m: self.status.append(m.data), LATCHED_QOS)
        self.node.create_subscription(DiagnosticArray, '/diagnostics',
                                      self.diagnostics.append, DIAGNOSTICS_QOS)
        self.estop = self.node.create_client(Trigger, '/ssq/estop')
        self.reset = self.node.create_client(Trigger, '/ssq/estop_reset')
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        self.names = list(JOINTS)
        self.position = ROBOT.home.copy()

    def _on_controller(self, msg):
        with self.lock:
            self.received.append((time.monotonic(), msg))

    def messages_since(self, t):
        with self.lock:
            return [m for s, m in self.received if s >= t]

    def publish_state(self, names=None, position=None):
        names = self.names if names is None else names
        q = dict(zip(JOINTS, self.position if position is None else position, strict=True))
        msg = JointState(name=list(names), position=[q.get(n, 0.0) for n in names],
                         velocity=[0.0] * len(names))
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.state_pub.publish(msg)

    def run(self, duration, command=None, states=True, state_kwargs=None):
        """Publish states at 200 Hz and `command` at 100 Hz for `duration` seconds."""
        end, i = time.monotonic() + duration, 0
        while time.monotonic() < end:
            if states:
                self.publish_state(**(state_kwargs or {}))
            if command is not None and i % 2 == 0:
                self.command_pub.publish(Float64MultiArray(data=list(map(float, command))))
            i += 1
            time.sleep(0.005)

    def call(self, client):
        assert client.wait_for_service(timeout_sec=STARTUP_TIMEOUT)
        future = client.call_async(Trigger.Request())
        wait_until(future.done, what=f'a reply from {client.srv_name}', poll=0.005)
        return future.result()

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()


def moving(msg):
    return any(abs(v) > 1e-9 for v in msg.data)


def stop_processes(procs):
    """SIGINT every node process still running (each sends its final stop), then wait; kill
    whatever has not exited after 30 s."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
