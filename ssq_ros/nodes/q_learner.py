"""q_learner: the online KL-regularized Q learner, and the coordinator of a train_sim run.

In:  /ssq/transitions, /ssq/episodes (labelled std_msgs/Float64MultiArray, docs/topics.md),
     /ssq/safety/status (the monitor's unsafe counts, for the log and metrics.json),
     /diagnostics (the executor's and the behavior's reaction counts, for metrics.json).
Out: /ssq/policy (std_msgs/UInt8MultiArray, latched: the exported TorchScript policy, so an
     executor that starts late gets the newest), /ssq/run_phase (std_msgs/String, latched),
     /ssq/learner/ack (std_msgs/Int64), /ssq/learner/status (diagnostic_msgs/DiagnosticArray:
     steps, updates, losses, policy version, phase), a progress line every `progress_period`.

Everything it decides is `ssq_ros.graph_logic.learner_run.LearnerRun`, the adapter of the run
engine ssq-train uses too (`ssq_ros.training.run.Run`): the schedule, atomic checkpoints in
`run_dir` (a restarted learner resumes: its step counter continues), the final extraction (its
progress lines go to this node's output), the held-out evaluation's accounting and
metrics.json. When the run is done it exits with 0, which ends an `ssq-launch` graph.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from std_msgs.msg import Float64MultiArray, Int64, String, UInt8MultiArray

from ssq_ros.config import ConfigError, spec
from ssq_ros.graph_logic.learner_run import Events, LearnerRun
from ssq_ros.graph_logic.phases import PhaseAnnouncement, RunPhase
from ssq_ros.learning.critic import CheckpointError
from ssq_ros.nodes.common import (
    DIAGNOSTICS_QOS,
    LATCHED_QOS,
    RunBudget,
    declare_config,
    run_node,
    wait_until_delivered,
)
from ssq_ros.nodes.interfaces import EPISODE_QOS, TRANSITION_QOS
from ssq_ros.nodes.transition_msg import read_episode, read_transition
from ssq_ros.task.setup import build_task_problem
from ssq_ros.training.config import load_run_config
from ssq_ros.training.plots import summary_rows

# The "-1: here with nothing yet" announcement lasts at least this long [s], so the behavior
# hears it once this learner's subscription to /ssq/transitions is surely matched.
ANNOUNCE_FOR = 3.0


@dataclass(frozen=True)
class QLearnerConfig(RunBudget):
    """Parameters of the q_learner node (config/nodes.yaml)."""

    config_file: str = spec('', doc="experiment YAML (learner, schedule, seed); '' is the "
                            "package's train_sim.yaml")
    run_dir: str = spec('runs/latest', doc='run folder: config, log, checkpoints, policy, '
                        'metrics')
    progress_period: float = spec(5.0, doc='seconds between progress lines', low=0.1,
                                  high=3600.0)
    status_period: float = spec(1.0, doc='seconds between /ssq/learner/status messages',
                                low=0.05, high=60.0)


class QLearner(Node):
    def __init__(self, **node_options: Any) -> None:
        super().__init__('q_learner', **node_options)
        self.cfg = declare_config(self, QLearnerConfig)
        config = load_run_config(self.cfg.config_file, self.cfg.steps or None)
        spaces = build_task_problem(config).spaces
        self.run = LearnerRun(config, spaces, self.cfg.run_dir, say=self.say)
        try:
            resumed = self.run.prepare_folder()
        except CheckpointError as exc:
            raise ConfigError(str(exc)) from exc
        self.spaces = spaces
        self.finished = False
        self.last_losses: dict[str, float] = {}
        self.refused = 0
        # The behavior sends again what it holds unacknowledged (after a restart of either); a
        # number had twice (LearnerRun remembers them, across its restarts) is only
        # acknowledged again. Numbers are unique across the behavior's restarts.
        self.duplicates = 0

        self.policy_pub = self.create_publisher(UInt8MultiArray, '/ssq/policy', LATCHED_QOS)
        self.phase_pub = self.create_publisher(String, '/ssq/run_phase', LATCHED_QOS)
        # Deep (keep last 1000): every acknowledgement counts, the behavior holds each
        # transition until its own one arrives.
        self.ack_pub = self.create_publisher(Int64, '/ssq/learner/ack', TRANSITION_QOS)
        self.status_pub = self.create_publisher(DiagnosticArray, '/ssq/learner/status',
                                                DIAGNOSTICS_QOS)
        self.create_subscription(Float64MultiArray, '/ssq/transitions', self.on_transition,
                                 TRANSITION_QOS)
        self.create_subscription(Float64MultiArray, '/ssq/episodes', self.on_episode,
                                 EPISODE_QOS)
        self.create_subscription(DiagnosticArray, '/ssq/safety/status', self.on_safety,
                                 LATCHED_QOS)
        self.create_subscription(DiagnosticArray, '/diagnostics', self.on_diagnostics,
                                 DIAGNOSTICS_QOS)
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(self.cfg.status_period, self.publish_status, clock=steady)
        self.create_timer(self.cfg.progress_period, self.print_progress, clock=steady)
        self.announced, self.had_transition = 0, False
        self.ready_timer = self.create_timer(0.5, self.announce_ready, clock=steady)
        self.extract_timer = None
        self.progress_mark = (time.monotonic(), self.run.steps)
        self.publish_phase(PhaseAnnouncement(RunPhase.TRAIN))
        if self.run.steps >= self.run.schedule.steps:
            self.get_logger().warning(f'the checkpoint already holds {self.run.steps} steps: '
                                      'training is complete; evaluating')
            self.run.phase = RunPhase.EXTRACT
            self.apply(Events(phase=PhaseAnnouncement(RunPhase.EXTRACT)))
        verb = 'resumed at' if resumed else 'starting at'
        self.get_logger().info(f'{verb} step {self.run.steps} of {self.run.schedule.steps}; '
                               f'run folder {self.cfg.run_dir}')

    # ------------------------------------------------------------------ inputs
    def announce_ready(self) -> None:
        """Until the first transition, and for ANNOUNCE_FOR s at least: tell the behavior a
        learner is here with nothing yet (after a restart, it sends again what it holds: what
        it sent before this learner was listening is among it)."""
        self.ack_pub.publish(Int64(data=-1))
        self.announced += 1
        if self.had_transition and self.announced * 0.5 >= ANNOUNCE_FOR:
            self.ready_timer.cancel()
            self.ready_timer = None

    def on_transition(self, msg: Float64MultiArray) -> None:
        try:
            transition = read_transition(self.spaces, msg)
            events = self.run.on_transition(transition)
        except ValueError as exc:
            self.refused += 1
            self.get_logger().warning(f'refused transition: {exc}', throttle_duration_sec=1.0)
            return
        if events.duplicate:
            self.duplicates += 1
            self.ack_pub.publish(Int64(data=transition.seq))
            return
        self.had_transition = True
        self.ack_pub.publish(Int64(data=transition.seq))
        self.apply(events)

    def on_episode(self, msg: Float64MultiArray) -> None:
        try:
            events = self.run.on_episode(read_episode(msg))
        except ValueError as exc:
            self.refused += 1
            self.get_logger().warning(f'refused episode summary: {exc}',
                                      throttle_duration_sec=1.0)
            return
        self.apply(events)

    def on_safety(self, msg: DiagnosticArray) -> None:
        try:
            self.run.on_safety({kv.key: kv.value for status in msg.status
                                for kv in status.values})
        except ValueError as exc:
            self.get_logger().warning(f'refused safety status: {exc}', throttle_duration_sec=1.0)

    def on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            self.run.on_diagnostics(status.name, {kv.key: int(kv.value) for kv in status.values
                                                  if kv.value.isdigit()})

    # ------------------------------------------------------------------ outputs
    def apply(self, events: Events) -> None:
        if events.policy is not None:
            self.policy_pub.publish(UInt8MultiArray(data=events.policy))
            self.get_logger().info(f'published policy v{self.run.learner.policy_version}')
        if events.phase is not None:
            self.publish_phase(events.phase)
            self.print_progress()
            if events.phase.phase is RunPhase.EXTRACT:
                # Extract in a later callback, so the phase change reaches the graph first.
                self.extract_timer = self.create_timer(
                    0.2, self.final_extract, clock=Clock(clock_type=ClockType.STEADY_TIME))
        if events.finished:
            self.finished = True
            rows = summary_rows(self.cfg.run_dir)  # the table ssq-train and ssq-report print
            width = max(len(name) for name, _ in rows)
            print('\n'.join(f'{name:<{width}}  {value}' for name, value in rows), flush=True)
            self.get_logger().info(f'run complete: {self.cfg.run_dir}/metrics.json')
            wait_until_delivered(self.phase_pub, 1.0)
            self.context.try_shutdown()  # run_node returns 0

    def final_extract(self) -> None:
        self.extract_timer.cancel()
        self.get_logger().info(f'budget reached: final extraction '
                               f'({self.run.schedule.final_extract_steps} steps)')
        self.apply(self.run.final_extract())

    def publish_phase(self, announcement: PhaseAnnouncement) -> None:
        self.phase_pub.publish(String(data=announcement.encode()))
        self.get_logger().info(f'run phase: {announcement.encode()}')

    def publish_status(self) -> None:
        learner = self.run.learner
        values = {'phase': self.run.phase.value, 'steps': learner.transitions,
                  'budget': self.run.schedule.steps, 'updates': learner.updates,
                  'policy_version': learner.policy_version,
                  'episodes_train': self.run.counters.episodes_train,
                  'refused_messages': self.refused, 'duplicate_transitions': self.duplicates,
                  'transitions_ignored': self.run.counters.transitions_ignored}
        status = DiagnosticStatus(level=DiagnosticStatus.OK, name='q_learner',
                                  hardware_id='q_learner', message=self.run.phase.value,
                                  values=[KeyValue(key=k, value=str(v))
                                          for k, v in values.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.status_pub.publish(msg)

    def say(self, line: str) -> None:
        """A progress line of the run engine (the final extraction's, ...), like ours."""
        print(f'q_learner: {line}', flush=True)

    def print_progress(self) -> None:
        now, steps = time.monotonic(), self.run.steps
        then, before = self.progress_mark
        self.progress_mark = (now, steps)
        print(f'q_learner: {self.run.progress_line((steps - before) / max(now - then, 1e-9))}',
              flush=True)

    def before_shutdown(self) -> None:
        if not self.finished and self.run.phase is RunPhase.TRAIN and self.run.steps:
            self.run.save_checkpoint()  # a clean stop keeps everything learned so far


def main(args: list[str] | None = None) -> None:
    sys.exit(run_node(QLearner, args))
