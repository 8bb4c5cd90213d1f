"""Latency the hardware_interface adds between /ssq/joint_command and the controller's topic.

    .venv/bin/python -m bench.bench_hw_latency [--seconds 20] [--rate 100]

A peer process publishes joint states (500 Hz) and uniquely valued commands, and records when
each value comes back on /forward_velocity_controller/commands from a real hardware_interface
process. The same peer also hears its own commands: that one-hop DDS time is the baseline, so
`added` = (command -> controller message) - (one hop). Prints p50/p99 and writes
bench/results/hw_latency.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from tqdm import tqdm

from ssq_ros.dds_domain import isolate_dds
from ssq_ros.nodes.common import COMMAND_QOS
from ssq_ros.paths import config_path
from ssq_ros.safety.robot import load_robot
from ssq_ros.storage import atomic_write
from ssq_ros.training.provenance import provenance

RESULTS = Path(__file__).resolve().parent / 'results'
BASE_SPEED, STEP = 0.1, 1e-6  # joint-1 velocity encodes the command's index; within all limits


class LatencyPeer(Node):
    def __init__(self) -> None:
        super().__init__('latency_peer')
        self.robot = load_robot(config_path('robot.yaml'))
        self.sent: dict[int, float] = {}
        self.hop: dict[int, float] = {}
        self.out: dict[int, float] = {}
        self.state_pub = self.create_publisher(JointState, '/joint_states', 10)
        self.command_pub = self.create_publisher(Float64MultiArray, '/ssq/joint_command',
                                                 COMMAND_QOS)
        self.create_subscription(Float64MultiArray, '/ssq/joint_command',
                                 lambda m: self._arrived(self.hop, m), 100)
        self.create_subscription(Float64MultiArray, '/forward_velocity_controller/commands',
                                 lambda m: self._arrived(self.out, m), 100)

    def _arrived(self, table: dict[int, float], msg: Float64MultiArray) -> None:
        now = time.perf_counter()
        index = round((msg.data[0] - BASE_SPEED) / STEP)
        if index in self.sent and index not in table:  # the first copy; the timer re-sends it
            table[index] = now

    def publish_state(self) -> None:
        msg = JointState(name=list(self.robot.joint_names), position=self.robot.home.tolist(),
                         velocity=[0.0] * len(self.robot.joint_names))
        msg.header.stamp = self.get_clock().now().to_msg()
        self.state_pub.publish(msg)

    def publish_command(self, index: int) -> None:
        data = [BASE_SPEED + index * STEP] + [0.0] * (len(self.robot.joint_names) - 1)
        self.sent[index] = time.perf_counter()
        self.command_pub.publish(Float64MultiArray(data=data))


def percentiles(values_ms: np.ndarray) -> dict:
    return {'p50_ms': float(np.percentile(values_ms, 50)),
            'p99_ms': float(np.percentile(values_ms, 99)),
            'max_ms': float(values_ms.max()), 'n': int(values_ms.size)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seconds', type=float, default=20.0)
    parser.add_argument('--rate', type=float, default=100.0, help='commands per second')
    args = parser.parse_args(argv)
    isolate_dds()
    node_proc = subprocess.Popen([str(Path(sys.executable).parent / 'hardware_interface'),
                                  '--ros-args', '-p', 'limits.velocity_scale:=1.0',
                                  '--log-level', 'warn'], stdout=subprocess.DEVNULL)
    rclpy.init()
    peer = LatencyPeer()
    executor = SingleThreadedExecutor()
    executor.add_node(peer)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        warmup_end = time.monotonic() + 3.0  # discovery and the acceleration-limited ramp
        while time.monotonic() < warmup_end:
            peer.publish_state()
            time.sleep(0.002)
        period, total = 1.0 / args.rate, int(args.seconds * args.rate)
        next_command, index = time.monotonic(), 0
        with tqdm(total=total, desc='commands', unit='cmd', mininterval=1.0) as bar:
            while index < total:
                peer.publish_state()
                if time.monotonic() >= next_command:
                    peer.publish_command(index)
                    index, next_command = index + 1, next_command + period
                    bar.update(1)
                time.sleep(0.002)
        time.sleep(0.5)
    finally:
        executor.shutdown()
        node_proc.send_signal(2)
        node_proc.wait(10)
        peer.destroy_node()
        rclpy.try_shutdown()

    both = sorted(set(peer.out) & set(peer.hop))
    if len(both) < 0.9 * len(peer.sent):
        print(f'only {len(both)} of {len(peer.sent)} commands came back', file=sys.stderr)
        return 1
    through = np.array([peer.out[i] - peer.sent[i] for i in both]) * 1e3
    hop = np.array([peer.hop[i] - peer.sent[i] for i in both]) * 1e3
    added = through - hop
    result = {'commands': len(peer.sent), 'returned': len(both), 'rate_hz': args.rate,
              'through_node': percentiles(through), 'one_dds_hop': percentiles(hop),
              'added_by_node': percentiles(added), 'machine': platform.platform(),
              'cpus': os.cpu_count(), 'load_average': os.getloadavg()}
    for key in ('through_node', 'one_dds_hop', 'added_by_node'):
        r = result[key]
        print(f'{key:>14}: p50 {r["p50_ms"]:.3f} ms  p99 {r["p99_ms"]:.3f} ms  '
              f'max {r["max_ms"]:.3f} ms  (n={r["n"]})')
    out = RESULTS / 'hw_latency.json'
    atomic_write(out, lambda f: f.write(json.dumps({**result, **provenance()}, indent=2).encode()))
    print(f'wrote {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
