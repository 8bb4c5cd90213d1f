"""A foreign node commands the arm in deploy_sim: the last line of defence must hold.

Real processes over real DDS: the deploy_sim graph's mujoco_sim (realtime physics, the referee
publishing its verdict of every control period), hardware_interface and safety_monitor, started
with the graph's own command lines (ssq_ros.graph). The test process plays a user's script: it
reads /joint_states and publishes well-formed joint velocities on /ssq/joint_command at 100 Hz
that move the hand at 0.2 m/s toward the fixture's centre (damped least squares on the arm's
Jacobian). No policy executor runs, so the script is the only commander.
"""
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from ros_helpers import (
    STARTUP_TIMEOUT,
    stop_processes,
    wait_until,
)
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, String

from ssq_ros.graph import COMMAND_TOPIC, GRAPHS
from ssq_ros.launcher import plan_graph
from ssq_ros.nodes.common import COMMAND_QOS, DIAGNOSTICS_QOS, LATCHED_QOS, SENSOR_QOS
from ssq_ros.paths import config_path
from ssq_ros.safety.kinematics import Kinematics
from ssq_ros.safety.robot import load_robot
from ssq_ros.safety.safe_set import load_safe_set_config

ROBOT = load_robot(config_path('robot.yaml'))
KINEMATICS = Kinematics(ROBOT)
FIXTURE = np.array(next(z.center for z in load_safe_set_config(
    config_path('safe_set.yaml')).keep_out_boxes if z.name == 'fixture'))
HAND_SPEED = 0.2  # m/s


class ForeignScript:
    """A user's node: steers the hand toward a target, and records what the graph reports."""

    def __init__(self, name='foreign_script'):
        self.node = Node(name)
        self.lock = threading.Lock()
        self.q = None
        self.verdicts = []  # (unsafe, min_margin, constraint) of the referee
        self.diagnostics = {}  # node name -> latest {key: value}, with 'message'
        self.hw_status = []
        self.command_pub = self.node.create_publisher(Float64MultiArray, COMMAND_TOPIC,
                                                      COMMAND_QOS)
        self.node.create_subscription(JointState, '/joint_states', self._on_state, SENSOR_QOS)
        self.node.create_subscription(DiagnosticArray, '/ssq/sim/verdict', self._on_verdict,
                                      DIAGNOSTICS_QOS)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics,
                                      DIAGNOSTICS_QOS)
        self.node.create_subscription(DiagnosticArray, '/ssq/safety/status',
                                      self._on_safety_status, LATCHED_QOS)
        self.safety_status = {}
        self.node.create_subscription(String, '/hardware_interface/status',
                                      lambda m: self.hw_status.append(m.data), LATCHED_QOS)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _on_state(self, msg):
        order = [list(msg.name).index(n) for n in ROBOT.joint_names]
        with self.lock:
            self.q = np.array(msg.position)[order]

    def _on_verdict(self, msg):
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            with self.lock:
                self.verdicts.append((values['unsafe'] == '1', float(values['min_margin']),
                                      values['constraint']))

    def _on_diagnostics(self, msg):
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            values['message'] = status.message
            with self.lock:
                self.diagnostics[status.name.lstrip('/')] = values

    def _on_safety_status(self, msg):
        with self.lock:
            self.safety_status = {kv.key: kv.value for kv in msg.status[0].values}

    def hw(self):
        with self.lock:
            return dict(self.diagnostics.get('hardware_interface', {}))

    def hand(self):
        with self.lock:
            return None if self.q is None else KINEMATICS.ee_position(self.q)

    def steer(self, duration, target=FIXTURE, until=None, limit=STARTUP_TIMEOUT):
        """Publish damped-least-squares velocities toward `target` at 100 Hz for `duration` s,
        and then on until `until()` if given (`limit` s in all): on a loaded machine the
        simulator delivers fewer periods in a second than idle (issue 16)."""
        start = time.monotonic()
        closest = np.inf
        while True:
            elapsed = time.monotonic() - start
            if elapsed >= limit or (elapsed >= duration and (until is None or until())):
                break
            with self.lock:
                q = None if self.q is None else self.q.copy()
            if q is not None:
                error = target - KINEMATICS.ee_position(q)
                closest = min(closest, float(np.linalg.norm(error)))
                jac = KINEMATICS.ee_jacobian(q)[:3]
                velocity = jac.T @ np.linalg.solve(jac @ jac.T + 1e-4 * np.eye(3),
                                                   HAND_SPEED * error / np.linalg.norm(error))
                self.command_pub.publish(Float64MultiArray(data=velocity.tolist()))
            time.sleep(0.01)
        return closest

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()


class Cell:
    """mujoco_sim, hardware_interface and safety_monitor of deploy_sim as processes."""

    NODES = ('mujoco_sim', 'hardware_interface', 'safety_monitor')

    def __init__(self, log_dir, monitor_params=()):
        commands = plan_graph(GRAPHS['deploy_sim'], {}, Path(sys.executable).parent).commands
        commands['safety_monitor'] = commands['safety_monitor'] + [
            a for p in monitor_params for a in ('-p', p)]
        # The interface keeps deploy_sim's watchdogs: these tests are about the deployment as
        # configured. Under load they stop the arm more often: the tests wait longer (issue 16).
        # Open (issue 16): on a loaded machine the monitor's S judge counted 144-156 states
        # beyond S's margins (referee: 0 unsafe) with these and with 1 s watchdogs alike.
        self.logs = {n: log_dir / f'{n}.log' for n in self.NODES}
        self.procs = {n: subprocess.Popen(commands[n], stdout=self.logs[n].open('w'),
                                          stderr=subprocess.STDOUT) for n in self.NODES}

    def log(self, name):
        return self.logs[name].read_text()[-3000:]

    def wait_ready(self, script, timeout=STARTUP_TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                assert proc.poll() is None, f'{name} exited: {self.log(name)}'
            ready = (script.hand() is not None and 'NO_COMMAND_YET' in script.hw_status
                     and script.node.count_subscribers(COMMAND_TOPIC) >= 1
                     and 'safety_monitor' in script.diagnostics)
            if ready:
                return
            time.sleep(0.05)
        raise AssertionError(f'cell not ready in {timeout} s: status {script.hw_status}\n'
                             + '\n'.join(self.log(n) for n in self.NODES))

    def close(self):
        stop_processes(self.procs.values())


@pytest.fixture(scope='module')
def ros():
    rclpy.init()
    yield
    rclpy.try_shutdown()


@pytest.fixture
def cell(ros, tmp_path):
    started = []

    def start(*monitor_params):
        script = ForeignScript()
        cell = Cell(tmp_path, monitor_params)
        started.append((cell, script))
        cell.wait_ready(script)
        return cell, script

    yield start
    for cell, script in started:
        script.close()
        cell.close()


def test_a_foreign_script_cannot_drive_the_hand_into_the_fixture(cell):
    cell, script = cell()
    start = script.hand()

    def judged_enough():
        with script.lock:
            return (len(script.verdicts) > 100
                    and int(script.safety_status.get('geometry_states', 0)) > 100)

    closest = script.steer(12.0, until=judged_enough)
    # the diagnostics of the braking (published once a second)
    wait_until(lambda: 'keep_out:fixture' in script.hw().get('last_safe_set_refusal', ''),
               what=lambda: f'the refusal in {script.hw()}')
    with script.lock:
        verdicts = list(script.verdicts)
        hw = dict(script.diagnostics.get('hardware_interface', {}))
        judged = dict(script.safety_status)
    unsafe = sum(v[0] for v in verdicts)
    worst = min(verdicts, key=lambda v: v[1])
    print(f'hand from {np.linalg.norm(start - FIXTURE):.3f} m to {closest:.3f} m of the fixture '
          f'centre; referee: {unsafe} unsafe of {len(verdicts)} periods, min margin '
          f'{worst[1]:.4f} m ({worst[2]}); hardware_interface: SAFE_SET_STOP '
          f'{hw.get("SAFE_SET_STOP", 0)}, SAFE_SET_SCALE {hw.get("SAFE_SET_SCALE", 0)}, check '
          f'p50 {hw.get("safe_set_check_p50_ms")} ms / p99 {hw.get("safe_set_check_p99_ms")} ms')
    assert len(verdicts) > 100
    assert unsafe == 0, worst
    # The script brought the arm to S's boundary at the fixture (its clearance plus how far the
    # spheres stand off the links: under 0.1 m of real distance) and was braked there, visibly.
    assert worst[2] == 'keep_out:fixture' and worst[1] < 0.1, worst
    assert int(hw.get('SAFE_SET_STOP', 0)) + int(hw.get('SAFE_SET_SCALE', 0)) > 0, hw
    assert 'keep_out:fixture' in hw.get('last_safe_set_refusal', ''), hw
    assert float(hw['safe_set_check_p99_ms']) > 0.0
    # The monitor's independent judges saw the same: S and the URDF geometry, 0 unsafe.
    print({k: judged.get(k) for k in ('safe_set_states', 'safe_set_unsafe_states',
                                      'geometry_states', 'geometry_unsafe_states',
                                      'geometry_min_margin', 'geometry_tightest')})
    assert int(judged['geometry_states']) > 100 and judged['geometry_unsafe_states'] == '0'
    assert judged['safe_set_unsafe_states'] == '0'


def test_random_well_formed_commands_never_leave_the_safe_set(cell):
    """A stream of random joint velocities, each held a random while, up to 4x the URDF
    limits: the referee counts no unsafe state and the interface reports why it refused."""
    cell, script = cell()
    rng = np.random.default_rng(17)
    start = time.monotonic()

    def done():  # 10 s, and 100 judged periods however slowly the simulator runs (issue 16)
        with script.lock:
            judged = len(script.verdicts) > 100
        elapsed = time.monotonic() - start
        return elapsed > STARTUP_TIMEOUT or (elapsed > 10.0 and judged)

    while not done():
        command = rng.uniform(-4.0, 4.0, ROBOT.dof) * ROBOT.velocity_limit
        hold_until = time.monotonic() + rng.uniform(0.1, 1.0)
        while time.monotonic() < hold_until and not done():
            script.command_pub.publish(Float64MultiArray(data=command.tolist()))
            time.sleep(0.01)
    # the diagnostics (published once a second) and the monitor's tally of the last states
    wait_until(lambda: int(script.hw().get('VELOCITY_LIMIT_SCALE', 0)) > 0,
               what=lambda: f'VELOCITY_LIMIT_SCALE in {script.hw()}')
    with script.lock:
        verdicts = list(script.verdicts)
        hw = dict(script.diagnostics.get('hardware_interface', {}))
        judged = dict(script.safety_status)
    worst = min(verdicts, key=lambda v: v[1])
    print(f'random stream: {sum(v[0] for v in verdicts)} unsafe of {len(verdicts)} periods, '
          f'referee min margin {worst[1]:.4f} ({worst[2]}); reactions '
          f'{ {k: v for k, v in hw.items() if k.isupper()} }')
    assert len(verdicts) > 100 and sum(v[0] for v in verdicts) == 0, worst
    assert judged['geometry_unsafe_states'] == '0' and judged['safe_set_unsafe_states'] == '0'
    assert int(hw.get('VELOCITY_LIMIT_SCALE', 0)) > 0  # the stream did push the limits


def test_the_monitor_latches_the_estop_near_the_boundary(cell):
    # A cell integrator's margin: stop the arm for good 5 cm before S's boundary.
    cell, script = cell('estop_margin:=0.05')
    script.steer(8.0, until=lambda: 'ESTOPPED' in script.hw_status)

    def monitor_diagnostics():
        with script.lock:
            return dict(script.diagnostics.get('safety_monitor', {}))

    wait_until(lambda: int(monitor_diagnostics().get('estop_requests', 0)) >= 1,
               what=lambda: f'estop_requests in {monitor_diagnostics()}')
    with script.lock:
        verdicts = list(script.verdicts)
        monitor = dict(script.diagnostics.get('safety_monitor', {}))
        hw_status = list(script.hw_status)
    print(f'monitor: {monitor.get("last_estop_reason")!r}; hardware_interface: {hw_status}')
    assert sum(v[0] for v in verdicts) == 0
    assert 'ESTOPPED' in hw_status
    assert int(monitor.get('estop_requests', 0)) >= 1, monitor
    assert 'within 0.05 of leaving S' in monitor.get('last_estop_reason', ''), monitor
    assert 'MONITOR_ESTOP' in monitor, monitor
    # Latched: further commands move nothing until a manual reset.
    before = script.hand()
    script.steer(1.0)
    assert np.linalg.norm(script.hand() - before) < 1e-3


def test_a_second_commander_stops_the_arm(cell):
    cell, script = cell()
    second = ForeignScript('second_script')
    try:
        # hardware_interface's graph has seen both publishers (its diagnostics say so)
        wait_until(lambda: script.hw().get('command_publishers') == '2',
                   what=lambda: f'command_publishers 2 in {script.hw()}')
        wait_until(lambda: 'MULTIPLE_COMMANDERS_STOP' in script.hw_status,
                   what=lambda: f'MULTIPLE_COMMANDERS_STOP in {script.hw_status}',
                   while_waiting=lambda: script.steer(0.05))
        before = script.hand()
        script.steer(2.0)
        moved = np.linalg.norm(script.hand() - before)
        with script.lock:
            hw = dict(script.diagnostics.get('hardware_interface', {}))
        print(f'two commanders: hand moved {moved:.4f} m; status {script.hw_status[-3:]}')
        assert 'MULTIPLE_COMMANDERS_STOP' in script.hw_status
        assert hw.get('command_publishers') == '2', hw
        assert moved < 1e-3
    finally:
        second.close()
    # One commander again: the script moves the arm (up, away from every zone).
    wait_until(lambda: script.hw().get('command_publishers') == '1',
               what=lambda: f'command_publishers 1 in {script.hw()}')
    before = script.hand()
    target = before + np.array([0.0, 0.0, 0.3])
    start = time.monotonic()
    # 1.5 s idle; on a loaded machine the simulator may need longer (issue 16)
    script.steer(1.5, target=target,
                 until=lambda: np.linalg.norm(script.hand() - before) > 0.05)
    moved = np.linalg.norm(script.hand() - before)
    print(f'one commander again: hand moved {moved:.3f} m in {time.monotonic() - start:.1f} s')
    assert moved > 0.05


def test_no_graph_runs_two_commanders_in_front_of_the_hardware_interface():
    """deploy graphs start the executor or the behavior controller on an arm, never both."""
    import itertools

    commanders = {'policy_executor', 'safe_behavior'}
    for graph in GRAPHS.values():
        if not any(n.executable == 'hardware_interface' for n in graph.nodes):
            continue
        flags = [a.name for a in graph.arguments if a.type == 'bool']
        for values in itertools.product(('true', 'false'), repeat=len(flags)):
            args = graph.resolve_args(dict(zip(flags, values, strict=True)))
            running = {n.executable for n in graph.nodes if n.enabled(args)} & commanders
            assert len(running) == 1, (graph.name, args, running)
