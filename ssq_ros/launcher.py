"""Start a graph of `ssq_ros.graph` as plain processes, for machines without `ros2 launch`.

Each node runs as its console script with `--ros-args -r __node:=NAME --params-file ... -p ...`,
exactly what launch_ros would pass. SIGINT/SIGTERM are forwarded to every node. When a node exits
on its own, `ssq_ros.graph.node_exit` decides, as for `ros2 launch`: a crashed node with
`respawn` is started again after its `respawn_delay` (at most `respawn_max_retries` times, as
launch_ros's `Node(respawn=...)`), the graph's ending node (q_learner: training is over) or a
failed node that is not respawned ends the whole graph (exit code 0 if it finished cleanly, 1 if
it failed). Nodes that need a ROS 2 installation (robot_state_publisher, rviz2) are skipped
with a note.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ssq_ros.graph import STOP_GRACE, Graph, NodeSpec, node_exit


def parse_overrides(items: list[str]) -> dict[str, str]:
    """`['steps:=100', 'rviz:=true']` -> {'steps': '100', 'rviz': 'true'}."""
    out = {}
    for item in items:
        name, sep, value = item.partition(':=')
        if not sep or not name:
            raise ValueError(f'{item!r}: launch arguments are written name:=value')
        out[name] = value
    return out


def yaml_literal(value: Any) -> str:
    """`value` as the YAML text `-p name:=...` expects, keeping its type (a string stays one)."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (tuple, list)):  # a string array: a JSON list is a YAML flow sequence
        return json.dumps([str(item) for item in value])
    return json.dumps(str(value))  # a JSON string is a double-quoted YAML scalar


def node_command(spec: NodeSpec, args: dict[str, Any], bin_dir: Path) -> list[str]:
    cmd = [str(bin_dir / spec.executable), *spec.resolved_arguments(),
           '--ros-args', '-r', f'__node:={spec.name}']
    for path in spec.param_file_paths():
        cmd += ['--params-file', path]
    for name, value in spec.parameter_values(args).items():
        cmd += ['-p', f'{name}:={yaml_literal(value)}']
    for source, target in spec.remappings:
        cmd += ['-r', f'{source}:={target}']
    return cmd


@dataclass
class Plan:
    """What `run_graph` will start, and what it leaves out and why."""

    commands: dict[str, list[str]]
    notes: list[str]
    missing: list[str]  # nodes whose executable is not installed


def plan_graph(graph: Graph, overrides: dict[str, str], bin_dir: Path) -> Plan:
    args = graph.resolve_args(overrides)
    plan = Plan({}, [], [])
    for spec in graph.nodes:
        if not spec.enabled(args):
            continue
        if not spec.venv_runnable:
            plan.notes.append(f'not starting {spec.name}: it needs a ROS 2 installation '
                              f'(`ros2 launch ssq_ros {graph.name}.launch.py` starts it)')
            continue
        if not (bin_dir / spec.executable).is_file():
            plan.missing.append(spec.name)
        plan.commands[spec.name] = node_command(spec, args, bin_dir)
    return plan


def run_graph(graph: Graph, overrides: dict[str, str], bin_dir: Path | None = None,
              grace: float = STOP_GRACE, out: TextIO = sys.stdout) -> int:
    """Run `graph` until a signal or until a node's exit ends it (`node_exit`); returns the
    exit code.

    0: stopped by SIGINT/SIGTERM with every node exiting cleanly, or the ending node finished
    with 0. 1: a node failed or died. 2: bad launch arguments or missing executables (nothing
    started).
    """
    bin_dir = Path(sys.executable).parent if bin_dir is None else bin_dir
    try:
        plan = plan_graph(graph, overrides, bin_dir)
    except ValueError as exc:
        print(f'ssq-launch: {exc}', file=out)
        return 2
    for note in plan.notes:
        print(f'ssq-launch: {note}', file=out)
    if plan.missing:
        executables = ', '.join(Path(plan.commands[n][0]).name for n in plan.missing)
        print(f'ssq-launch: executables not found in {bin_dir}: {executables} '
              '(is ssq_ros installed in this environment?)', file=out)
        return 2

    stop_signal: list[int] = []
    handlers = {s: signal.signal(s, lambda signum, _: stop_signal.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    procs: dict[str, subprocess.Popen] = {}
    code = 1

    def start(name: str) -> subprocess.Popen:
        # Own process group: a terminal's Ctrl-C reaches the nodes once, through us.
        procs[name] = subprocess.Popen(plan.commands[name], start_new_session=True)
        return procs[name]

    try:
        for name in plan.commands:
            start(name)
            print(f'ssq-launch: started {name} (pid {procs[name].pid})', file=out, flush=True)
        specs = {spec.name: spec for spec in graph.nodes}
        code = _supervise(procs, specs, lambda: bool(stop_signal), out, start)
    finally:
        code = max(code, _shut_down(procs, grace, out))
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return code


def _supervise(procs: dict[str, subprocess.Popen], specs: dict[str, NodeSpec],
               stop_requested: Callable[[], bool], out: TextIO,
               start: Callable[[str], subprocess.Popen] | None = None) -> int:
    """Watch the nodes until a stop request or an exit that ends the graph (`node_exit`);
    `start(name)` starts a node again (and puts it into `procs`) when it is respawned."""
    running = dict(procs)
    respawns = dict.fromkeys(specs, 0)
    due: dict[str, float] = {}  # crashed nodes waiting for their respawn_delay
    while not stop_requested():
        for name, proc in list(running.items()):
            code = proc.poll()
            if code is None:
                continue
            del running[name]
            end = node_exit(specs[name], code, respawns[name])
            if end.respawn and start is not None:
                print(f'ssq-launch: {end.message}', file=out, flush=True)
                procs.pop(name, None)  # handled: its exit code is not the graph's failure
                due[name] = time.monotonic() + specs[name].respawn_delay
                continue
            if end.ends_graph:
                print(f'ssq-launch: {end.message}; stopping the graph', file=out, flush=True)
                return 1 if end.failed else 0
            print(f'ssq-launch: {end.message}; the rest of the graph goes on', file=out,
                  flush=True)
        for name, when in list(due.items()):
            if time.monotonic() >= when:
                del due[name]
                respawns[name] += 1
                running[name] = start(name)
                print(f'ssq-launch: respawned {name} (pid {running[name].pid}, respawn '
                      f'{respawns[name]} of at most {specs[name].respawn_max_retries})',
                      file=out, flush=True)
        if not running and not due:
            print('ssq-launch: every node has exited', file=out, flush=True)
            return 0
        time.sleep(0.05)
    print('ssq-launch: stopping the graph', file=out, flush=True)
    return 0


def _shut_down(procs: dict[str, subprocess.Popen], grace: float, out: TextIO) -> int:
    """SIGINT every running node, then SIGTERM and SIGKILL after `grace` seconds each;
    returns 1 if any node exited with an error or had to be killed."""
    failed = 0
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        running = [p for p in procs.values() if p.poll() is None]
        if not running:
            break
        for proc in running:
            proc.send_signal(sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(p.poll() is None for p in running):
            time.sleep(0.02)
        if sig != signal.SIGINT:
            failed = 1
    for name, proc in procs.items():
        code = proc.wait()
        if code not in (0, -signal.SIGINT):
            print(f'ssq-launch: {name} exited with code {code}', file=out, flush=True)
            failed = 1
    return failed
