"""Benchmark of the training graph's nodes, each a real process over real DDS.

1. Command latency: /joint_states at 100 Hz into safe_behavior (mu) and into policy_executor
   (an exported policy behind the shield); the time from publishing a state to receiving the
   command it causes, p50/p99/max.
2. Learner throughput: valid transitions offered to q_learner as fast as it acknowledges them
   (a window of 200 in flight); transitions per second before learning starts (ingest only) and
   while it trains (one critic update per transition, the package's train_sim.yaml networks).

    .venv/bin/python bench/bench_graph.py [--seconds 10] [--transitions 3000]

Prints the numbers and writes bench/results/graph.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rclpy
from geometry_msgs.msg import PointStamped
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, Int64, UInt8MultiArray
from std_srvs.srv import Trigger

from ssq_ros.dds_domain import isolate_dds
from ssq_ros.deploy.export import export_policy
from ssq_ros.graph_logic.behavior_loop import load_run_config, observe
from ssq_ros.graph_logic.phases import RunPhase
from ssq_ros.graph_logic.transitions import Transition
from ssq_ros.nodes.common import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS
from ssq_ros.nodes.transition_msg import TRANSITION_QOS, transition_message
from ssq_ros.training.learner import OnlineLearner
from ssq_ros.training.problem import build_problem
from ssq_ros.training.provenance import provenance

BIN = Path(sys.executable).parent
RESULTS = Path(__file__).parent / 'results' / 'graph.json'
RATE_HZ = 100.0
# A state not answered within this is counted as unanswered.
ANSWER_WINDOW = 0.05


def start(executable: str, params: dict[str, str]) -> subprocess.Popen:
    cmd = [str(BIN / executable), '--ros-args']
    for key, value in params.items():
        if value:  # '' is every parameter's default here, and -p name:= would mean null
            cmd += ['-p', f'{key}:={value}']
    log = open(Path(tempfile.gettempdir()) / f'bench_graph_{executable}.log', 'w')
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def percentiles(values: list[float]) -> dict[str, float]:
    array = np.array(values) * 1e3
    return {'count': int(array.size), 'p50_ms': float(np.percentile(array, 50)),
            'p99_ms': float(np.percentile(array, 99)), 'max_ms': float(array.max())}


class LatencyProbe(Node):
    """Publishes joint states of the real simulated arm at 100 Hz and times the commands."""

    def __init__(self, problem):
        super().__init__('bench_latency_probe')
        self.problem = problem
        self.names = list(problem.setup.robot.joint_names)
        self.states = self.create_publisher(JointState, '/joint_states', SENSOR_QOS)
        self.acks = self.create_publisher(Int64, '/ssq/learner/ack', COMMAND_QOS)
        self.goal_pub = self.create_publisher(PointStamped, '/ssq/goal', LATCHED_QOS)
        self.policy_pub = self.create_publisher(UInt8MultiArray, '/ssq/policy', LATCHED_QOS)
        self.create_subscription(Float64MultiArray, '/ssq/joint_command', self.on_command,
                                 COMMAND_QOS)
        self.create_service(Trigger, '/ssq/sim/reset', self.on_reset)
        self.episodes = 0
        self.sent_at: float | None = None
        self.latencies: list[float] = []
        self.unanswered = 0
        self.command: np.ndarray | None = None

    def on_reset(self, request, response):
        # A real new episode of the simulated arm, as mujoco_sim's reset service does.
        self.episodes += 1
        self.problem.env.reset(seed=2 * self.episodes)
        self.command = None
        response.success = True
        response.message = json.dumps({'episode': self.episodes,
                                       'goal': [float(v) for v in self.problem.env.goal],
                                       'stamp': self.get_clock().now().nanoseconds * 1e-9})
        return response

    def on_command(self, msg):
        if self.sent_at is not None:
            self.latencies.append(time.perf_counter() - self.sent_at)
            self.sent_at = None
        self.command = np.array(msg.data)

    def run(self, seconds: float, warmup: float) -> list[float]:
        """Drive the real simulated arm with the commands; time each state -> command.

        A state is sent on each 100 Hz tick once the previous one was answered (or given up
        after ANSWER_WINDOW: an episode's last state is answered by a reset, not a command),
        so every latency is matched to its own state.
        """
        env = self.problem.env
        period = 1.0 / RATE_HZ
        start = time.perf_counter()
        end, measuring_from = start + warmup + seconds, start + warmup
        next_tick = start
        while time.perf_counter() < end:
            self.acks.publish(Int64(data=-1))  # a learner that never holds mu back
            if self.command is not None:
                env.sim.step(self.command)
                self.command = None
            q, qdot = env.joint_state()
            msg = JointState(name=self.names, position=q.tolist(), velocity=qdot.tolist())
            msg.header.stamp = self.get_clock().now().to_msg()
            if time.perf_counter() < measuring_from:
                self.latencies.clear()
                self.unanswered = 0
            sent = self.sent_at = time.perf_counter()
            self.states.publish(msg)
            while self.sent_at is not None and time.perf_counter() - sent < ANSWER_WINDOW:
                rclpy.spin_once(self, timeout_sec=0.001)
            if self.sent_at is not None:
                self.sent_at = None
                self.unanswered += 1
            next_tick = max(next_tick + period, time.perf_counter())
            while time.perf_counter() < next_tick:
                rclpy.spin_once(self, timeout_sec=max(0.0, next_tick - time.perf_counter()))
        return list(self.latencies)


def bench_latency(problem, config_file: str, seconds: float) -> dict:
    problem.env.reset(seed=3)
    probe = LatencyProbe(problem)
    out = {}
    try:
        goal = PointStamped()
        goal.point.x, goal.point.y, goal.point.z = (float(v) for v in problem.env.goal)
        probe.goal_pub.publish(goal)
        learner = OnlineLearner(problem.spaces, load_run_config(config_file).learner)
        learner.policy_version = 1
        probe.policy_pub.publish(UInt8MultiArray(data=export_policy(learner)))
        for name in ('safe_behavior', 'policy_executor'):
            problem.env.reset(seed=3)
            proc = start(name, {'config_file': config_file})
            try:
                latencies = probe.run(seconds, warmup=8.0)
            finally:
                stop(proc)
            out[name] = {**percentiles(latencies), 'unanswered_states': probe.unanswered}
            print(f'{name}: state -> command at {RATE_HZ:g} Hz: '
                  f'p50 {out[name]["p50_ms"]:.2f} ms, p99 {out[name]["p99_ms"]:.2f} ms, '
                  f'max {out[name]["max_ms"]:.2f} ms over {out[name]["count"]} commands '
                  f'({probe.unanswered} unanswered within {ANSWER_WINDOW * 1e3:g} ms)',
                  flush=True)
    finally:
        probe.destroy_node()
    return out


class TransitionSource(Node):
    def __init__(self, problem, count: int):
        super().__init__('bench_transition_source')
        self.spaces = problem.spaces
        self.pub = self.create_publisher(Float64MultiArray, '/ssq/transitions', TRANSITION_QOS)
        self.acked = -1
        self.ack_times: dict[int, float] = {}
        self.create_subscription(Int64, '/ssq/learner/ack', self.on_ack, COMMAND_QOS)
        rng = np.random.default_rng(0)
        self.messages = []
        for seq in range(count):  # real states of the arm, real supports of mu
            problem.env.reset(seed=2 * (seq % 50))
            q, qdot = problem.env.joint_state()
            decision = problem.controller.act(q, qdot, rng, problem.env.goal)
            obs = observe(problem, q, qdot, problem.env.goal)
            self.messages.append(transition_message(self.spaces, Transition(
                seq, RunPhase.TRAIN, 0, obs, decision.action, -1.0, obs, False,
                decision.probs)))

    def on_ack(self, msg):
        if msg.data >= 0:
            self.acked = max(self.acked, msg.data)
            self.ack_times[msg.data] = time.perf_counter()

    def run(self, window: int, timeout: float) -> None:
        sent = 0
        deadline = time.monotonic() + timeout
        while self.acked < len(self.messages) - 1 and time.monotonic() < deadline:
            while sent < len(self.messages) and sent - self.acked <= window:
                self.pub.publish(self.messages[sent])
                sent += 1
            rclpy.spin_once(self, timeout_sec=0.01)


def bench_learner(problem, config_file: str, count: int) -> dict:
    config = load_run_config(config_file)
    starts = config.schedule.learning_starts
    source = TransitionSource(problem, count)
    with tempfile.TemporaryDirectory() as run_dir:
        proc = start('q_learner', {'config_file': config_file, 'run_dir': run_dir,
                                   'steps': str(10 * count)})
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not source.count_subscribers(
                    '/ssq/transitions'):
                rclpy.spin_once(source, timeout_sec=0.1)
            time.sleep(2.0)
            source.run(window=200, timeout=600)
        finally:
            stop(proc)
    times = source.ack_times
    source.destroy_node()

    def rate(first: int, last: int) -> float:
        # Acks travel keep-last-1: some are superseded by newer ones before they are read.
        seen = sorted(seq for seq in times if first <= seq <= last)
        return (seen[-1] - seen[0]) / (times[seen[-1]] - times[seen[0]])

    out = {'ingest_transitions_per_s': rate(50, starts - 1),
           'training_transitions_per_s': rate(starts + 50, count - 1),
           'updates_per_transition': config.schedule.updates_per_step,
           'critic_hidden': list(config.learner.critic.hidden_sizes),
           'batch_size': config.learner.critic.batch_size, 'transitions': count}
    print(f'q_learner: {out["ingest_transitions_per_s"]:.0f} transitions/s before learning '
          f'starts, {out["training_transitions_per_s"]:.0f} transitions/s while training '
          f'({out["updates_per_transition"]:g} update each, batch {out["batch_size"]})',
          flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seconds', type=float, default=10.0,
                        help='measured seconds of the latency run, per node')
    parser.add_argument('--transitions', type=int, default=3000,
                        help='transitions offered to the learner (>= learning_starts + 100)')
    parser.add_argument('--config', default='', help="experiment YAML ('' = train_sim.yaml)")
    args = parser.parse_args()
    isolate_dds()
    config = load_run_config(args.config)
    if args.transitions < config.schedule.learning_starts + 100:
        parser.error(f'--transitions must be at least learning_starts + 100 = '
                     f'{config.schedule.learning_starts + 100}')
    problem = build_problem(config)
    rclpy.init()
    try:
        latency = bench_latency(problem, args.config, args.seconds)
        learner = bench_learner(problem, args.config, args.transitions)
    finally:
        rclpy.shutdown()
    result = {'latency_at_100hz': latency, 'learner': learner,
              'machine': {'cpus': os.cpu_count(), 'python': platform.python_version(),
                          'load_average_1min': os.getloadavg()[0],
                          'rmw': os.environ.get('RMW_IMPLEMENTATION', 'default')},
              'date': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({**result, **provenance(config)}, indent=2))
    print(f'wrote {RESULTS}')


if __name__ == '__main__':
    main()
