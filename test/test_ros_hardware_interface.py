"""The hardware_interface node as a real process over real DDS.

A test peer stands in for the arm: it publishes /joint_states (as a driver would, in its own joint
order) and records what arrives on the controller topic, as ros2_control's forward controller
would receive it. It also plays the graph, publishing /ssq/joint_command.
"""
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from ros_helpers import JOINTS, ROBOT, ArmPeer, moving
from std_msgs.msg import Bool, Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from ssq_ros.safety.tracking import read_servo_log

VELOCITY_SCALE = 0.25
VMAX = ROBOT.velocity_limit * VELOCITY_SCALE
TIMEOUT, RATE = 0.1, 100.0
EXECUTABLE = str(Path(sys.executable).parent / 'hardware_interface')


@pytest.fixture(scope='module')
def ros():
    rclpy.init()
    yield
    rclpy.try_shutdown()


def start_node(*params):
    args = [EXECUTABLE, '--ros-args', '-p', f'limits.velocity_scale:={VELOCITY_SCALE}',
            '-p', f'state_timeout:={TIMEOUT}', '-p', f'command_timeout:={TIMEOUT}',
            '-p', f'control_rate:={RATE}']
    for p in params:
        args += ['-p', p]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture
def launch(ros):
    procs, peers = [], []

    def make(*params, **peer_kwargs):
        procs.append(start_node(*params))
        peers.append(ArmPeer(**peer_kwargs))
        peer = peers[-1]
        deadline = time.monotonic() + 15
        while not peer.status and time.monotonic() < deadline:  # the node is up
            time.sleep(0.02)
        assert peer.status, 'hardware_interface reported no status within 15 s'
        while 'NO_COMMAND_YET' not in peer.status and time.monotonic() < deadline:
            peer.run(0.02)  # until the node has discovered the peer and accepts its states
        assert 'NO_COMMAND_YET' in peer.status, peer.status
        return peer, procs[-1]

    yield make
    for peer in peers:
        peer.close()
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(2)
            proc.wait(10)


def test_stale_joint_state_stops_within_timeout_plus_one_period(launch):
    peer, _ = launch()
    command = 0.5 * VMAX
    peer.run(0.6, command)
    assert moving(peer.messages_since(0)[-1])
    # The driver goes silent; the graph keeps commanding.
    last_state = time.monotonic()
    end = last_state + 0.5
    while time.monotonic() < end:
        peer.command_pub.publish(Float64MultiArray(data=command.tolist()))
        time.sleep(0.01)
    with peer.lock:
        after = [(t, m) for t, m in peer.received if t >= last_state]
    first_stop = next(t for t, m in after if not moving(m))
    latency = first_stop - last_state
    print(f'stale state -> stop after {latency * 1e3:.1f} ms '
          f'(timeout {TIMEOUT * 1e3:.0f} ms + period {1e3 / RATE:.0f} ms)')
    # timeout + one control period, plus 50 ms for delivery and scheduling on a shared 2-core
    # machine (the number printed above is typically within a few ms of timeout + period)
    assert latency <= TIMEOUT + 1 / RATE + 0.05
    assert all(not moving(m) for t, m in after if t > first_stop)
    assert peer.status[-1] == 'STALE_STATE_STOP'


def test_silent_graph_is_stopped_actively_and_repeatedly(launch):
    peer, _ = launch()
    peer.run(0.5, 0.5 * VMAX)
    t0 = time.monotonic()
    peer.run(0.5)  # states continue, commands stop
    late = [m for m in peer.messages_since(t0 + TIMEOUT + 0.05)]
    assert len(late) >= 20, 'the stop must be re-sent every period, not once'
    assert not any(moving(m) for m in late)
    assert peer.status[-1] == 'STALE_COMMAND_STOP'


def test_estop_latches_until_reset_and_resumes_from_zero(launch):
    peer, _ = launch()
    command = 0.5 * VMAX
    peer.run(0.4, command)
    assert moving(peer.messages_since(0)[-1])
    assert peer.call(peer.estop).success
    t_estop = time.monotonic()
    peer.run(0.5, command)
    assert not any(moving(m) for m in peer.messages_since(t_estop))
    assert peer.status[-1] == 'ESTOPPED'
    errors = [s for d in peer.diagnostics for s in d.status if s.message.startswith('ESTOPPED')]
    assert errors and errors[-1].level == bytes([2])
    # Button: pressing latches as well and blocks a reset until released.
    peer.button_pub.publish(Bool(data=True))
    time.sleep(0.2)
    peer.run(0.1)
    refused = peer.call(peer.reset)
    assert not refused.success and 'button' in refused.message
    peer.button_pub.publish(Bool(data=False))
    time.sleep(0.2)
    peer.run(0.1)
    t_idle = time.monotonic()
    assert peer.call(peer.reset).success
    peer.run(0.3)  # no new command: nothing may move, the old command is not replayed
    assert not any(moving(m) for m in peer.messages_since(t_idle))
    t_resume = time.monotonic()
    peer.run(0.4, command)
    resumed = [m for m in peer.messages_since(t_resume) if moving(m)]
    assert resumed, 'a fresh command after reset moves the arm again'
    # Starting from zero velocity: the first moving command respects the acceleration limit.
    first = np.array(resumed[0].data)
    accel = ROBOT.acceleration_limit * 0.5
    assert np.all(np.abs(first) <= accel / RATE + 1e-9)


def test_commands_beyond_limits_are_clamped_and_names_reordered(launch):
    peer, _ = launch()
    peer.names = list(reversed(JOINTS))
    huge = 10 * ROBOT.velocity_limit
    huge[1] = -huge[1]
    t0 = time.monotonic()
    peer.run(1.0, huge)
    forwarded = np.array([m.data for m in peer.messages_since(t0)])
    assert np.all(np.abs(forwarded) <= VMAX + 1e-9), 'never forwarded raw'
    settled = forwarded[-1]
    assert np.allclose(settled / np.linalg.norm(settled), huge / np.linalg.norm(huge), atol=1e-6)
    assert np.isclose(np.max(np.abs(settled) / VMAX), 1.0)


def test_unknown_joint_in_state_is_refused_and_the_arm_stays_stopped(launch):
    peer, _ = launch()
    names = list(JOINTS) + ['mystery_joint']
    t0 = time.monotonic()
    peer.run(0.6, 0.5 * VMAX, state_kwargs={'names': names})
    # The last valid state (from before t0) ages out; refused states never refresh it.
    assert not any(moving(m) for m in peer.messages_since(t0 + TIMEOUT + 0.05))
    assert peer.status[-1] == 'STALE_STATE_STOP'
    refused = [kv for d in peer.diagnostics for s in d.status for kv in s.values
               if kv.key == 'last_refused']
    assert refused and 'mystery_joint' in refused[-1].value


def test_position_controller_holds_and_resumes_from_measured_position(launch):
    peer, _ = launch('controller:=forward_position_controller',
                     controller_topic='/forward_position_controller/commands')
    command = 0.5 * VMAX
    peer.run(0.4, command)
    last = np.array(peer.messages_since(0)[-1].data)
    assert np.allclose(last, ROBOT.home + command / RATE, atol=1e-9)
    assert peer.call(peer.estop).success
    peer.position = ROBOT.home + 0.05  # the arm was moved by hand while stopped
    t0 = time.monotonic()
    peer.run(0.3, command)
    held = np.array([m.data for m in peer.messages_since(t0 + 0.05)])
    assert np.allclose(held, peer.position)
    assert peer.call(peer.reset).success
    t1 = time.monotonic()
    peer.run(0.3, command)
    first = np.array(peer.messages_since(t1)[0].data)
    assert np.all(np.abs(first - peer.position) <= VMAX / RATE + 1e-9)


def test_trajectory_controller_gets_one_point_per_period(launch):
    peer, _ = launch('controller:=joint_trajectory_controller',
                     controller_topic='/joint_trajectory_controller/joint_trajectory',
                     msg_type=JointTrajectory)
    t0 = time.monotonic()
    peer.run(0.4, 0.5 * VMAX)
    msg = peer.messages_since(t0)[-1]
    assert list(msg.joint_names) == list(JOINTS) and len(msg.points) == 1
    point = msg.points[0]
    assert point.time_from_start.nanosec == int(1e9 / RATE)
    assert np.allclose(point.positions, ROBOT.home + np.array(point.velocities) / RATE)


def test_bad_parameter_stops_the_node_with_a_clear_message(ros):
    for param, words in [('control_rate:=0.0', 'control_rate'),
                         ('controller:=my_controller', 'controller_kind: must be set'),
                         ('robot_config:=/nonexistent.yaml', 'cannot read config file')]:
        proc = start_node(param)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 2 and words in out, out


def test_sigterm_sends_a_final_stop(launch):
    peer, proc = launch()
    peer.run(0.4, 0.5 * VMAX)
    t0 = time.monotonic()
    proc.terminate()
    assert proc.wait(10) == 0
    time.sleep(0.1)
    final = peer.messages_since(t0)
    assert final and not moving(final[-1])


def test_an_arm_that_does_not_follow_the_commands_trips_the_tracking_check(launch, tmp_path):
    """The peer's arm never moves: with tracking on, the node latches TRACKING_FAULT_STOP,
    names the joint in /diagnostics, records what it sent and measured, and resumes only
    after /ssq/estop_reset."""
    record = tmp_path / 'servo.jsonl'
    peer, proc = launch('tracking.enabled:=true', f'record_path:={record}')
    command = 0.5 * VMAX
    t0 = time.monotonic()
    peer.run(1.5, command)
    assert 'TRACKING_FAULT_STOP' in peer.status
    t_fault = time.monotonic()
    peer.run(0.3, command)
    assert not any(moving(m) for m in peer.messages_since(t_fault))
    assert any(moving(m) for m in peer.messages_since(t0))  # it moved before the fault
    faults = [v.value for d in peer.diagnostics for s in d.status for v in s.values
              if v.key == 'tracking_fault']
    assert faults and 'exceeds the bound' in faults[-1]
    assert peer.call(peer.reset).success
    t_reset = time.monotonic()
    peer.run(0.15, command)  # a fresh command moves again (until the check trips anew)
    assert any(moving(m) for m in peer.messages_since(t_reset))
    proc.send_signal(2)
    proc.wait(10)
    log = read_servo_log(str(record))
    assert log.joints == tuple(JOINTS) and len(log.times) > 50 and len(log.send_times) > 50
