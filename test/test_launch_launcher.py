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
from dataclasses import replace
from pathlib import Path

import pytest
from ros_helpers import STARTUP_TIMEOUT, wait_until
from test_package import console_scripts

from ssq_ros.graph import GRAPHS, FromArg, LaunchArg, node_exit, robot_file
from ssq_ros.launcher import (
    _supervise,
    node_command,
    parse_overrides,
    plan_graph,
    run_graph,
    yaml_literal,
)
from ssq_ros.paths import config_path

PLANNED = {'mujoco_sim', 'safe_behavior', 'q_learner', 'policy_executor', 'safety_monitor'}
INSTALLED = {e.split('=')[0].strip() for e in console_scripts()}
BIN = Path(sys.executable).parent
DATA = Path(__file__).resolve().parent / 'data'
# Each launch test waits up to STARTUP_TIMEOUT for a few events in turn (issue 16).
LAUNCH_TEST_TIMEOUT = 5 * STARTUP_TIMEOUT


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


def test_the_learner_is_the_node_whose_exit_ends_a_graph():
    ending = {name: [n.name for n in g.nodes if n.ends_graph] for name, g in GRAPHS.items()}
    assert ending == {'train_sim': ['q_learner'], 'deploy_sim': [], 'deploy_hw': ['q_learner']}


def test_training_in_simulation_respawns_its_nodes_a_real_arm_only_its_learner():
    respawned = {name: {n.name for n in g.nodes if n.respawn} for name, g in GRAPHS.items()}
    assert respawned == {'train_sim': PLANNED, 'deploy_sim': set(), 'deploy_hw': {'q_learner'}}
    # Never a hardware_interface: a new one would start with its e-stop latch released.
    assert not any(n.respawn for g in GRAPHS.values() for n in g.nodes
                   if n.executable == 'hardware_interface')
    for spec in GRAPHS['train_sim'].nodes:
        if spec.respawn:
            assert 0 < spec.respawn_delay <= 5 and 1 <= spec.respawn_max_retries <= 10
    with pytest.raises(ValueError, match='respawn_max_retries'):
        replace(GRAPHS['train_sim'].nodes[1], respawn_max_retries=0)


@pytest.mark.parametrize('ends, code, respawns, outcome', [
    (False, -9, 0, (False, True, True, 'died (exit code -9); respawning it in 1 s (respawn 1 '
                                       'of at most 3)')),
    (False, 1, 2, (False, True, True, 'died (exit code 1); respawning it in 1 s (respawn 3 of '
                                      'at most 3)')),
    (False, -9, 3, (True, True, False, 'died (exit code -9) after 3 respawns, the limit '
                                       '(respawn_max_retries); not respawning it again')),
    (True, -9, 0, (False, True, True, 'died (exit code -9); respawning it in 1 s (respawn 1 '
                                      'of at most 3)')),
    (True, 0, 0, (True, False, False, 'finished')),  # the learner's clean end is the end
    (False, 0, 0, (False, False, False, 'exited cleanly on its own')),  # never respawned
    (False, 2, 0, (True, True, False, 'died (exit code 2)')),  # bad config: would fail again
])
def test_node_exit_respawns_a_crashed_node_up_to_its_limit(ends, code, respawns, outcome):
    spec = replace(GRAPHS['train_sim'].nodes[2], ends_graph=ends)
    assert spec.respawn and spec.respawn_delay == 1.0 and spec.respawn_max_retries == 3
    end = node_exit(spec, code, respawns)
    assert (end.ends_graph, end.failed, end.respawn, end.message) == \
        outcome[:3] + (f'{spec.name} {outcome[3]}',)


@pytest.mark.parametrize('ends, code, outcome', [
    (True, 0, (True, False, 'finished')),
    (True, 1, (True, True, 'died (exit code 1)')),
    (False, 0, (False, False, 'exited cleanly on its own')),
    (False, 2, (True, True, 'died (exit code 2)')),
    (False, -9, (True, True, 'died (exit code -9)')),
])
def test_node_exit_decides_when_a_graph_ends(ends, code, outcome):
    spec = GRAPHS['deploy_sim'].nodes[2]
    end = node_exit(replace(spec, ends_graph=ends), code)
    assert (end.ends_graph, end.failed, end.message) == \
        outcome[:2] + (f'{spec.name} {outcome[2]}',)


class Exited:
    """A Popen that has exited (`code`) or runs (None), for `_supervise`."""

    pid = 4242

    def __init__(self, code):
        self.code = code

    def poll(self):
        return self.code


@pytest.mark.parametrize('graph', GRAPHS.values(), ids=list(GRAPHS))
def test_ssq_launch_ends_a_graph_exactly_when_node_exit_says(graph):
    # A short respawn delay: the supervisor waits it out in wall-clock time.
    specs = {spec.name: replace(spec, respawn_delay=0.01) if spec.respawn else spec
             for spec in graph.nodes}
    for name, spec in specs.items():
        for code in (0, 1, -9):
            procs = {other: Exited(code if other == name else None) for other in specs}
            started = []
            end = node_exit(spec, code)
            polls = iter(range(20))
            # A respawned node: stop once it was started again; else after 10 polls.
            stop = (lambda s=started: bool(s)) if end.respawn else (lambda p=polls: next(p) >= 10)
            out = io.StringIO()
            result = _supervise(procs, specs, stop, out,
                                lambda n, s=started: s.append(n) or Exited(None))
            if end.respawn:
                assert started == [name] and out.getvalue().splitlines() == [
                    f'ssq-launch: {end.message}',
                    f'ssq-launch: respawned {name} (pid 4242, respawn 1 of at most 3)',
                    'ssq-launch: stopping the graph']
                assert result == 0
                continue
            if end.ends_graph:
                assert out.getvalue() == f'ssq-launch: {end.message}; stopping the graph\n'
                assert result == (1 if end.failed else 0)
            else:  # reported once, and the rest ran on until the stop request
                assert out.getvalue().splitlines() == [
                    f'ssq-launch: {end.message}; the rest of the graph goes on',
                    'ssq-launch: stopping the graph']
                assert result == 0


def test_a_node_crashing_in_a_loop_ends_the_graph_at_its_respawn_limit():
    specs = {spec.name: replace(spec, respawn_delay=0.01) for spec in GRAPHS['train_sim'].nodes}
    procs = {name: Exited(-6 if name == 'safe_behavior' else None) for name in specs}
    started = []
    out = io.StringIO()
    result = _supervise(procs, specs, lambda: False, out,
                        lambda n: started.append(n) or Exited(-6))
    assert result == 1 and started == ['safe_behavior'] * 3
    lines = out.getvalue().splitlines()
    assert len(lines) == 7 and lines[-1] == (
        'ssq-launch: safe_behavior died (exit code -6) after 3 respawns, the limit '
        '(respawn_max_retries); not respawning it again; stopping the graph')


def test_ssq_launch_ends_when_every_node_has_exited_cleanly():
    specs = {spec.name: spec for spec in GRAPHS['deploy_sim'].nodes}
    out = io.StringIO()
    assert _supervise({name: Exited(0) for name in specs}, specs, lambda: False, out) == 0
    assert out.getvalue().endswith('ssq-launch: every node has exited\n')


def write_config(path, robot):
    path.write_text((DATA / 'train_sim_tiny.yaml').read_text().replace(
        'robot: robot.yaml', f'robot: {robot}'))
    return str(path)


def test_robot_description_comes_from_the_runs_robot(tmp_path):
    ur5_run = write_config(tmp_path / 'ur5_run.yaml', DATA / 'ur5.yaml')
    for name in ('train_sim', 'deploy_sim'):
        graph = GRAPHS[name]
        assert robot_file(graph.resolve_args({})) == config_path('robot.yaml')
        assert robot_file(graph.resolve_args({'config': ur5_run})) == DATA / 'ur5.yaml'
    hw = GRAPHS['deploy_hw']
    assert robot_file(hw.resolve_args({})) == config_path('robot.yaml')
    assert robot_file(hw.resolve_args({'config': ur5_run})) == DATA / 'ur5.yaml'
    panda = str(DATA / 'panda.yaml')
    assert robot_file(hw.resolve_args({'robot_config': panda})) == DATA / 'panda.yaml'
    assert robot_file(hw.resolve_args({'robot_config': panda, 'config': ur5_run})) == \
        DATA / 'panda.yaml'  # the arm's own yaml wins over the experiment's


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
        out = subprocess.run(cli + ['train_sim'], capture_output=True, text=True,
                             timeout=STARTUP_TIMEOUT)
        assert out.returncode == 2 and 'executables not found' in out.stdout


# A two-node graph of real hardware_interface processes, run by the real launcher.
RUNNER = textwrap.dedent('''
    import os
    import sys
    from dataclasses import replace
    from ssq_ros.graph import FromArg, Graph, HARDWARE_INTERFACE, LaunchArg
    from ssq_ros.launcher import parse_overrides, run_graph
    ENDS = os.environ.get('ENDS_GRAPH')
    second = replace(HARDWARE_INTERFACE, name='hw_position',
                     parameters=(('controller', 'forward_position_controller'),
                                 ('control_rate', FromArg('rate'))),
                     respawn=bool(os.environ.get('RESPAWN')), respawn_delay=0.2)
    # `config` too: HARDWARE_INTERFACE may take the experiment yaml from it.
    graph = Graph('test', 'two interfaces', (LaunchArg('rate', '50.0', 'Hz', 'float'),
                                             LaunchArg('config', '', 'experiment yaml')),
                  (HARDWARE_INTERFACE, replace(second, ends_graph=ENDS == 'hw_position')))
    sys.exit(run_graph(graph, parse_overrides(sys.argv[1:]), grace=60.0))
''')


class Runner:
    """The launcher in a subprocess; its output is collected by a thread, so waits can time out."""

    def __init__(self, *args, ends_graph='', respawn=False):
        self.proc = subprocess.Popen([sys.executable, '-c', RUNNER, *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, 'ENDS_GRAPH': ends_graph,
                                          'RESPAWN': '1' if respawn else ''})
        self.lines = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self):
        return ''.join(self.lines)

    def wait_for(self, pattern, timeout=STARTUP_TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.findall(pattern, self.output)
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f'{pattern!r} not seen in:\n{self.output}')

    def finish(self, timeout=STARTUP_TIMEOUT):
        code = self.proc.wait(timeout)
        self.reader.join(5)
        return code, self.output

    def started_pids(self):
        self.wait_for(r'started hw_position')
        return {name: int(pid) for name, pid in
                self.wait_for(r'started (\S+) \(pid (\d+)\)')}

    def wait_until_both_run(self):
        """Both nodes past start-up (their first log line): a node signalled while still
        importing never reaches its shutdown hook (the test failed so on a busy machine)."""
        self.wait_for(r'\[hardware_interface\]: velocity commands')
        self.wait_for(r'\[hw_position\]: position commands')


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.timeout(LAUNCH_TEST_TIMEOUT)
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


@pytest.mark.timeout(LAUNCH_TEST_TIMEOUT)
def test_launcher_exits_nonzero_when_a_node_dies():
    runner = Runner()
    pids = runner.started_pids()
    runner.wait_until_both_run()
    os.kill(pids['hw_position'], signal.SIGKILL)
    code, out = runner.finish()
    assert code == 1
    assert 'hw_position died (exit code -9)' in out
    assert 'shut down with a stop command sent' in out  # the survivor stopped cleanly
    assert not any(alive(p) for p in pids.values())


@pytest.mark.timeout(LAUNCH_TEST_TIMEOUT)
def test_launcher_respawns_a_killed_node_and_then_stops_cleanly():
    runner = Runner(respawn=True)
    pids = runner.started_pids()
    runner.wait_until_both_run()
    os.kill(pids['hw_position'], signal.SIGKILL)
    runner.wait_for(r'hw_position died \(exit code -9\); respawning it in 0.2 s \(respawn 1 of '
                    r'at most 3\)')
    new_pid = int(runner.wait_for(r'respawned hw_position \(pid (\d+), respawn 1 of at most '
                                  r'3\)')[0])
    assert new_pid != pids['hw_position']
    # The new process is up (a second start-up line), the other node was never touched.
    wait_until(lambda: runner.output.count('[hw_position]: position commands') >= 2,
               STARTUP_TIMEOUT, lambda: f'a second start-up line in:\n{runner.output}')
    assert alive(pids['hardware_interface']) and runner.proc.poll() is None
    runner.proc.send_signal(signal.SIGINT)
    code, out = runner.finish()
    assert code == 0, out  # the handled crash is not the graph's failure
    assert out.count('shut down with a stop command sent') == 2
    assert not any(alive(p) for p in (*pids.values(), new_pid))


@pytest.mark.timeout(LAUNCH_TEST_TIMEOUT)
def test_a_node_that_refuses_its_parameters_is_not_respawned():
    code, out = Runner('rate:=5000.0', respawn=True).finish()
    assert code == 1 and 'hw_position died (exit code 2); stopping the graph' in out
    assert 'respawn' not in out


@pytest.mark.timeout(LAUNCH_TEST_TIMEOUT)
@pytest.mark.parametrize('ends_graph', [True, False], ids=['ending', 'other'])
def test_a_clean_exit_ends_the_graph_only_for_its_ending_node(ends_graph):
    runner = Runner(ends_graph='hw_position' if ends_graph else '')
    pids = runner.started_pids()
    runner.wait_until_both_run()
    os.kill(pids['hw_position'], signal.SIGINT)  # it alone stops, cleanly (exit code 0)
    if ends_graph:  # as q_learner when training is over
        code, out = runner.finish()
        assert code == 0 and 'hw_position finished; stopping the graph' in out
    else:
        runner.wait_for('hw_position exited cleanly on its own; the rest of the graph goes on')
        time.sleep(0.5)
        assert alive(pids['hardware_interface']) and runner.proc.poll() is None
        runner.proc.send_signal(signal.SIGINT)
        code, out = runner.finish()
        assert code == 0
    assert out.count('shut down with a stop command sent') == 2
    assert not any(alive(p) for p in pids.values())


@pytest.mark.timeout(LAUNCH_TEST_TIMEOUT)
def test_launcher_exits_nonzero_when_a_node_refuses_its_parameters():
    code, out = Runner('rate:=5000.0').finish()
    assert code == 1
    assert 'control_rate' in out and 'hw_position died (exit code 2)' in out


def test_node_command_format_matches_launch_ros_conventions():
    spec = GRAPHS['deploy_sim'].nodes[2]
    cmd = node_command(spec, GRAPHS['deploy_sim'].resolve_args({}), Path('/b'))
    assert cmd[0] == '/b/hardware_interface' and cmd[1:4] == ['--ros-args', '-r',
                                                              '__node:=hardware_interface']
