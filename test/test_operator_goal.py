"""Goals an operator clicks in RViz (Publish Point): checked like the task's own goals before the
executor uses them. Real pinocchio kinematics and the real task; the node test runs the
policy_executor in-process over real DDS."""
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from geometry_msgs.msg import PointStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState

from ssq_ros.graph_logic.episode_goal import OperatorGoalError, operator_goal
from ssq_ros.nodes.interfaces import LATCHED_QOS, SENSOR_QOS
from ssq_ros.nodes.policy_executor import PolicyExecutor
from ssq_ros.task.setup import reach_avoid_task
from ssq_ros.training.config import load_run_config

TINY = str(Path(__file__).parent / 'data' / 'train_sim_tiny.yaml')


@pytest.fixture(scope='module')
def task():
    return reach_avoid_task(load_run_config(''))


def test_a_goal_of_the_task_is_accepted_in_the_base_frame_and_in_a_link_frame(task):
    home = task.robot.home
    goal = task.goals()[0]
    np.testing.assert_array_equal(operator_goal(task, goal, '', home), goal)
    np.testing.assert_array_equal(operator_goal(task, goal, task.robot.base_frame, home), goal)
    # The same point expressed in the frame of link 2 at the measured posture.
    placement = task.kinematics.frame_placement(home, 'ssq_link2')
    local = placement.rotation.T @ (goal - placement.translation)
    np.testing.assert_allclose(operator_goal(task, local, 'ssq_link2', home), goal, atol=1e-12)


@pytest.mark.parametrize('point, frame, reason', [
    ([0.5, 0.2, 0.3], 'map', "not a link of the robot: set RViz's Fixed Frame to 'ssq_link0'"),
    ([2.0, 0.0, 0.3], '', 'outside the task\'s goal box'),
    ([0.5, 0.0, 0.15], '', 'unsafe: holding the hand'),  # the fixture's centre
    ([float('nan'), 0.0, 0.3], '', '3 finite coordinates'),
])
def test_bad_goals_are_refused_with_the_reason(task, point, frame, reason):
    with pytest.raises(OperatorGoalError) as info:
        operator_goal(task, np.array(point), frame, task.robot.home)
    assert reason in str(info.value), str(info.value)


def test_the_executor_takes_a_clicked_goal_and_refuses_an_unsafe_one():
    rclpy.init()
    node = PolicyExecutor(parameter_overrides=[Parameter('config_file', value=TINY),
                                               Parameter('operator_goals', value=True)])
    helper = rclpy.create_node('operator')
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(helper)
    published = []
    helper.create_subscription(PointStamped, '/ssq/goal', published.append, LATCHED_QOS)
    clicks = helper.create_publisher(PointStamped, '/clicked_point', 10)  # as RViz does
    states = helper.create_publisher(JointState, '/joint_states', SENSOR_QOS)

    def spin(until, seconds=5.0):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not until():
            executor.spin_once(timeout_sec=0.02)
        return until()

    def click(xyz, frame='ssq_link0'):
        msg = PointStamped()
        msg.header.frame_id = frame
        msg.point.x, msg.point.y, msg.point.z = (float(v) for v in xyz)
        clicks.publish(msg)

    try:
        task = node.problem.setup.task
        assert spin(lambda: clicks.get_subscription_count() >= 1)  # a click is not kept
        click(task.goals()[0])  # before any joint state: refused, nothing to check from
        assert spin(lambda: node.reporter.counts().get('GOAL_REFUSED', 0) == 1)
        state = JointState(name=list(task.robot.joint_names),
                           position=task.robot.home.tolist(), velocity=[0.0] * task.robot.dof)
        state.header.stamp = node.get_clock().now().to_msg()
        states.publish(state)
        assert spin(lambda: node.latest is not None)
        click(task.goals()[0])
        assert spin(lambda: published and node.goal is not None)
        np.testing.assert_allclose(node.goal, task.goals()[0])
        assert published[-1].header.frame_id == 'ssq_link0'
        click([0.5, 0.0, 0.15])  # inside the fixture
        assert spin(lambda: node.reporter.counts().get('GOAL_REFUSED', 0) == 2)
        np.testing.assert_allclose(node.goal, task.goals()[0])  # the last goal stays
        assert 'unsafe' in node.reporter._last_rejection
    finally:
        executor.shutdown()
        helper.destroy_node()
        node.destroy_node()
        rclpy.try_shutdown()
