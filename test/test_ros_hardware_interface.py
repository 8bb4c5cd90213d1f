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
from ros_helpers import (
    GENEROUS_WATCHDOG,
    JOINTS,
    ROBOT,
    STARTUP_TIMEOUT,
    ArmPeer,
    moving,
    wait_until,
)
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


def start_node(*params, state_timeout=TIMEOUT, command_timeout=TIMEOUT):
    args = [EXECUTABLE, '--ros-args', '-p', f'limits.velocity_scale:={VELOCITY_SCALE}',
            '-p', f'state_timeout:={state_timeout}', '-p', f'command_timeout:={command_timeout}',
            '-p', f'control_rate:={RATE}']
    for p in params:
        args += ['-p', p]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture
def launch(ros):
    procs, peers = [], []

    def make(*params, state_timeout=GENEROUS_WATCHDOG, command_timeout=GENEROUS_WATCHDOG,
             **peer_kwargs):
        """Start the node and wait until it accepts the peer's states. Both watchdogs are
        generous unless the test is about one: a test publisher starved by load (issue 16)
        must not trip a watchdog the test does not examine."""
        procs.append(start_node(*params, state_timeout=state_timeout,
                                command_timeout=command_timeout))
        peers.append(ArmPeer(**peer_kwargs))
        peer = peers[-1]
        wait_until(lambda: peer.status, STARTUP_TIMEOUT, 'a status from hardware_interface')
        # until the node has discovered the peer and accepts its states
        wait_until(lambda: 'NO_COMMAND_YET' in peer.status, STARTUP_TIMEOUT,
                   lambda: f'NO_COMMAND_YET in {peer.status}',
                   while_waiting=lambda: peer.run(0.02))
        return peer, procs[-1]

    yield make
    for peer in peers:
        peer.close()
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(2)
            proc.wait(30)


def run_until(peer, predicate, what, command=None, **kwargs):
    """Keep playing arm and graph (states, and `command` if given) until `predicate()`."""
    return wait_until(predicate, what=what,
                      while_waiting=lambda: peer.run(0.05, command, **kwargs))


def moves(peer, since=0):
    return lambda: any(moving(m) for m in peer.messages_since(since))


def last_close(peer, value, **kwargs):
    msgs = peer.messages_since(0)
    return bool(msgs) and np.allclose(msgs[-1].data, value, **kwargs)


def from_first_stop(peer, since):
    """What arrived on the controller topic from the first stop after `since` on."""
    msgs = peer.messages_since(since)
    first = next((i for i, m in enumerate(msgs) if not moving(m)), len(msgs))
    return msgs[first:]


def test_stale_joint_state_stops_within_timeout_plus_one_period(launch, tmp_path):
    record = tmp_path / 'servo.jsonl'
    peer, proc = launch(f'record_path:={record}', state_timeout=TIMEOUT)  # under test
    command = 0.5 * VMAX
    t0 = time.monotonic()
    peer.run(0.6, command)  # a stretch of motion (and states enough for the record)
    run_until(peer, lambda: sum(moving(m) for m in peer.messages_since(t0)) >= 30,
              '30 moving commands', command)
    # The driver goes silent; the graph keeps commanding.
    last_state = time.monotonic()

    def command_only():
        peer.command_pub.publish(Float64MultiArray(data=command.tolist()))
        time.sleep(0.01)

    wait_until(lambda: len(from_first_stop(peer, last_state)) >= 20, what='20 stops',
               while_waiting=command_only)
    wait_until(lambda: peer.status[-1] == 'STALE_STATE_STOP', what=lambda: peer.status[-1:])
    proc.send_signal(2)
    proc.wait(30)
    # The latency in the node's own clock (its servo record: every accepted state and every
    # sent command with the time the gate decided it for), not in the peer's: under load the
    # peer's arrival times carry the delays of two starved processes. The watchdog is checked
    # at every decision, so the stop must be the first decision after last state + timeout: at
    # most timeout + the interval between that decision and the one before it. That interval
    # is one period (10 ms) on an idle machine; under load it is what the machine delivered, so
    # the bound is relative to it (issue 16). Decision times, not send times: a send follows
    # the decision by the safe-set check and the publisher count, which vary under load.
    log = read_servo_log(str(record))
    assert np.all(np.isfinite(log.decide_times)) and np.all(log.decide_times <= log.send_times)
    last_accepted = log.times[-1]
    k = next(i for i, t in enumerate(log.decide_times)
             if t > last_accepted and not np.any(np.abs(log.commands[i]) > 1e-9))
    latency = log.decide_times[k] - last_accepted
    interval = log.decide_times[k] - log.decide_times[k - 1]
    print(f'stale state -> stop decided after {latency * 1e3:.1f} ms in the node\'s clock, '
          f'sent after {(log.send_times[k] - last_accepted) * 1e3:.1f} ms (timeout '
          f'{TIMEOUT * 1e3:.0f} ms + period {1e3 / RATE:.0f} ms; the interval to the previous '
          f'decision was {interval * 1e3:.1f} ms)')
    assert latency <= TIMEOUT + max(1 / RATE, interval) + 1e-6
    assert not np.any(np.abs(log.commands[k:]) > 1e-9), 'stopped for good'


def test_silent_graph_is_stopped_actively_and_repeatedly(launch):
    peer, _ = launch(command_timeout=TIMEOUT)  # under test
    run_until(peer, moves(peer), 'a moving command', 0.5 * VMAX)
    t0 = time.monotonic()
    # States continue, commands stop. The stop is re-sent every period, not once. (A command
    # still on its way under load may move the arm once more after a first stop, rightly: so
    # the stops are counted after the last moving message.)
    def after_last_move():
        msgs = peer.messages_since(t0)
        moved = [i for i, m in enumerate(msgs) if moving(m)]
        return msgs[moved[-1] + 1 if moved else 0:]

    run_until(peer, lambda: len(after_last_move()) >= 20, '20 stops after the last move')
    wait_until(lambda: peer.status[-1] == 'STALE_COMMAND_STOP', what=lambda: peer.status[-1:])


def test_estop_latches_until_reset_and_resumes_from_zero(launch):
    peer, _ = launch()
    command = 0.5 * VMAX
    run_until(peer, moves(peer), 'a moving command', command)
    assert peer.call(peer.estop).success
    t_estop = time.monotonic()
    peer.run(0.5, command)
    assert not any(moving(m) for m in peer.messages_since(t_estop))
    assert peer.status[-1] == 'ESTOPPED'

    def estop_errors():
        return [s for d in peer.diagnostics for s in d.status if s.message.startswith('ESTOPPED')]

    run_until(peer, estop_errors, 'ESTOPPED in /diagnostics')
    assert estop_errors()[-1].level == bytes([2])
    assert peer.call(peer.reset).success
    run_until(peer, lambda: peer.status[-1] != 'ESTOPPED', 'the reset in the status')
    # Button: pressing latches as well and blocks a reset until released.
    peer.button_pub.publish(Bool(data=True))
    run_until(peer, lambda: peer.status[-1] == 'ESTOPPED', 'the button latching the e-stop')
    refused = peer.call(peer.reset)
    assert not refused.success and 'button' in refused.message
    peer.button_pub.publish(Bool(data=False))
    replies = []

    def reset():
        replies.append(peer.call(peer.reset))
        return replies[-1].success

    run_until(peer, reset, 'a reset once the button is released')  # the release may lag
    assert all('button' in r.message for r in replies[:-1]), replies
    t_idle = time.monotonic()
    peer.run(0.3)  # no new command: nothing may move, the old command is not replayed
    assert not any(moving(m) for m in peer.messages_since(t_idle))
    t_resume = time.monotonic()
    run_until(peer, moves(peer, t_resume), 'a fresh command after reset moving the arm again',
              command)
    resumed = [m for m in peer.messages_since(t_resume) if moving(m)]
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

    def settled():
        msgs = peer.messages_since(t0)
        return msgs and np.isclose(np.max(np.abs(msgs[-1].data) / VMAX), 1.0)

    run_until(peer, settled, 'the command ramped up to the velocity limit', huge)
    forwarded = np.array([m.data for m in peer.messages_since(t0)])
    assert np.all(np.abs(forwarded) <= VMAX + 1e-9), 'never forwarded raw'
    settled = forwarded[-1]
    assert np.allclose(settled / np.linalg.norm(settled), huge / np.linalg.norm(huge), atol=1e-6)
    assert np.isclose(np.max(np.abs(settled) / VMAX), 1.0)


def test_unknown_joint_in_state_is_refused_and_the_arm_stays_stopped(launch):
    peer, _ = launch(state_timeout=TIMEOUT)  # under test
    names = list(JOINTS) + ['mystery_joint']

    def refused():
        return [kv.value for d in peer.diagnostics for s in d.status for kv in s.values
                if kv.key == 'last_refused' and 'mystery_joint' in kv.value]

    # Once the node has refused a state with the unknown joint, it has taken every valid state
    # the peer sent before (one publisher, in order): from then on the last valid state ages
    # out and refused states never refresh it. (Waited for, not timed: under load a valid state
    # may reach the node long after it was sent, issue 16.)
    run_until(peer, refused, 'mystery_joint refused in /diagnostics', 0.5 * VMAX,
              state_kwargs={'names': names})
    t0 = time.monotonic()
    run_until(peer, lambda: len(from_first_stop(peer, t0)) >= 20, '20 stops', 0.5 * VMAX,
              state_kwargs={'names': names})
    assert not any(moving(m) for m in from_first_stop(peer, t0))
    wait_until(lambda: peer.status[-1] == 'STALE_STATE_STOP', what=lambda: peer.status[-1:])


def test_position_controller_holds_and_resumes_from_measured_position(launch):
    peer, _ = launch('controller:=forward_position_controller',
                     controller_topic='/forward_position_controller/commands')
    command = 0.5 * VMAX
    target = ROBOT.home + command / RATE
    run_until(peer, lambda: last_close(peer, target, atol=1e-9),
              'home + one period of the command', command)
    assert peer.call(peer.estop).success
    peer.position = ROBOT.home + 0.05  # the arm was moved by hand while stopped
    run_until(peer, lambda: last_close(peer, peer.position), 'holding the measured position',
              command)
    t0 = time.monotonic()
    peer.run(0.3, command)
    held = np.array([m.data for m in peer.messages_since(t0)])
    assert np.allclose(held, peer.position)
    assert peer.call(peer.reset).success
    t1 = time.monotonic()
    run_until(peer, lambda: peer.messages_since(t1), 'a command after the reset', command)
    first = np.array(peer.messages_since(t1)[0].data)
    assert np.all(np.abs(first - peer.position) <= VMAX / RATE + 1e-9)


def test_trajectory_controller_gets_one_point_per_period(launch):
    peer, _ = launch('controller:=joint_trajectory_controller',
                     controller_topic='/joint_trajectory_controller/joint_trajectory',
                     msg_type=JointTrajectory)
    t0 = time.monotonic()
    run_until(peer, lambda: any(any(abs(v) > 1e-9 for v in m.points[0].velocities)
                                for m in peer.messages_since(t0)), 'a moving point', 0.5 * VMAX)
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
        out, _ = proc.communicate(timeout=STARTUP_TIMEOUT)
        assert proc.returncode == 2 and words in out, out


def test_sigterm_sends_a_final_stop(launch):
    peer, proc = launch()
    run_until(peer, moves(peer), 'a moving command', 0.5 * VMAX)
    t0 = time.monotonic()
    proc.terminate()
    assert proc.wait(30) == 0

    def final_stop():
        final = peer.messages_since(t0)
        return final and not moving(final[-1])

    wait_until(final_stop, what='the final stop')  # it may still be on its way


def test_an_arm_that_does_not_follow_the_commands_trips_the_tracking_check(launch, tmp_path):
    """The peer's arm never moves: with tracking on, the node latches TRACKING_FAULT_STOP,
    names the joint in /diagnostics, records what it sent and measured, and resumes only
    after /ssq/estop_reset."""
    record = tmp_path / 'servo.jsonl'
    peer, proc = launch('tracking.enabled:=true', f'record_path:={record}')
    command = 0.5 * VMAX
    t0 = time.monotonic()
    run_until(peer, lambda: 'TRACKING_FAULT_STOP' in peer.status, 'TRACKING_FAULT_STOP', command)
    t_fault = time.monotonic()
    peer.run(0.3, command)
    assert not any(moving(m) for m in peer.messages_since(t_fault))
    assert any(moving(m) for m in peer.messages_since(t0))  # it moved before the fault

    def faults():
        return [v.value for d in peer.diagnostics for s in d.status for v in s.values
                if v.key == 'tracking_fault']

    run_until(peer, faults, 'tracking_fault in /diagnostics', command)
    assert 'exceeds the bound' in faults()[-1]
    assert peer.call(peer.reset).success
    t_reset = time.monotonic()
    # a fresh command moves again (until the check trips anew)
    run_until(peer, moves(peer, t_reset), 'a moving command after the reset', command)
    proc.send_signal(2)
    proc.wait(30)
    log = read_servo_log(str(record))
    assert log.joints == tuple(JOINTS) and len(log.times) > 50 and len(log.send_times) > 50
