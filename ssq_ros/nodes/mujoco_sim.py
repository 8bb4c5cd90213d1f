"""mujoco_sim: the simulated arm, with the topics of a real arm under ros2_control.

Out: /joint_states (sensor_msgs/JointState), /ssq/goal (geometry_msgs/PointStamped, latched, the
     goal marker of the episode), /ssq/sim/verdict (diagnostic_msgs/DiagnosticArray: the
     referee's verdict of every control period), /clock (rosgraph_msgs/Clock, mode training),
     ~/status and /diagnostics.
In:  /<controller>/commands (std_msgs/Float64MultiArray, robot.yaml order: joint velocities, or
     position targets for a forward_position_controller, reached at most at the URDF speeds),
     and /ssq/joint_command too when `relay_joint_command` (no hardware_interface in the graph);
     services /ssq/sim/reset (next training episode) and /ssq/sim/reset_heldout (next held-out
     episode), std_srvs/Trigger, answering JSON {"episode", "seed", "goal", "stamp"}.

Modes. `training`: lockstep with sim time. Every valid command advances the physics by one
control period and publishes the new state and /clock at once, so the graph runs as fast as it
answers. A command that names the state it answers (`ssq_ros.nodes.transition_msg.
command_message`) is applied only to that state, never to a later one (after a reset, or after
another command); without commands simulated time stands still (the arm does nothing it was not
told),
and the current state and /clock are re-sent once no command came for `republish_period`
(same stamp) in case a best-effort sample or a command was lost, a command was refused (an
unknown commander), or a node (re)started and waits for its simulated time. The commander
answers a re-sent state with the command it computed for it; a second copy of a command that
was already applied answers the state before the step and is dropped quietly (counted).
`realtime`: a steady timer steps every control period with the newest command, or with zero
velocity once no valid command came for `command_timeout` (a stop, not a replay).
The physics, the episodes and the referee are `ssq_ros.sim` (ReachAvoidEnv); nothing else here.

Restarts (train_sim respawns a crashed simulator): with `run_dir`, training mode keeps its
simulated clock, episode counters and the referee's unsafe count in `run_dir/sim_state.json`
after every step and reset. A new simulator reads them back, moves its clock `RESTART_GAP` s
past the old one (stamps and /clock never go backwards, and every subscriber sees a break in
the joint-state stream: safe_behavior abandons the episode it was in, without a transition
across the two physics) and serves the next episode, never one served before.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PointStamped
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.time import Time
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from ssq_ros.config import ConfigError, spec
from ssq_ros.nodes.common import (
    NodeDiagnostics,
    RunBudget,
    StatusReporter,
    declare_config,
    run_node,
)
from ssq_ros.nodes.interfaces import (
    COMMAND_QOS,
    COMMAND_TOPIC,
    LATCHED_QOS,
    SENSOR_QOS,
    STAMP_TOLERANCE,
    STANDARD_CONTROLLERS,
    VERDICT_QOS,
)
from ssq_ros.nodes.transition_msg import answered_stamp
from ssq_ros.safety.status import SafetyStatus
from ssq_ros.sim.referee import RefereeVerdict
from ssq_ros.task.episodes import heldout_episode_seed, training_episode_seed
from ssq_ros.training.config import load_run_config
from ssq_ros.training.problem import build_problem


@dataclass(frozen=True)
class MujocoSimConfig(NodeDiagnostics, RunBudget):
    """Parameters of the mujoco_sim node (config/nodes.yaml)."""

    config_file: str = spec('', doc="experiment YAML (robot, safe set, sim, seed); '' is the "
                            "package's train_sim.yaml")
    headless: bool = spec(True, doc='no MuJoCo viewer window')
    mode: str = spec('training', choices=('training', 'realtime'),
                     doc='training: lockstep, one control period per command, publishes '
                         '/clock; realtime: steps on a steady timer')
    controller: str = spec('forward_velocity_controller', doc='the ros2_control controller '
                           'this simulator stands in for; commands arrive on '
                           '/<controller>/commands')
    command_kind: str = spec('', choices=('', 'velocity', 'position'),
                             doc="what the commands are: joint velocities or joint position "
                                 "targets; '' derives it from a standard controller name")
    relay_joint_command: bool = spec(False, doc='also take /ssq/joint_command (when no '
                                     'hardware_interface node is in the graph)')
    republish_period: float = spec(0.2, doc='training mode: re-send the unchanged state once '
                                   'no command came for this long, and again as long as none '
                                   'comes [s, wall clock]',
                                   low=0.01, high=10.0)
    command_timeout: float = spec(0.1, doc='realtime mode: stop when no valid command came for '
                                  'this long [s]', low=0.001, high=10.0)
    commanders: tuple[str, ...] = spec(
        (), doc='names of the nodes that may publish on the command topics; while any other '
                'node publishes there every command is refused (UNKNOWN_COMMANDER_STOP): in '
                'training mode the arm does not move, in realtime mode it is stopped. Empty: '
                'any node may command (as a bare ros2_control controller)')
    run_dir: str = spec('', doc='training mode: keep the simulated clock and the episode '
                        'counters in run_dir/sim_state.json, so a restarted simulator goes on '
                        "forward in time and never repeats an episode; '' keeps nothing")


# A restarted simulator's clock starts this far [s of simulated time] past its predecessor's
# last state: more than safe_behavior's stream_gap, so the break is seen as one.
RESTART_GAP = 5.0
STATE_FILE = 'sim_state.json'


class MujocoSim(Node):
    def __init__(self, **node_options: Any) -> None:
        super().__init__('mujoco_sim', **node_options)
        self.cfg = declare_config(self, MujocoSimConfig)
        run_config = load_run_config(self.cfg.config_file, self.cfg.steps or None)
        self.seed = run_config.schedule.seed
        self.heldout_episodes = run_config.schedule.final_eval_episodes
        self.problem = build_problem(run_config)
        self.env = self.problem.env
        self.joint_names = list(self.problem.setup.robot.joint_names)
        self.period = self.problem.setup.config.physics.control_period
        self.training = self.cfg.mode == 'training'
        self.command_kind = self.cfg.command_kind or STANDARD_CONTROLLERS.get(
            self.cfg.controller, '')
        if self.command_kind not in ('velocity', 'position'):
            raise ConfigError(f'command_kind: the simulator takes velocity or position '
                              f'commands; set it for controller {self.cfg.controller!r}')
        self.velocity_limit = self.problem.setup.robot.velocity_limit
        self.reporter = StatusReporter(self, self.cfg.diagnostics_period, 'mujoco_sim')
        self.unsafe_count = 0
        self.superseded_stamp: float | None = None
        self.stepped_from: float | None = None  # the stamp the last training step left
        self.last_state_wall = -float('inf')  # when the state was last published
        self.repeated_commands = 0
        self.ended_episode_commands = 0
        self.train_episode = 0
        self.heldout_episode = 0
        self.sim_time = 0.0
        self.stamp = self.get_clock().now()
        self.last_command = np.zeros(len(self.joint_names))
        self.last_command_time = -np.inf
        self.state_file = Path(self.cfg.run_dir) / STATE_FILE \
            if self.training and self.cfg.run_dir else None
        restored = self._restore()

        self.state_pub = self.create_publisher(JointState, '/joint_states', SENSOR_QOS)
        self.goal_pub = self.create_publisher(PointStamped, '/ssq/goal', LATCHED_QOS)
        self.verdict_pub = self.create_publisher(DiagnosticArray, '/ssq/sim/verdict',
                                                 VERDICT_QOS)
        self.clock_pub = self.create_publisher(ClockMsg, '/clock', SENSOR_QOS) \
            if self.training else None
        topics = [f'/{self.cfg.controller}/commands']
        self.create_subscription(Float64MultiArray, topics[0],
                                 lambda msg: self.on_command(msg, self.command_kind),
                                 COMMAND_QOS)
        if self.cfg.relay_joint_command:  # the graph's own topic: always joint velocities
            topics.append(COMMAND_TOPIC)
            self.create_subscription(Float64MultiArray, topics[1],
                                     lambda msg: self.on_command(msg, 'velocity'), COMMAND_QOS)
        self.command_topics = tuple(topics)
        self.create_service(Trigger, '/ssq/sim/reset', self.on_reset)
        self.create_service(Trigger, '/ssq/sim/reset_heldout', self.on_reset_heldout)
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        if self.training:
            self.create_timer(self.cfg.republish_period / 2, self.republish, clock=steady)
        else:
            self.create_timer(self.period, self.on_realtime_tick, clock=steady)
        self.viewer = None if self.cfg.headless else self._open_viewer()
        # The start state (the next training episode's): /ssq/sim/reset serves that episode
        # when the behavior asks for it.
        self.reset(training_episode_seed(self.seed, self.train_episode))
        self.get_logger().info(
            f'{self.cfg.mode} mode, control period {self.period:g} s, {self.command_kind} '
            f'commands on {", ".join(topics)}')
        if restored:
            self.get_logger().warning(
                f'restarted: simulated clock {self.sim_time:.3f} s ({RESTART_GAP:g} s past the '
                f'last state in {self.state_file}), next training episode {self.train_episode}, '
                f'held-out {self.heldout_episode}, referee unsafe count {self.unsafe_count}')

    # ------------------------------------------------------------------ restarts
    def _restore(self) -> bool:
        """Clock, counters and unsafe count of a predecessor in run_dir, if there is one."""
        if self.state_file is None or not self.state_file.is_file():
            return False
        try:
            state = json.loads(self.state_file.read_text())
            sim_time, train, heldout, unsafe = (float(state['sim_time']),
                                                int(state['train_episode']),
                                                int(state['heldout_episode']),
                                                int(state['unsafe_count']))
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f'run_dir: {self.state_file} is not a simulator state ({exc}); '
                              'remove it to start the clock from 0') from None
        if not (np.isfinite(sim_time) and sim_time >= 0 and min(train, heldout, unsafe) >= 0):
            raise ConfigError(f'run_dir: {self.state_file} holds invalid values: {state}')
        self.sim_time = sim_time + RESTART_GAP
        self.train_episode, self.heldout_episode, self.unsafe_count = train, heldout, unsafe
        return True

    def _save(self) -> None:
        """The clock and counters, replaced atomically (rename): a SIGKILL leaves the old file
        or the new one. No fsync: this survives a killed process, not a power loss."""
        if self.state_file is None:
            return
        text = json.dumps({'sim_time': self.sim_time, 'train_episode': self.train_episode,
                           'heldout_episode': self.heldout_episode,
                           'unsafe_count': self.unsafe_count})
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_name(f'.{STATE_FILE}.{os.getpid()}.tmp')
        tmp.write_text(text)
        os.replace(tmp, self.state_file)

    def _open_viewer(self) -> Any:
        try:
            import mujoco.viewer
            return mujoco.viewer.launch_passive(self.env.sim.model, self.env.sim.data)
        except Exception as exc:  # no display, no GL: the simulation runs without a window
            self.get_logger().warning(f'no MuJoCo viewer ({exc}); running headless')
            return None

    # ------------------------------------------------------------------ time and publishing
    def _advance_stamp(self) -> None:
        if self.training:
            self.sim_time += self.period
            nanoseconds = int(round(self.sim_time * 1e9))
            self.stamp = Time(nanoseconds=nanoseconds)
            self.clock_pub.publish(ClockMsg(clock=self.stamp.to_msg()))
        else:
            self.stamp = self.get_clock().now()

    def republish(self) -> None:
        """Training mode, while no command comes: the clock and the state again, so that a
        node that (re)started meanwhile gets its simulated time and something to answer."""
        if time.monotonic() - self.last_state_wall < self.cfg.republish_period:
            return
        self.clock_pub.publish(ClockMsg(clock=self.stamp.to_msg()))
        self.publish_state()

    def publish_state(self) -> None:
        q, qdot = self.env.joint_state()
        msg = JointState(name=self.joint_names, position=q.tolist(), velocity=qdot.tolist())
        msg.header.stamp = self.stamp.to_msg()
        self.state_pub.publish(msg)
        self.last_state_wall = time.monotonic()

    def publish_verdict(self, verdict: RefereeVerdict) -> None:
        self.unsafe_count += int(verdict.unsafe)
        level = DiagnosticStatus.ERROR if verdict.unsafe else DiagnosticStatus.OK
        status = DiagnosticStatus(
            level=level, name='mujoco_sim/referee', hardware_id='mujoco_sim',
            message=f'{"UNSAFE" if verdict.unsafe else "safe"}: tightest {verdict.constraint}',
            values=[KeyValue(key='unsafe', value=str(int(verdict.unsafe))),
                    KeyValue(key='min_margin', value=repr(verdict.min_margin)),
                    KeyValue(key='constraint', value=verdict.constraint),
                    KeyValue(key='unsafe_count', value=str(self.unsafe_count))])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.stamp.to_msg()
        self.verdict_pub.publish(msg)
        if verdict.unsafe:
            self.reporter.record([SafetyStatus.UNSAFE_STATE])

    # ------------------------------------------------------------------ episodes
    def reset(self, seed: int) -> dict:
        # The last state of the ended episode: an actor that does not know the episode ended
        # (the policy executor, which does not score episodes) may still answer it.
        self.superseded_stamp = self.stamp.nanoseconds * 1e-9
        _, info = self.env.reset(seed=seed)
        self.last_command = np.zeros(len(self.joint_names))
        self._advance_stamp()
        goal = PointStamped()
        goal.header.stamp = self.stamp.to_msg()
        goal.header.frame_id = self.problem.setup.robot.base_frame
        goal.point.x, goal.point.y, goal.point.z = (float(v) for v in self.env.goal)
        self.goal_pub.publish(goal)
        self.publish_verdict(RefereeVerdict(info['unsafe'], info['min_margin'],
                                            info['constraint']))
        self.publish_state()
        self._save()
        return {'seed': seed, 'goal': [float(v) for v in self.env.goal],
                'stamp': self.stamp.nanoseconds * 1e-9}

    def on_reset(self, request: Trigger.Request, response: Trigger.Response
                 ) -> Trigger.Response:
        episode = self.train_episode
        self.train_episode += 1  # counted before the reset saves it
        return self._answer(response, episode,
                            self.reset(training_episode_seed(self.seed, episode)))

    def on_reset_heldout(self, request: Trigger.Request, response: Trigger.Response
                         ) -> Trigger.Response:
        # The same held-out goals for the policy and for mu: the index cycles.
        episode = self.heldout_episode % self.heldout_episodes
        self.heldout_episode += 1
        return self._answer(response, episode, self.reset(heldout_episode_seed(episode)))

    def _answer(self, response: Trigger.Response, episode: int, info: dict
                ) -> Trigger.Response:
        response.success = True
        response.message = json.dumps({'episode': episode, **info})
        return response

    # ------------------------------------------------------------------ commands and stepping
    def on_command(self, msg: Float64MultiArray, kind: str) -> None:
        command = np.asarray(msg.data, dtype=float)
        if command.shape != (len(self.joint_names),):
            self.reporter.reject(SafetyStatus.COMMAND_REJECTED_SIZE,
                                 f'{command.size} values for {len(self.joint_names)} joints')
            return
        if not np.all(np.isfinite(command)):
            self.reporter.reject(SafetyStatus.COMMAND_REJECTED_NONFINITE,
                                 'command contains NaN or inf')
            return
        intruders = self.unknown_commanders()
        if intruders:
            # Someone else steers the arm: nobody checked what it sends against the safe set.
            self.reporter.reject(SafetyStatus.UNKNOWN_COMMANDER_STOP,
                                 f'{", ".join(intruders)} publish(es) on '
                                 f'{", ".join(self.command_topics)}; commands refused')
            self.last_command = np.zeros(len(self.joint_names))
            return
        answers = answered_stamp(msg)
        if self.training and answers is not None and self.stepped_from is not None and \
                abs(answers - self.stepped_from) <= STAMP_TOLERANCE:
            # A second copy of the command just applied (the commander answered a re-sent
            # state whose first answer was only late): dropped without a warning, counted.
            self.repeated_commands += 1
            self.reporter.extra['repeated_commands'] = str(self.repeated_commands)
            return
        if self.training and answers is not None and self.superseded_stamp is not None and \
                abs(answers - self.superseded_stamp) <= STAMP_TOLERANCE:
            # The answer to an ended episode's last state, arriving after the reset: expected
            # (one per evaluation episode at most), dropped without a warning, counted.
            self.ended_episode_commands += 1
            self.reporter.extra['commands_for_ended_episodes'] = str(
                self.ended_episode_commands)
            return
        if self.training and answers is not None and \
                abs(answers - self.stamp.nanoseconds * 1e-9) > STAMP_TOLERANCE:
            # Computed for another state (before a reset, or overtaken by another command):
            # applying it here would act on a state nobody checked it for.
            self.reporter.reject(SafetyStatus.COMMAND_FOR_OTHER_STATE,
                                 f'command answers the state at {answers:.3f} s, the arm is at '
                                 f'{self.stamp.nanoseconds * 1e-9:.3f} s; dropped')
            return
        if kind == 'position':
            # A position target is reached as fast as the joints may move in one period.
            command = np.clip((command - self.env.sim.q) / self.period, -self.velocity_limit,
                              self.velocity_limit)
        if self.training:
            self.step(command)
        else:
            self.last_command, self.last_command_time = command, time.monotonic()

    def unknown_commanders(self) -> list[str]:
        """Nodes publishing on the command topics that are not `commanders` (empty when every
        node may command). Asked of the ROS graph at each command: a publisher is discovered
        before its first message can arrive."""
        if not self.cfg.commanders:
            return []
        names = {info.node_name for topic in self.command_topics
                 for info in self.get_publishers_info_by_topic(topic)}
        return sorted(names - set(self.cfg.commanders))

    def on_realtime_tick(self) -> None:
        if time.monotonic() - self.last_command_time > self.cfg.command_timeout:
            if np.any(self.last_command != 0.0):
                self.reporter.record([SafetyStatus.STALE_COMMAND_STOP])
            self.last_command = np.zeros(len(self.joint_names))
        self.step(self.last_command)

    def step(self, command: np.ndarray) -> None:
        self.stepped_from = self.stamp.nanoseconds * 1e-9
        verdict = self.env.sim.step(command)
        self._advance_stamp()
        self.publish_verdict(verdict)
        self.publish_state()
        self._save()
        if self.viewer is not None and self.viewer.is_running():
            self.viewer.sync()


def main(args: list[str] | None = None) -> None:
    sys.exit(run_node(MujocoSim, args))
