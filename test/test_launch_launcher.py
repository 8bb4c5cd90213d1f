"""ssq-launch: the graph description, the commands it builds, and real runs of node processes."""
import io
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from test_package import console_scripts

from ssq_ros.graph import GRAPHS, FromArg, LaunchArg
from ssq_ros.launcher import (
    node_command,
    parse_overrides,
    plan_graph,
    run_graph,
    yaml_literal,
)

PLANNED = {'mujoco_sim', 'safe_behavior', 'q_learner', 'policy_executor', 'safety_monitor'}
INSTALLED = {e.split('=')[0].strip() for e in console_scripts()}
BIN = Path(sys.executable).parent


@pytest.mark.parametrize('graph', GRAPHS.values(), ids=list(GRAPHS))
def test_graph_descriptions_are_consistent(graph):
    args = graph.resolve_args({})  # every default converts to its type
    bools = {a.name for a in graph.arguments if a.type == 'bool'}
    names = [n.name for n in graph.nodes]
    assert len(names) == len(set(names))
    for node in graph.nodes:
        if node.package == 'ssq_ros':
            assert node.executable in INSTALLED | PLANNED, node.executable
        for _, value in node.parameters:
            if isinstance(value, FromArg):
                assert value.arg in args, (node.name, value.arg)
        assert {a for a in (node.if_arg, node.unless_arg) if a} <= bools
        assert all(os.path.isfile(p) for p in node.param_file_paths())
        assert all(os.path.isfile(a) for a in node.resolved_arguments() if a.endswith('.rviz'))


def test_expected_graph_arguments():
    args = {name: {a.name for a in g.arguments} for name, g in GRAPHS.items()}
    assert {'config', 'run_dir', 'steps', 'headless', 'rviz'} <= args['train_sim']
    assert {'controller', 'controller_kind', 'train_on_robot'} <= args['deploy_hw']


def test_train_on_robot_swaps_the_executor_for_the_learning_nodes():
    graph = GRAPHS['deploy_hw']
    execute = plan_graph(graph, {}, BIN).commands
    train = plan_graph(graph, {'train_on_robot': 'true'}, BIN).commands
    assert 'policy_executor' in execute and 'safe_behavior' not in execute
    assert {'safe_behavior', 'q_learner'} <= set(train) and 'policy_executor' not in train


def test_commands_carry_names_files_typed_parameters_and_remaps():
    plan = plan_graph(GRAPHS['train_sim'], {'steps': '50', 'run_dir': 'runs/x y'}, BIN)
    assert 'robot_state_publisher' not in plan.commands and 'rviz2' not in plan.commands
    assert any('robot_state_publisher' in n for n in plan.notes)
    learner = plan.commands['q_learner']
    assert learner[:4] == [f'{BIN}/q_learner', '--ros-args', '-r', '__node:=q_learner']
    assert '-p' in learner and 'steps:=50' in learner and 'run_dir:="runs/x y"' in learner
    behavior = plan.commands['safe_behavior']
    assert '/ssq/joint_command:=/forward_velocity_controller/commands' in behavior
    hw = plan_graph(GRAPHS['deploy_hw'], {}, BIN).commands['hardware_interface']
    assert hw[hw.index('--params-file') + 1].endswith('config/hardware.yaml')


@pytest.mark.parametrize('value, text', [(True, 'true'), (3, '3'), (0.5, '0.5'),
                                         ('true', '"true"'), ('', '""'), ('a"b', '"a\\"b"')])
def test_parameter_values_keep_their_type(value, text):
    assert yaml_literal(value) == text


def test_bad_launch_arguments_name_the_argument():
    with pytest.raises(ValueError, match="unknown launch argument 'stpes'"):
        plan_graph(GRAPHS['train_sim'], {'stpes': '1'}, BIN)
    with pytest.raises(ValueError, match='rviz:=maybe: expected true or false'):
        plan_graph(GRAPHS['train_sim'], {'rviz': 'maybe'}, BIN)
    with pytest.raises(ValueError, match='name:=value'):
        parse_overrides(['steps=3'])
    assert LaunchArg('x', '1', '', 'float').convert('2') == 2.0


def test_missing_executables_are_named_and_nothing_starts(tmp_path):
    out = io.StringIO()
    assert run_graph(GRAPHS['deploy_hw'], {}, bin_dir=tmp_path, out=out) == 2
    assert 'executables not found' in out.getvalue()
    assert 'hardware_interface' in out.getvalue() and 'started' not in out.getvalue()


def test_cli_rejects_bad_arguments_and_missing_executables():
    cli = [str(BIN / 'ssq-launch')]
    out = subprocess.run(cli + ['train_sim', 'steps:=many'], capture_output=True, text=True)
    assert out.returncode == 2 and 'steps:=many: expected int' in out.stdout
    dry = subprocess.run(cli + ['deploy_hw', '--dry-run'], capture_output=True, text=True)
    assert dry.returncode == 0 and '__node:=hardware_interface' in dry.stdout
    if not PLANNED <= INSTALLED:
        out = subprocess.run(cli + ['train_sim'], capture_output=True, text=True, timeout=30)
        assert out.returncode == 2 and 'executables not found' in out.stdout


# A two-node graph of real hardware_interface processes, run by the real launcher.
RUNNER = textwrap.dedent('''
    import sys
    from dataclasses import replace
    from ssq_ros.graph import FromArg, Graph, HARDWARE_INTERFACE, LaunchArg
    from ssq_ros.launcher import parse_overrides, run_graph
    second = replace(HARDWARE_INTERFACE, name='hw_position',
                     parameters=(('controller', 'forward_position_controller'),
                                 ('control_rate', FromArg('rate'))))
    graph = Graph('test', 'two interfaces', (LaunchArg('rate', '50.0', 'Hz', 'float'),),
                  (HARDWARE_INTERFACE, second))
    sys.exit(run_graph(graph, parse_overrides(sys.argv[1:]), grace=3.0))
''')


class Runner:
    """The launcher in a subprocess; its output is collected by a thread, so waits can time out."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([sys.executable, '-c', RUNNER, *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self):
        return ''.join(self.lines)

    def wait_for(self, pattern, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.findall(pattern, self.output)
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f'{pattern!r} not seen in:\n{self.output}')

    def finish(self, timeout=20.0):
        code = self.proc.wait(timeout)
        self.reader.join(5)
        return code, self.output

    def started_pids(self):
        self.wait_for(r'started hw_position')
        return {name: int(pid) for name, pid in
                self.wait_for(r'started (\S+) \(pid (\d+)\)')}


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.timeout(60)
@pytest.mark.parametrize('stop_signal', [signal.SIGINT, signal.SIGTERM], ids=['INT', 'TERM'])
def test_launcher_starts_and_cleanly_stops_a_graph(stop_signal):
    runner = Runner()
    pids = runner.started_pids()
    assert set(pids) == {'hardware_interface', 'hw_position'}
    runner.wait_for(r'\[hw_position\]: position commands .* at 50 Hz')  # -p reached the node
    runner.wait_for(r'\[hardware_interface\]: velocity commands')  # the params file too
    runner.proc.send_signal(stop_signal)
    code, out = runner.finish()
    assert code == 0, out
    assert out.count('shut down with a stop command sent') == 2
    assert not any(alive(p) for p in pids.values())


@pytest.mark.timeout(60)
def test_launcher_exits_nonzero_when_a_node_dies():
    runner = Runner()
    pids = runner.started_pids()
    runner.wait_for(r'\[hw_position\]: position commands')
    os.kill(pids['hw_position'], signal.SIGKILL)
    code, out = runner.finish()
    assert code == 1
    assert 'hw_position died (exit code -9)' in out
    assert 'shut down with a stop command sent' in out  # the survivor stopped cleanly
    assert not any(alive(p) for p in pids.values())


@pytest.mark.timeout(60)
def test_launcher_exits_nonzero_when_a_node_refuses_its_parameters():
    code, out = Runner('rate:=5000.0').finish(timeout=30)
    assert code == 1
    assert 'control_rate' in out and 'hw_position died (exit code 2)' in out


def test_node_command_format_matches_launch_ros_conventions():
    spec = GRAPHS['deploy_sim'].nodes[2]
    cmd = node_command(spec, GRAPHS['deploy_sim'].resolve_args({}), Path('/b'))
    assert cmd[0] == '/b/hardware_interface' and cmd[1:4] == ['--ros-args', '-r',
                                                              '__node:=hardware_interface']
