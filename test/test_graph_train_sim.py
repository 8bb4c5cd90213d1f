"""train_sim end to end: real node processes over real DDS, started by ssq-launch or one by one.

A short budget (test/data/train_sim_tiny.yaml): the learner must receive transitions and make
updates, write a checkpoint, publish policies that the executor picks up and drives the arm with
in the evaluation, the monitor must count zero unsafe states and publish its markers, and the
graph must end with exit 0 and metrics.json. A learner killed with SIGKILL and started again must
resume from its checkpoint with its step counter continuing.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import QoSProfile
from ros_helpers import EVENT_TIMEOUT, STARTUP_TIMEOUT
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, String
from visualization_msgs.msg import MarkerArray

from ssq_ros.graph import GRAPHS
from ssq_ros.graph_logic.phases import RunPhase
from ssq_ros.graph_logic.transitions import PHASE_CODES
from ssq_ros.launcher import plan_graph
from ssq_ros.nodes.common import LATCHED_QOS, SENSOR_QOS
from ssq_ros.nodes.safety_monitor import MARKER_NAMESPACES
from ssq_ros.nodes.transition_msg import TRANSITION_QOS

TINY = Path(__file__).parent / 'data' / 'train_sim_tiny.yaml'
BIN = Path(sys.executable).parent
STEPS = 300


class Observer(Node):
    """Records what the graph publishes."""

    def __init__(self):
        super().__init__('graph_observer')
        self.phase = 'none'
        self.phases: list[str] = []
        self.positions: dict[str, list[np.ndarray]] = {}
        self.namespaces: set[str] = set()
        self.safety: dict[str, str] = {}
        self.learner: list[dict[str, str]] = []
        self.executor_values: dict[str, str] = {}
        # Latched like the publisher's, but a deeper queue: a short phase (extract) must not be
        # overwritten by the next before this observer spins on a loaded machine (issue 16).
        self.create_subscription(String, '/ssq/run_phase', self.on_phase,
                                 QoSProfile(history=LATCHED_QOS.history, depth=100,
                                            reliability=LATCHED_QOS.reliability,
                                            durability=LATCHED_QOS.durability))
        self.create_subscription(JointState, '/joint_states', self.on_state, SENSOR_QOS)
        self.create_subscription(MarkerArray, '/ssq/safety/markers', self.on_markers,
                                 LATCHED_QOS)
        self.create_subscription(DiagnosticArray, '/ssq/safety/status', self.on_safety,
                                 LATCHED_QOS)
        self.create_subscription(DiagnosticArray, '/ssq/learner/status', self.on_learner, 10)
        self.create_subscription(DiagnosticArray, '/diagnostics', self.on_diagnostics, 10)
        self.transition_phases: list[float] = []
        self.create_subscription(Float64MultiArray, '/ssq/transitions',
                                 lambda m: self.transition_phases.append(m.data[1]),
                                 TRANSITION_QOS)

    def on_phase(self, msg):
        self.phase = msg.data.split()[0]
        self.phases.append(self.phase)

    def on_state(self, msg):
        self.positions.setdefault(self.phase, []).append(np.array(msg.position))

    def on_markers(self, msg):
        self.namespaces |= {m.ns for m in msg.markers}

    def on_safety(self, msg):
        self.safety = {kv.key: kv.value for kv in msg.status[0].values}

    def on_learner(self, msg):
        self.learner.append({kv.key: kv.value for kv in msg.status[0].values})

    def on_diagnostics(self, msg):
        for status in msg.status:
            if status.name.endswith('policy_executor'):
                self.executor_values = {kv.key: kv.value for kv in status.values}


@pytest.fixture
def observer():
    rclpy.init()
    node = Observer()
    yield node
    node.destroy_node()
    rclpy.shutdown()


def spin_until(node, done, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
        if done():
            return True
    return False


def test_train_sim_trains_evaluates_and_exits_cleanly(observer, tmp_path):
    run_dir = tmp_path / 'run'
    proc = subprocess.Popen(
        [str(BIN / 'ssq-launch'), 'train_sim', f'steps:={STEPS}', f'run_dir:={run_dir}',
         f'config:={TINY}', 'headless:=true'],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        # A generous limit for the whole run: five processes start (each importing torch/mujoco)
        # and train on a loaded 2-core machine too (issue 16); it is ~40 s idle.
        finished = spin_until(observer, lambda: proc.poll() is not None, 3 * STARTUP_TIMEOUT)
        if not finished:
            os.killpg(proc.pid, signal.SIGINT)
        output = proc.communicate(timeout=STARTUP_TIMEOUT)[0]
        # The last latched phase may still be on its way to the observer when the graph exits.
        spin_until(observer, lambda: observer.phases and observer.phases[-1] == 'done',
                   EVENT_TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert finished, output[-3000:]
    assert proc.returncode == 0, output[-3000:]

    metrics = json.loads((run_dir / 'metrics.json').read_text())
    assert metrics['env_steps'] == STEPS and metrics['updates'] > 0
    assert metrics['unsafe_states_train'] == 0 and metrics['unsafe_states_eval'] == 0
    # mu never leaves S (margins included) while training.
    assert metrics['safe_set_unsafe_states_train'] == 0
    assert metrics['eval_episodes'] == 2 and metrics['policy_version'] >= 2
    assert (run_dir / 'checkpoints' / 'graph_learner.pt').exists()
    assert (run_dir / 'policy.pt').exists() and (run_dir / 'log.jsonl').exists()
    # Progress lines with rate, ETA and the unsafe count.
    assert 'steps/s, ETA' in output and 'unsafe states 0' in output
    assert 'q_learner: final extraction: 30 steps in' in output  # the engine's progress line
    assert metrics['runner'] == 'train_sim graph' and len(metrics['config_sha256']) == 64
    # The summary table ssq-train prints, from the same code.
    assert 'status' in output and 'success_rate_policy' in output
    # No command was dropped for answering another state: the executor's answers to an ended
    # evaluation episode's last state are expected and dropped quietly (mujoco_sim counts them).
    assert 'COMMAND_FOR_OTHER_STATE' not in output, output[-3000:]

    # The learner counted transitions and updates as they came.
    steps = [int(s['steps']) for s in observer.learner]
    assert steps and max(steps) == STEPS and int(observer.learner[-1]['updates']) > 0
    assert observer.phases[0] == 'train' and observer.phases[-1] == 'done'
    assert {'extract', 'eval_policy', 'eval_behavior'} <= set(observer.phases)
    # The executor got the final policy and moved the arm in its phase, inside the support.
    assert int(observer.executor_values.get('policy_version', 0)) == metrics['policy_version']
    assert int(observer.executor_values.get('OK', 0)) > 0
    assert set(metrics['executor_statuses']) <= {'OK', 'ACTION_OUTSIDE_SUPPORT_FALLBACK'}
    # Its actions came back as transitions of the policy (for its value calibration), and
    # mu's held-out episodes as transitions of eval_behavior.
    codes = {phase: observer.transition_phases.count(code)
             for phase, code in PHASE_CODES.items()}
    assert codes[RunPhase.EVAL_POLICY] > 0 and codes[RunPhase.EVAL_BEHAVIOR] > 0
    # The learner's env_steps == STEPS above is the exact count; this observer joins the graph
    # through discovery and may miss the first transitions of a fast run.
    assert codes[RunPhase.TRAIN] > 0
    moved = np.array(observer.positions['eval_policy'])
    assert np.ptp(moved, axis=0).max() > 0.05
    # The independent monitor: both judges saw states, none unsafe; every marker namespace. It
    # joins through discovery and publishes its counts periodically, so the last count this
    # observer holds may miss the first and the last states (the referee's own count is exact
    # in metrics.json above); most of the STEPS training states and the evaluation's it saw.
    assert int(observer.safety['referee_states']) > STEPS / 2
    assert int(observer.safety['safe_set_states']) > STEPS / 2
    assert observer.safety['referee_unsafe_states'] == '0'
    assert observer.safety['safe_set_unsafe_states_train'] == '0'
    assert observer.safety['referee_unsafe_states_eval'] == '0'
    assert observer.namespaces == set(MARKER_NAMESPACES)


def _start(commands, name):
    return subprocess.Popen(commands[name], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def test_a_killed_learner_resumes_from_its_checkpoint(observer, tmp_path):
    run_dir = tmp_path / 'run'
    commands = plan_graph(GRAPHS['train_sim'], {'steps': '100000', 'run_dir': str(run_dir),
                                                'config': str(TINY)}, BIN).commands
    procs = {name: _start(commands, name) for name in ('mujoco_sim', 'safe_behavior',
                                                       'q_learner')}
    checkpoint = run_dir / 'checkpoints' / 'graph_learner.pt'
    try:
        assert spin_until(observer, lambda: checkpoint.exists() and observer.learner
                          and int(observer.learner[-1]['steps']) >= 120, 2 * STARTUP_TIMEOUT)
        procs['q_learner'].send_signal(signal.SIGKILL)
        procs['q_learner'].wait(timeout=EVENT_TIMEOUT)
        killed_at = int(observer.learner[-1]['steps'])
        observer.learner.clear()
        procs['q_learner'] = _start(commands, 'q_learner')
        assert spin_until(observer, lambda: len(observer.learner) >= 2 and
                          int(observer.learner[-1]['steps']) > killed_at, STARTUP_TIMEOUT)
        assert int(observer.learner[0]['steps']) >= 100  # never restarted from zero
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in procs.values():
            try:
                proc.wait(timeout=EVENT_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
    log = procs['q_learner'].communicate()[0]
    assert procs['q_learner'].returncode == 0, log[-2000:]
    # It resumed from a checkpoint (taken every 100 steps) and went on from there.
    resumed_at = int(re.search(r'resumed at step (\d+)', log).group(1))
    assert resumed_at >= 100 and resumed_at % 100 == 0
    assert resumed_at <= killed_at + 100


@pytest.mark.parametrize('executable, parameter, value', [
    ('safe_behavior', 'max_lead', '0'),
    ('mujoco_sim', 'mode', 'fast'),
    ('q_learner', 'config_file', '/nonexistent/train.yaml'),
    ('policy_executor', 'max_stamp_age', '-1.0'),
    ('safety_monitor', 'trail_length', '1'),
])
def test_a_bad_parameter_stops_the_node_at_start_naming_it(executable, parameter, value):
    proc = subprocess.run([str(BIN / executable), '--ros-args', '-p', f'{parameter}:={value}'],
                          capture_output=True, text=True, timeout=STARTUP_TIMEOUT)
    assert proc.returncode == 2
    assert 'bad configuration' in proc.stderr and parameter.split('_')[0] in proc.stderr
