"""Only the configured commanders may move the simulated arm in training (train_sim has no
hardware_interface between the commanders and the simulator): while any other node publishes on
the simulator's command topics, every command is refused with UNKNOWN_COMMANDER_STOP and the
arm does not move; once that node is gone, the commanders' commands step it again.

The simulator runs in-process with its real callbacks; the commander and the intruder are real
nodes talking to it over DDS.
"""
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from ssq_ros.graph import GRAPHS, TRAIN_COMMANDERS
from ssq_ros.launcher import node_command
from ssq_ros.nodes.interfaces import (
    COMMAND_QOS,
    COMMAND_TOPIC,
    SENSOR_QOS,
    SIM_CONTROLLER_TOPIC,
)
from ssq_ros.nodes.mujoco_sim import MujocoSim
from ssq_ros.nodes.transition_msg import command_message

TINY = str(Path(__file__).parent / 'data' / 'train_sim_tiny.yaml')
LIMIT = 30.0  # s: discovery and callbacks on a loaded machine


@pytest.fixture(scope='module')
def ros():
    rclpy.init()
    yield
    rclpy.shutdown()


def test_train_sim_names_its_commanders():
    spec = next(n for n in GRAPHS['train_sim'].nodes if n.name == 'mujoco_sim')
    assert dict(spec.parameters)['commanders'] == TRAIN_COMMANDERS
    command = node_command(spec, {'config': '', 'headless': True, 'steps': 0,
                                  'run_dir': 'runs/x'}, Path('/bin'))
    assert 'commanders:=["safe_behavior", "policy_executor"]' in command
    commanders = {n.name for n in GRAPHS['train_sim'].nodes} & set(TRAIN_COMMANDERS)
    assert commanders == set(TRAIN_COMMANDERS)  # both exist under these names


def test_a_foreign_commander_stops_the_simulated_arm_until_it_is_gone(ros):
    sim = MujocoSim(parameter_overrides=[
        Parameter('config_file', value=TINY), Parameter('relay_joint_command', value=True),
        Parameter('commanders', value=['safe_behavior'])])
    commander = rclpy.create_node('safe_behavior')
    intruder = rclpy.create_node('intruder')
    executor = SingleThreadedExecutor()
    for node in (sim, commander, intruder):
        executor.add_node(node)

    def spin_until(condition) -> bool:
        deadline = time.monotonic() + LIMIT
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.02)
            if condition():
                return True
        return False

    def command(publisher) -> None:
        publisher.publish(command_message(np.full(7, 0.2), sim.stamp.nanoseconds * 1e-9))

    refusals = lambda: sim.reporter.counts().get('UNKNOWN_COMMANDER_STOP', 0)  # noqa: E731
    own = commander.create_publisher(Float64MultiArray, COMMAND_TOPIC, COMMAND_QOS)
    seen: set[float] = set()
    commander.create_subscription(
        JointState, '/joint_states', lambda msg: seen.add(
            msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9), SENSOR_QOS)
    try:
        assert spin_until(lambda: sim.count_publishers(COMMAND_TOPIC) == 1)
        sim_time = sim.sim_time
        command(own)
        assert spin_until(lambda: sim.sim_time > sim_time), 'the commander moves the arm'
        assert refusals() == 0

        foreign = intruder.create_publisher(Float64MultiArray, SIM_CONTROLLER_TOPIC,
                                            COMMAND_QOS)
        assert spin_until(lambda: sim.unknown_commanders() == ['intruder'])
        q_before, sim_time = sim.env.joint_state()[0].copy(), sim.sim_time
        for publisher in (foreign, own, foreign):
            before = refusals()
            command(publisher)
            assert spin_until(lambda b=before: refusals() > b), 'refused while it is there'
        assert sim.sim_time == sim_time
        assert np.array_equal(sim.env.joint_state()[0], q_before), 'the arm did not move'
        # Given no command it could take, the simulator re-sends the unchanged state (the cue
        # for a commander to send its answer to that state again).
        stamp = sim.stamp.nanoseconds * 1e-9
        seen.clear()
        assert spin_until(lambda: stamp in seen), 'the state is re-sent'

        intruder.destroy_publisher(foreign)
        assert spin_until(lambda: not sim.unknown_commanders())
        command(own)  # the answer to that same state, sent again
        assert spin_until(lambda: sim.sim_time > sim_time), 'moves again once it is gone'
    finally:
        executor.shutdown()
        for node in (intruder, commander, sim):
            node.destroy_node()
