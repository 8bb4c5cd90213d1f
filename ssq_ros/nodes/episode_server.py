"""episode_server: the episodes of on-robot training, served where mujoco_sim would serve them.

A real arm cannot be teleported to a start: an episode starts from the arm's measured state and
only its goal is chosen (`ssq_ros.graph_logic.episode_goal`, seeded like mujoco_sim's episodes).
This node never commands the arm.

In:  /joint_states (sensor_msgs/JointState, validated by JointStateReader).
Out: /ssq/goal (geometry_msgs/PointStamped, latched, stamped with the start state's stamp),
     ~/status and /diagnostics (refused joint states, counted by reason).
Services: /ssq/sim/reset (next training episode), /ssq/sim/reset_heldout (next held-out
     episode), std_srvs/Trigger, answering JSON {"episode", "seed", "goal", "stamp",
     "crosses_zone"} as mujoco_sim does; success=false with the reason when no fresh valid
     joint state has come or the measured state cannot start an episode (the episode counter
     does not advance). With goal_fallback (default) a state from which no goal crossing a
     keep-out zone is valid still starts an episode, toward any goal of the split.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

from geometry_msgs.msg import PointStamped
from rclpy.node import Node
from rclpy.time import Time
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger

from ssq_ros.config import spec
from ssq_ros.graph_logic.episode_goal import EpisodeStartError, goal_from_measured_state
from ssq_ros.nodes.common import (
    JointStateInput,
    NodeDiagnostics,
    StatusReporter,
    declare_config,
    run_node,
    stamp_seconds,
)
from ssq_ros.nodes.interfaces import LATCHED_QOS, SENSOR_QOS
from ssq_ros.safety.joint_state import JointSample, JointStateError, JointStateReader
from ssq_ros.task.episodes import heldout_episode_seed, training_episode_seed
from ssq_ros.task.setup import reach_avoid_task
from ssq_ros.training.config import load_run_config


@dataclass(frozen=True)
class EpisodeServerConfig(JointStateInput, NodeDiagnostics):
    """Parameters of the episode_server node (config/nodes.yaml). A reset also needs the newest
    valid joint state to be at most `max_stamp_age` old (0: any age)."""

    config_file: str = spec('', doc="experiment YAML (robot, safe set, task, seed); '' is the "
                            "package's train_sim.yaml")
    max_start_speed: float = spec(0.05, doc='an episode starts only with every joint slower '
                                  'than this [rad/s]', low=0.0, high=10.0)
    goal_fallback: bool = spec(True, doc='when no goal crossing a keep-out zone is valid from '
                               'where the arm stands, take any goal of the split (the answer '
                               'says "crosses_zone": false) instead of refusing the reset')


class EpisodeServer(Node):
    def __init__(self, **node_options: Any) -> None:
        super().__init__('episode_server', **node_options)
        self.cfg = declare_config(self, EpisodeServerConfig)
        run_config = load_run_config(self.cfg.config_file)
        self.seed = run_config.schedule.seed
        self.heldout_episodes = run_config.schedule.final_eval_episodes
        self.task = reach_avoid_task(run_config)
        # Built now (~0.3 s): built in the first reset, it stalled the callbacks long enough for
        # the measured joint state to go stale and the reset to be refused.
        self.task.goal_pool()
        self.reader = JointStateReader.for_robot(self.task.robot, self.cfg.position_tolerance,
                                                 max_stamp_age=self.cfg.max_stamp_age)
        self.reporter = StatusReporter(self, self.cfg.diagnostics_period, 'episode_server')
        self.latest: JointSample | None = None
        self.train_episode = 0
        self.heldout_episode = 0
        self.goal_pub = self.create_publisher(PointStamped, '/ssq/goal', LATCHED_QOS)
        self.create_subscription(JointState, '/joint_states', self.on_joint_state, SENSOR_QOS)
        self.create_service(Trigger, '/ssq/sim/reset', self.on_reset)
        self.create_service(Trigger, '/ssq/sim/reset_heldout', self.on_reset_heldout)

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def on_joint_state(self, msg: JointState) -> None:
        try:
            self.latest = self.reader.accept(msg.name, msg.position, msg.velocity,
                                             stamp_seconds(msg.header.stamp), self._now())
        except JointStateError as exc:
            self.reporter.reject(exc.status, exc.reason)

    def on_reset(self, request: Trigger.Request, response: Trigger.Response
                 ) -> Trigger.Response:
        episode = self.train_episode
        if self._start(response, episode, training_episode_seed(self.seed, episode)):
            self.train_episode += 1
        return response

    def on_reset_heldout(self, request: Trigger.Request, response: Trigger.Response
                         ) -> Trigger.Response:
        # The same held-out goals for the policy and for mu: the index cycles, as in mujoco_sim.
        episode = self.heldout_episode % self.heldout_episodes
        if self._start(response, episode, heldout_episode_seed(episode)):
            self.heldout_episode += 1
        return response

    def _start(self, response: Trigger.Response, episode: int, seed: int) -> bool:
        """Fill `response` for an episode starting at the newest joint state; True if it did."""
        sample, now = self.latest, self._now()
        response.success = False
        if sample is None:
            response.message = 'no valid joint state has arrived on /joint_states'
        elif self.cfg.max_stamp_age > 0 and now - sample.stamp > self.cfg.max_stamp_age:
            response.message = (f'newest valid joint state is {now - sample.stamp:.3f} s old '
                                f'(limit {self.cfg.max_stamp_age:g} s)')
        else:
            try:
                goal, crosses = goal_from_measured_state(
                    self.task, sample.positions, sample.velocities, seed,
                    self.cfg.max_start_speed, self.cfg.goal_fallback)
            except EpisodeStartError as exc:
                response.message = str(exc)
            else:
                response.success = True
        if not response.success:
            self.get_logger().warning(f'no episode: {response.message}', throttle_duration_sec=1.0)
            return False
        msg = PointStamped()
        msg.header.stamp = Time(nanoseconds=round(sample.stamp * 1e9)).to_msg()
        msg.header.frame_id = self.task.robot.base_frame
        msg.point.x, msg.point.y, msg.point.z = (float(v) for v in goal)
        self.goal_pub.publish(msg)
        response.message = json.dumps({'episode': episode, 'seed': seed,
                                       'goal': [float(v) for v in goal], 'stamp': sample.stamp,
                                       'crosses_zone': crosses})
        self.get_logger().info(f'episode {episode} (seed {seed}) from the measured state at '
                               f'{sample.stamp:.3f} s, goal {[round(float(v), 3) for v in goal]}'
                               f'{"" if crosses else " (fallback: crosses no zone)"}')
        return True


def main(args: list[str] | None = None) -> None:
    sys.exit(run_node(EpisodeServer, args))
