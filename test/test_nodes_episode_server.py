"""episode_server: on-robot episodes start from the measured joint state; only the goal is chosen.

The goal logic (ssq_ros.graph_logic.episode_goal) with the real task, then the node in-process
with its real callbacks, a helper node talking to it over real DDS as the arm's driver and as
safe_behavior (the reset services) would.
"""
import json
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from geometry_msgs.msg import PointStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.time import Time
from ros_helpers import EVENT_TIMEOUT
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger

from ssq_ros.graph_logic.episode_goal import EpisodeStartError, goal_from_measured_state
from ssq_ros.nodes.episode_server import EpisodeServer
from ssq_ros.nodes.interfaces import LATCHED_QOS, SENSOR_QOS
from ssq_ros.task.episodes import heldout_episode_seed, training_episode_seed
from ssq_ros.task.reach_avoid import goal_split_of_seed
from ssq_ros.task.setup import reach_avoid_task
from ssq_ros.training.config import load_run_config

TINY = str(Path(__file__).parent / 'data' / 'train_sim_tiny.yaml')
RUN = load_run_config(TINY)
TASK = reach_avoid_task(RUN)
REST = np.zeros(TASK.robot.dof)


def usable_goals(q: np.ndarray) -> np.ndarray:
    """The pool's goals valid from posture q (the task's own rule, restated for checking)."""
    pool, ee = TASK.goal_pool(), TASK.kinematics.ee_position(q)
    far = np.linalg.norm(pool - ee, axis=1) > 2 * TASK.config.success_radius
    return pool[far & TASK.crosses_zone(ee, pool)]


# A safe start from which many goals are valid, so that different seeds choose different ones.
_CANDIDATES = TASK.safe_postures(np.random.default_rng(0), TASK.config.start_margin, 256)
START = max(_CANDIDATES, key=lambda q: len(usable_goals(q)))


def test_goal_is_valid_from_the_measured_state_and_fixed_by_the_seed():
    valid = usable_goals(START)
    assert len(valid) >= 5
    chosen = [goal_from_measured_state(TASK, START, REST, heldout_episode_seed(i), 0.05, True)
              for i in range(6)]
    for goal, crosses in chosen:
        assert crosses and np.any(np.all(np.isclose(valid, goal), axis=1)), goal
    assert len({tuple(g) for g, _ in chosen}) >= 2  # the seed chooses
    again = goal_from_measured_state(TASK, START, REST, heldout_episode_seed(0), 0.05)
    np.testing.assert_array_equal(again.goal, chosen[0].goal)


def test_goal_refuses_states_that_cannot_start_an_episode():
    moving = REST.copy()
    moving[3] = 0.2
    with pytest.raises(EpisodeStartError, match="not at rest: joint 'ssq_joint4'"):
        goal_from_measured_state(TASK, START, moving, 1, 0.05)
    outside = START.copy()
    outside[0] = TASK.safe_set.position_upper[0] + 0.05
    with pytest.raises(EpisodeStartError, match='outside the safe set'):
        goal_from_measured_state(TASK, outside, REST, 1, 0.05)
    with pytest.raises(EpisodeStartError, match='NaN or inf'):
        goal_from_measured_state(TASK, np.full(TASK.robot.dof, np.nan), REST, 1, 0.05)
    with pytest.raises(EpisodeStartError, match='7 positions'):
        goal_from_measured_state(TASK, START[:6], REST, 1, 0.05)
    # From home no goal's straight path crosses a zone in this task: refused without fallback.
    assert len(usable_goals(TASK.robot.home)) == 0
    with pytest.raises(EpisodeStartError, match='no goal of the task is valid'):
        goal_from_measured_state(TASK, TASK.robot.home, REST, 1, 0.05)


def test_fallback_goal_from_where_no_crossing_goal_is_valid():
    home_hand = TASK.kinematics.ee_position(TASK.robot.home)
    for seed in (training_episode_seed(RUN.schedule.seed, 0), heldout_episode_seed(0)):
        goal, crosses = goal_from_measured_state(TASK, TASK.robot.home, REST, seed, 0.05, True)
        split = goal_split_of_seed(seed)
        assert not crosses and not TASK.crosses_zone(home_hand, goal)
        assert np.any(np.all(TASK.goals(split) == goal, axis=1))  # a goal of the seed's split
        assert np.linalg.norm(goal - home_hand) > 2 * TASK.config.success_radius
        again = goal_from_measured_state(TASK, TASK.robot.home, REST, seed, 0.05, True)
        np.testing.assert_array_equal(again.goal, goal)
    # The fallback relaxes the goal only: a state that cannot start is still refused.
    outside = TASK.robot.home.copy()
    outside[0] = TASK.safe_set.position_upper[0] + 0.05
    with pytest.raises(EpisodeStartError, match='outside the safe set'):
        goal_from_measured_state(TASK, outside, REST, 1, 0.05, True)


@pytest.fixture(scope='module')
def ros():
    rclpy.init()
    yield
    rclpy.shutdown()


class ArmAndBehavior:
    """The node under test plus a helper: the arm's /joint_states and the reset clients."""

    def __init__(self, node):
        self.node = node
        self.helper = rclpy.create_node('episode_peer')
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(node)
        self.executor.add_node(self.helper)
        self.states = self.helper.create_publisher(JointState, '/joint_states', SENSOR_QOS)
        self.goals: list[PointStamped] = []
        self.helper.create_subscription(PointStamped, '/ssq/goal', self.goals.append,
                                        LATCHED_QOS)
        self.clients = {name: self.helper.create_client(Trigger, f'/ssq/sim/{name}')
                        for name in ('reset', 'reset_heldout')}

    def spin(self, seconds, until):
        """Spin until `until()`; False after `seconds` (EVENT_TIMEOUT: generous, issue 16)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.02)
            if until():
                return True
        return False

    def publish(self, q, names=None, stamp=None) -> float:
        stamp = self.node.get_clock().now().nanoseconds * 1e-9 if stamp is None else stamp
        msg = JointState(name=list(names or TASK.robot.joint_names),
                         position=[float(v) for v in q], velocity=[0.0] * len(q))
        msg.header.stamp = Time(nanoseconds=round(stamp * 1e9)).to_msg()
        self.states.publish(msg)
        return stamp

    def call(self, name) -> Trigger.Response:
        client = self.clients[name]
        assert self.spin(EVENT_TIMEOUT, client.service_is_ready)
        future = client.call_async(Trigger.Request())
        assert self.spin(EVENT_TIMEOUT, future.done)
        return future.result()

    def close(self):
        self.executor.shutdown()
        self.helper.destroy_node()
        self.node.destroy_node()


def test_episode_server_serves_episodes_from_measured_states(ros):
    node = EpisodeServer(parameter_overrides=[Parameter('config_file', value=TINY),
                                              Parameter('max_stamp_age', value=0.5)])
    peer = ArmAndBehavior(node)
    try:
        answer = peer.call('reset')
        assert not answer.success and 'no valid joint state' in answer.message

        stamp = peer.publish(START)
        assert peer.spin(EVENT_TIMEOUT, lambda: node.latest is not None)
        answers = [peer.call('reset') for _ in range(2)]
        for episode, answer in enumerate(answers):
            assert answer.success, answer.message
            content = json.loads(answer.message)
            seed = training_episode_seed(RUN.schedule.seed, episode)
            assert content['episode'] == episode and content['seed'] == seed
            assert content['stamp'] == pytest.approx(stamp, abs=1e-6)
            assert content['crosses_zone'] is True
            np.testing.assert_allclose(
                content['goal'], goal_from_measured_state(TASK, START, REST, seed, 0.05).goal)
        assert peer.spin(EVENT_TIMEOUT, lambda: len(peer.goals) >= 2)
        published = peer.goals[-1]
        assert published.header.frame_id == 'ssq_link0'
        assert published.header.stamp.sec + published.header.stamp.nanosec * 1e-9 == \
            pytest.approx(stamp, abs=1e-6)
        np.testing.assert_allclose([published.point.x, published.point.y, published.point.z],
                                   json.loads(answers[-1].message)['goal'])

        # Held-out episodes: the held-out seeds, cycling over final_eval_episodes.
        heldout = [json.loads(peer.call('reset_heldout').message) for _ in range(3)]
        assert [h['episode'] for h in heldout] == [0, 1, 0]
        for h in heldout:
            assert h['seed'] == heldout_episode_seed(h['episode'])
            np.testing.assert_allclose(
                h['goal'], goal_from_measured_state(TASK, START, REST, h['seed'], 0.05).goal)

        # A malformed joint state is refused and counted; the last valid one stays.
        before = dict(node.reporter.counts())
        peer.publish(START, names=list(TASK.robot.joint_names[:6]) + ['elbow'])
        assert peer.spin(EVENT_TIMEOUT, lambda: node.reporter.counts().get('UNKNOWN_JOINT', 0) >
                         before.get('UNKNOWN_JOINT', 0))
        assert node.latest.stamp == pytest.approx(stamp, abs=1e-6)

        # The last valid state grows old: no episode from it, and the counter stays.
        time.sleep(0.6)
        answer = peer.call('reset')
        assert not answer.success and 'old' in answer.message, answer.message
        fresh = peer.publish(START)
        assert peer.spin(EVENT_TIMEOUT, lambda: node.latest.stamp > stamp)
        content = json.loads(peer.call('reset').message)
        assert content['episode'] == 2 and content['stamp'] == pytest.approx(fresh, abs=1e-6)

        # From home no crossing goal is valid: goal_fallback (default) still starts an episode.
        home = peer.publish(TASK.robot.home)
        assert peer.spin(EVENT_TIMEOUT, lambda: node.latest.stamp > fresh)
        content = json.loads(peer.call('reset').message)
        assert content['episode'] == 3 and content['crosses_zone'] is False
        np.testing.assert_allclose(content['goal'], goal_from_measured_state(
            TASK, TASK.robot.home, REST, content['seed'], 0.05, True).goal)

        # A state the task cannot start from is answered with the reason.
        moving = JointState(name=list(TASK.robot.joint_names),
                            position=[float(v) for v in START],
                            velocity=[0.0, 0.0, 0.0, 0.3, 0.0, 0.0, 0.0])
        moving.header.stamp = Time(nanoseconds=round((home + 0.01) * 1e9)).to_msg()
        peer.states.publish(moving)
        assert peer.spin(EVENT_TIMEOUT, lambda: node.latest.stamp > home)
        answer = peer.call('reset')
        assert not answer.success and 'not at rest' in answer.message, answer.message
    finally:
        peer.close()
