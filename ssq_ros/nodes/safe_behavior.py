"""safe_behavior: the safe behavior controller mu acting on the arm, and the episodes.

In:  /joint_states (sensor_msgs/JointState, any joint order), /ssq/run_phase (std_msgs/String,
     latched, from q_learner), /ssq/learner/ack (std_msgs/Int64: the last transition seq the
     learner consumed, -1 = ready for new data), /ssq/executor/decisions (the policy's actions,
     made into transitions in eval_policy); the reset services' answers (the goal).
Out: /ssq/joint_command (std_msgs/Float64MultiArray, joint velocities, robot.yaml order; train_sim
     remaps it onto the simulator's controller topic), /ssq/transitions and /ssq/episodes
     (labelled Float64MultiArray, docs/topics.md), ~/status and /diagnostics.
Calls: /ssq/sim/reset (training episodes) and /ssq/sim/reset_heldout (evaluation episodes).

mu acts in the train and eval_behavior phases and only on a state it has not answered yet:
every command is computed from the newest measured state. A state the simulator re-sends
(it got no command for it: lost, or refused while it did not yet know this node's name) is
answered with the command computed for that very state again (`LastCommand`), never an older
one. It pauses (sends nothing, the lockstep
simulator waits) while it is `max_lead` transitions ahead of the learner, and until a learner is
there at all. In eval_policy it only keeps the episodes (reward, time limit, resets) while the
policy executor acts. All decisions are `ssq_ros.graph_logic.behavior_loop.BehaviorLoop`.

Peers that die and come back (train_sim respawns them; docs/topics.md, "Faults"):
- the learner: every transition is held until the learner acknowledges that very one
  (`HeldTransitions`); one unacknowledged for `resend_after` s is sent again when a learner
  announces itself with nothing yet (ack -1, for its first 3 s at least: it restarted, from its
  checkpoint) and, as a last resort, after `retransmit_after` s. The learner
  ignores a transition number it has already had. What a killed learner had acknowledged after
  its last checkpoint is lost (at most `schedule.checkpoint_every - 1` transitions).
- the simulator (or a driver that reconnects): a joint state more than `stream_gap` after the
  previous one breaks the stream; the running episode is abandoned without a transition across
  the break, and a new one is requested.
- itself: transition numbers start at the wall-clock time in microseconds, so a restarted
  behavior never reuses a number its predecessor sent, and the learner never takes one of its
  transitions for a duplicate.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, Int64, String
from std_srvs.srv import Trigger

from ssq_ros.config import spec
from ssq_ros.graph_logic.behavior_loop import BehaviorLoop, load_run_config
from ssq_ros.graph_logic.phases import RunPhase, decode_phase
from ssq_ros.graph_logic.transitions import HeldTransitions
from ssq_ros.nodes.common import (
    JointStateInput,
    NodeDiagnostics,
    RunBudget,
    StatusReporter,
    declare_config,
    run_node,
    stamp_seconds,
)
from ssq_ros.nodes.interfaces import (
    COMMAND_QOS,
    COMMAND_TOPIC,
    DIAGNOSTICS_QOS,
    EPISODE_QOS,
    LATCHED_QOS,
    SENSOR_QOS,
    STAMP_TOLERANCE,
    TRANSITION_QOS,
)
from ssq_ros.nodes.transition_msg import (
    LastCommand,
    episode_message,
    read_decision,
    transition_message,
)
from ssq_ros.safety.joint_state import JointSample, JointStateError, JointStateReader
from ssq_ros.safety.status import SafetyStatus
from ssq_ros.task.setup import build_task_problem

# Executor decisions remembered (a few seconds of simulated time).
DECISIONS_KEPT = 100
_ACTING = {RunPhase.TRAIN: True, RunPhase.EVAL_BEHAVIOR: True, RunPhase.EVAL_POLICY: False}


@dataclass(frozen=True)
class SafeBehaviorConfig(JointStateInput, NodeDiagnostics, RunBudget):
    """Parameters of the safe_behavior node (config/nodes.yaml)."""

    config_file: str = spec('', doc="experiment YAML (robot, safe set, sim, behavior, seed); "
                            "'' is the package's train_sim.yaml")
    max_lead: int = spec(200, doc='pause while this many transitions are not yet consumed by '
                         'the learner', low=1, high=1_000_000)
    reset_retry: float = spec(2.0, doc='call the reset service again if it has not answered '
                              'after this long [s, wall clock]', low=0.1, high=60.0)
    stream_gap: float = spec(1.0, doc='a joint state this much later than the previous one '
                             '[s, state stamps] breaks the stream (a simulator restart, a '
                             'driver reconnect): the episode is abandoned and a new one '
                             'requested', low=0.01, high=3600.0)
    resend_after: float = spec(1.0, doc='a restarted learner (ack -1 while transitions are '
                               'held) gets again the held transitions last sent at least this '
                               'long ago [s, wall clock]', low=0.05, high=60.0)
    retransmit_after: float = spec(60.0, doc='last resort: send again a transition the '
                                   'learner has not acknowledged for this long [s, wall clock; '
                                   'not while the final policy is extracted]', low=0.5,
                                   high=3600.0)


class SafeBehavior(Node):
    def __init__(self, **node_options: Any) -> None:
        super().__init__('safe_behavior', **node_options)
        self.cfg = declare_config(self, SafeBehaviorConfig)
        run_config = load_run_config(self.cfg.config_file, self.cfg.steps or None)
        self.eval_episodes = run_config.schedule.final_eval_episodes
        self.problem = build_task_problem(run_config)
        self.spaces = self.problem.spaces
        self.loop = BehaviorLoop(self.problem, run_config.schedule.seed,
                                 first_seq=time.time_ns() // 1000)
        robot = self.problem.setup.robot
        self.reader = JointStateReader.for_robot(robot, self.cfg.position_tolerance,
                                                 max_stamp_age=self.cfg.max_stamp_age)
        self.reporter = StatusReporter(self, self.cfg.diagnostics_period, 'safe_behavior')
        self.phase = RunPhase.TRAIN
        self.learner_here = False
        self.latest: JointSample | None = None
        self.answered_stamp = -1.0
        self.episode_start = float('inf')
        self.episodes_done = 0
        self.reset_pending_since: float | None = None
        self.need_reset = True
        # Bounded: mu stops at max_lead unacknowledged; the evaluation's transitions do not
        # wait for the learner, and the oldest are dropped (counted) beyond this.
        self.held = HeldTransitions(capacity=2 * self.cfg.max_lead + 1000)
        self.stream_breaks = 0

        self.command_pub = self.create_publisher(Float64MultiArray, COMMAND_TOPIC,
                                                 COMMAND_QOS)
        self.last_command = LastCommand(self.command_pub, self.reporter.extra)
        self.transition_pub = self.create_publisher(Float64MultiArray, '/ssq/transitions',
                                                    TRANSITION_QOS)
        self.episode_pub = self.create_publisher(Float64MultiArray, '/ssq/episodes',
                                                 EPISODE_QOS)
        # Decisions first: when a decision and the state it led to are both waiting, the
        # executor serves subscriptions in creation order, and the state needs the decision.
        self.executor_actions: dict[float, int | np.ndarray] = {}
        self.create_subscription(Float64MultiArray, '/ssq/executor/decisions', self.on_decision,
                                 TRANSITION_QOS)
        self.create_subscription(JointState, '/joint_states', self.on_joint_state, SENSOR_QOS)
        self.create_subscription(String, '/ssq/run_phase', self.on_phase, LATCHED_QOS)
        self.create_subscription(Int64, '/ssq/learner/ack', self.on_ack, TRANSITION_QOS)
        # A learner is here: its status comes every second, also to a behavior that
        # (re)started after the learner stopped announcing itself with ack -1.
        self.create_subscription(DiagnosticArray, '/ssq/learner/status',
                                 self.on_learner_status, DIAGNOSTICS_QOS)
        self.reset_clients = {False: self.create_client(Trigger, '/ssq/sim/reset'),
                              True: self.create_client(Trigger, '/ssq/sim/reset_heldout')}
        self.steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(0.05, self.maybe_reset, clock=self.steady)
        self.create_timer(min(1.0, self.cfg.retransmit_after / 2), self.retransmit,
                          clock=self.steady)
        self.get_logger().info(f'numbering transitions from {self.loop.seq}')

    # ------------------------------------------------------------------ inputs
    def on_joint_state(self, msg: JointState) -> None:
        stamp = stamp_seconds(msg.header.stamp)
        now = self.get_clock().now().nanoseconds * 1e-9
        if self.reader.is_repeat(msg.name, msg.position, msg.velocity, stamp, now):
            # The simulator re-sent the state: it has no command for it.
            if not self.last_command.send_again(stamp):
                self.try_act()  # not answered yet
            return
        previous = self.latest
        try:
            self.latest = self.reader.accept(msg.name, msg.position, msg.velocity, stamp,
                                             self.get_clock().now().nanoseconds * 1e-9)
        except JointStateError as exc:
            self.reporter.reject(exc.status, exc.reason)
            return
        if previous is not None and stamp - previous.stamp > self.cfg.stream_gap:
            self.on_stream_break(stamp - previous.stamp)
        self.try_act()

    def on_stream_break(self, gap: float) -> None:
        """No joint state for `gap` s: the arm's state did not evolve under our commands in
        between (a restarted simulator starts another physics), so the episode ends here,
        with no transition across the break."""
        self.stream_breaks += 1
        self.reporter.extra['stream_breaks'] = str(self.stream_breaks)
        was_active = self.loop.active
        self.loop.end_episode()
        if self.phase in _ACTING:
            self.need_reset = True
            self.reset_pending_since = None  # a reset asked of a dead simulator never answers
        self.get_logger().warning(
            f'joint-state stream broken ({gap:.3f} s without a state): '
            f'{"episode abandoned, " if was_active else ""}asking for a new one')

    def on_phase(self, msg: String) -> None:
        try:
            phase = decode_phase(msg.data).phase
        except ValueError as exc:
            self.get_logger().error(f'refused run phase: {exc}')
            return
        if phase is self.phase:
            return
        self.get_logger().info(f'run phase {self.phase.value} -> {phase.value}')
        self.phase = phase
        self.loop.end_episode()
        self.episodes_done = 0
        self.need_reset = phase in _ACTING

    def on_ack(self, msg: Int64) -> None:
        if msg.data < -1:
            self.get_logger().error(f'refused learner ack {msg.data}', throttle_duration_sec=1.0)
            return
        self.learner_here = True
        if msg.data >= 0:
            self.held.acknowledge(msg.data)  # a number not held: twice, or a predecessor's
        elif len(self.held):
            # -1 while transitions are held: a learner that (re)started with nothing.
            self.send_again(self.cfg.resend_after, 'a learner (re)started with nothing',
                            warn=False)  # the launcher reports a crash already
        self.try_act()

    def on_learner_status(self, msg: DiagnosticArray) -> None:
        if not self.learner_here:
            self.learner_here = True
            self.try_act()

    def retransmit(self) -> None:
        # A learner busy with its final extraction acknowledges nothing for a while.
        if self.learner_here and self.phase in _ACTING:
            self.send_again(self.cfg.retransmit_after, 'unacknowledged for '
                            f'{self.cfg.retransmit_after:g} s')

    def send_again(self, older_than: float, why: str, warn: bool = True) -> None:
        """Send the held transitions last sent at least `older_than` s ago, oldest first."""
        again = self.held.due(time.monotonic(), older_than)
        if not again:
            return
        for _, message in again:
            self.transition_pub.publish(message)
        self.reporter.extra['transitions_resent'] = str(self.held.resent)
        log = self.get_logger().warning if warn else self.get_logger().info
        log(f'{why}: sent {len(again)} unacknowledged transitions again '
            f'(seq {again[0][0]}..{again[-1][0]})')

    def on_decision(self, msg: Float64MultiArray) -> None:
        """The executor's action at a state: with the next state it makes a transition of the
        policy (for its value calibration)."""
        try:
            stamp, action = read_decision(self.spaces, msg)
        except ValueError as exc:
            self.get_logger().warning(f'refused executor decision: {exc}',
                                      throttle_duration_sec=1.0)
            return
        if len(self.executor_actions) >= DECISIONS_KEPT:
            self.executor_actions.pop(next(iter(self.executor_actions)))
        self.executor_actions[stamp] = action

    # ------------------------------------------------------------------ episodes
    def maybe_reset(self) -> None:
        now = self.steady.now().nanoseconds * 1e-9
        if not self.need_reset or self.phase not in _ACTING or (
                self.phase is RunPhase.TRAIN and not self.learner_here):
            return
        if self.reset_pending_since is not None and \
                now - self.reset_pending_since < self.cfg.reset_retry:
            return
        client = self.reset_clients[self.phase is not RunPhase.TRAIN]
        if not client.service_is_ready():
            return
        self.reset_pending_since = now
        phase = self.phase
        client.call_async(Trigger.Request()).add_done_callback(
            lambda future: self.on_reset_done(future, phase))

    def on_reset_done(self, future: Any, phase: RunPhase) -> None:
        response = future.result()
        if response is not None and not response.success:
            # Refused (e.g. episode_server: the real arm is not at a start the task can use):
            # say why, and ask again only after reset_retry, not at the timer's rate.
            self.get_logger().warning(f'reset refused: {response.message}',
                                      throttle_duration_sec=5.0)
            self.reset_pending_since = self.steady.now().nanoseconds * 1e-9
            return
        self.reset_pending_since = None
        if phase is not self.phase:
            return  # the phase changed while the simulator reset; maybe_reset calls again
        try:
            answer = json.loads(response.message)
            self.loop.start_episode(phase, int(answer['episode']), answer['goal'])
            self.episode_start = float(answer['stamp'])
        except (ValueError, KeyError, TypeError) as exc:
            self.get_logger().error(f'reset answer refused: {exc}')
            return
        self.need_reset = False
        self.try_act()

    # ------------------------------------------------------------------ acting
    def _throttled(self) -> bool:
        return not self.learner_here or len(self.held) >= self.cfg.max_lead

    def try_act(self) -> None:
        sample = self.latest
        if sample is None or not self.loop.active or sample.stamp <= self.answered_stamp \
                or sample.stamp < self.episode_start - STAMP_TOLERANCE:
            return
        mu_acts = _ACTING.get(self.phase, False)
        if mu_acts and self._throttled():
            return
        previous = None if mu_acts else self.executor_actions.get(self.answered_stamp)
        self.answered_stamp = sample.stamp
        step = self.loop.on_state(sample.positions, sample.velocities, mu_acts, previous)
        if step.transition is not None:
            message = transition_message(self.spaces, step.transition)
            self.held.add(step.transition.seq, message, time.monotonic())
            self.transition_pub.publish(message)
        if step.command is not None:
            self.reporter.record([SafetyStatus.NO_SAFE_ACTION_STOP] if step.fallback else [])
            self.last_command.send(step.command, sample.stamp)
        if step.summary is not None:
            self.episode_pub.publish(episode_message(step.summary))
            self.episodes_done += 1
            # Evaluation phases run a fixed set of held-out episodes; training runs on.
            self.need_reset = self.phase is RunPhase.TRAIN or \
                self.episodes_done < self.eval_episodes
            self.maybe_reset()


def main(args: list[str] | None = None) -> None:
    sys.exit(run_node(SafeBehavior, args))
