"""ssq-launch: run an ssq_ros node graph as processes, without `ros2 launch`.

    ssq-launch train_sim steps:=2000 run_dir:=runs/first
    ssq-launch deploy_hw controller:=forward_position_controller --dry-run

Arguments are the launch files' arguments (name:=value). Ctrl-C or SIGTERM stops every node.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ssq_ros.graph import GRAPHS
from ssq_ros.launcher import parse_overrides, plan_graph, run_graph


def graphs_help() -> str:
    lines = ['graphs and their arguments (name:=default):']
    for graph in GRAPHS.values():
        lines.append(f'  {graph.name}: {graph.description}')
        lines += [f'      {a.name}:={a.default!s}  {a.description}' for a in graph.arguments]
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog='ssq-launch', description=__doc__.splitlines()[0],
                                     epilog=graphs_help(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('graph', choices=sorted(GRAPHS), help='which graph to run')
    parser.add_argument('arguments', nargs='*', metavar='name:=value',
                        help='launch arguments of the graph')
    parser.add_argument('--dry-run', action='store_true',
                        help='print the node commands instead of running them')
    args = parser.parse_intermixed_args(argv)
    try:
        overrides = parse_overrides(args.arguments)
    except ValueError as exc:
        parser.error(str(exc))
    graph = GRAPHS[args.graph]
    if args.dry_run:
        try:
            plan = plan_graph(graph, overrides, Path(sys.executable).parent)
        except ValueError as exc:
            parser.error(str(exc))
        for note in plan.notes:
            print(f'# {note}')
        for name, cmd in plan.commands.items():
            missing = ' (executable not installed)' if name in plan.missing else ''
            print(f'# {name}{missing}\n{shlex.join(cmd)}')
        sys.exit(0)
    sys.exit(run_graph(graph, overrides))
