"""Five arms, each configured only by ssq-robot-setup: the referee's count, mu's success rate and
the support check's time per decision, optionally one ssq-train each.

    .venv/bin/python -m bench.bench_arms [--arms ssq_arm panda ...] [--demo-steps 20000]
        [--referee-stride 1] [--timing-states 1000] [--timing-rounds 5] [--train]
        [--train-steps 5000] [--runs runs/arms] [--out bench/results/arms.json] [--reuse]

Per arm: (a) `ssq-sim-demo --robot ROBOT [--sim SIM] --steps N --referee-stride S --out
RUNS/ARM` (mu from random safe starts toward random goals; the MuJoCo referee judges every S-th
2 ms physics step from the URDF's own geometry, self-collision pairs included); (b) the support
check's time per decision at the first `--timing-states` states of that same run (replayed: the
same seed gives the same states), two ways: `SupportCheck.is_safe` over the candidate set mu
hands it (13 primitives, hold included) and mu's whole decision (`SafeBehaviorController.act`);
(c) with `--train`, `ssq-train --config config/arms/ARM_train.yaml --steps M --out
RUNS/ARM/train`. `--reuse` takes a run folder's sim_demo.json / metrics.json when it matches the
requested budget (for a table assembled from runs made one by one) and marks the row so.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssq_ros.cli import sim_demo
from ssq_ros.cli import train as train_cli
from ssq_ros.config import to_dict
from ssq_ros.paths import config_path, share_dir
from ssq_ros.safety.self_collision import all_pairs
from ssq_ros.sim.env import ReachAvoidEnv, ReachAvoidSetup
from ssq_ros.training.provenance import provenance

ROOT = share_dir()
RESULTS = Path(__file__).resolve().parent / 'results' / 'arms.json'


@dataclass(frozen=True)
class Arm:
    name: str
    robot: str
    """robot yaml written by ssq-robot-setup (repository-relative)"""
    sim: str | None
    """sim yaml for ssq-sim-demo where config/sim.yaml does not fit the arm (it says why)"""
    train: str
    """experiment yaml for ssq-train"""


ARMS = {arm.name: arm for arm in (
    Arm('ssq_arm', 'test/data/ssq_arm_generated.yaml', None, 'config/arms/ssq_arm_train.yaml'),
    Arm('panda', 'test/data/panda.yaml', None, 'config/arms/panda_train.yaml'),
    Arm('ur5', 'test/data/ur5.yaml', 'config/arms/ur5_sim.yaml', 'config/arms/ur5_train.yaml'),
    Arm('xarm7', 'test/data/xarm7.yaml', None, 'config/arms/xarm7_train.yaml'),
    Arm('z1', 'test/data/z1.yaml', 'config/arms/z1_sim.yaml', 'config/arms/z1_train.yaml'),
)}


def log(message: str) -> None:
    print(f'[bench_arms {time.strftime("%H:%M:%S")}] {message}', flush=True)


def demo_argv(arm: Arm, steps: int, stride: int, out: Path, seed: int) -> list[str]:
    argv = ['--robot', str(ROOT / arm.robot)]
    if arm.sim:
        argv += ['--sim', str(ROOT / arm.sim)]
    return argv + ['--steps', str(steps), '--referee-stride', str(stride), '--out', str(out),
                   '--seed', str(seed)]


def shown(command: str, argv: list[str]) -> str:
    """The command line as typed from the repository root."""
    return ' '.join([command] + [a.removeprefix(f'{ROOT}/') for a in argv])


def run_demo(arm: Arm, args: argparse.Namespace, setup: ReachAvoidSetup) -> dict:
    """(a): ssq-sim-demo in this process, or the stored result of the same budget."""
    out = args.runs / arm.name
    argv = demo_argv(arm, args.demo_steps, args.referee_stride, out, args.seed)
    stored = out / 'sim_demo.json'
    if args.reuse and stored.is_file():
        result = json.loads(stored.read_text())
        if (result.get('steps') == args.demo_steps
                and result.get('referee_stride') == args.referee_stride
                and result.get('sim_config') == to_dict(setup.config)
                and Path(result.get('robot', '')).name == setup.robot.urdf_path.name
                and 'success_rate' in result):
            log(f'{arm.name}: reusing {stored} ({result["steps"]} steps)')
            return {**result, 'command': shown('ssq-sim-demo', argv), 'reused': True}
    log(f'{arm.name}: ssq-sim-demo {args.demo_steps} steps, referee every '
        f'{args.referee_stride} physics step(s)')
    started = time.monotonic()
    if sim_demo.main(argv) != 0:
        raise RuntimeError(f'{arm.name}: ssq-sim-demo failed')
    result = json.loads(stored.read_text())
    return {**result, 'command': shown('ssq-sim-demo', argv), 'reused': False,
            'bench_wall_s': round(time.monotonic() - started, 1)}


def percentiles_ms(seconds: list[float]) -> dict:
    values = np.array(seconds) * 1e3
    return {'p50_ms': round(float(np.percentile(values, 50)), 3),
            'p99_ms': round(float(np.percentile(values, 99)), 3),
            'max_ms': round(float(values.max()), 3), 'calls': len(values)}


def time_support(setup: ReachAvoidSetup, states: int, seed: int, rounds: int) -> dict:
    """(b): the first `states` states of the demo run (mu's rollout replayed with the demo's
    seed, as sim.rollout.rollout steps it), then `rounds` timed passes over them: at each state
    is_safe over mu's candidate set and mu's whole decision, interleaved (with its own
    generator). p50/p99 per round; the reported numbers are the median over the rounds, which
    keeps one busy moment of the shared machine from setting them."""
    # the referee judges once per period here (the physics, and so the states, are the same)
    config = dataclasses.replace(setup.config, physics=dataclasses.replace(
        setup.config.physics, referee_stride=1000))
    env = ReachAvoidEnv(True, setup=dataclasses.replace(setup, config=config))
    controller = setup.behavior_controller(True)
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    stored = []
    for _ in range(states):
        q, qdot = env.joint_state()
        stored.append((q.copy(), qdot.copy(), env.goal.copy()))
        decision = controller.act(q, qdot, rng, env.goal)
        _, _, terminated, truncated, _ = env.step(decision.action)
        if terminated or truncated:
            env.reset()
    timing_rng = np.random.default_rng(seed + 1)
    q, qdot, goal = stored[0]
    for _ in range(5):  # warm-up: caches and first-call allocations out of the numbers
        setup.support.is_safe(q, qdot, controller.actions.discrete_commands(q))
        controller.act(q, qdot, timing_rng, goal)
    per_round = {'support_is_safe': [], 'decision': []}
    candidates = 0
    for _ in range(rounds):
        support_s, decision_s = [], []
        for q, qdot, goal in stored:
            commands = controller.actions.discrete_commands(q)
            candidates = len(commands)
            started = time.perf_counter()
            setup.support.is_safe(q, qdot, commands)
            support_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            controller.act(q, qdot, timing_rng, goal)
            decision_s.append(time.perf_counter() - started)
        per_round['support_is_safe'].append(percentiles_ms(support_s))
        per_round['decision'].append(percentiles_ms(decision_s))
    result = {'states': states, 'rounds': rounds, 'candidates': candidates}
    for kind, rows in per_round.items():
        result[kind] = {key: round(float(np.median([r[key] for r in rows])), 3)
                        for key in ('p50_ms', 'p99_ms', 'max_ms')}
        result[kind]['calls'] = states
        result[kind]['per_round'] = rows
    return result


def run_train(arm: Arm, args: argparse.Namespace) -> dict:
    """(c): ssq-train on the arm's experiment yaml, or the stored metrics of the same budget."""
    out = args.runs / arm.name / 'train'
    argv = ['--config', str(ROOT / arm.train), '--steps', str(args.train_steps), '--out',
            str(out), '--seed', str(args.seed), '--no-progress']
    metrics_file = out / 'metrics.json'
    reused = False
    if args.reuse and metrics_file.is_file() and \
            json.loads(metrics_file.read_text()).get('env_steps') == args.train_steps:
        log(f'{arm.name}: reusing {metrics_file}')
        reused = True
    else:
        log(f'{arm.name}: ssq-train {args.train_steps} steps -> {out}')
        if train_cli.main(argv) != 0:
            raise RuntimeError(f'{arm.name}: ssq-train failed')
    metrics = json.loads(metrics_file.read_text())
    keys = ('env_steps', 'unsafe_states_train', 'unsafe_states_eval', 'success_rate_policy',
            'success_rate_behavior', 'eval_episodes', 'min_margin_train', 'min_margin_eval',
            'behavior_fallbacks_train', 'wall_time_s')
    return {**{k: metrics.get(k) for k in keys}, 'command': shown('ssq-train', argv),
            'reused': reused}


def bench_arm(arm: Arm, args: argparse.Namespace) -> dict:
    setup = sim_demo.build(sim_demo.parse_args(
        demo_argv(arm, args.demo_steps, args.referee_stride, args.runs / arm.name, args.seed)))
    robot = setup.robot
    worst_link = max(robot.link_cover_error, key=robot.link_cover_error.get)
    row = {'arm': arm.name, 'robot_yaml': arm.robot, 'sim_yaml': arm.sim or '',
           'train_yaml': arm.train, 'urdf': str(robot.urdf_path), 'dof': robot.dof,
           'spheres': len(robot.sphere_radii),
           'worst_cover_error_m': round(float(robot.link_cover_error[worst_link]), 5),
           'worst_cover_link': worst_link,
           'self_collision_pairs_checked': len(setup.safe_set.self_collision),
           'link_pairs': len(all_pairs(robot))}
    log(f'{arm.name}: {row["dof"]} joints, {row["spheres"]} spheres, worst cover error '
        f'{row["worst_cover_error_m"] * 1e3:.1f} mm ({worst_link}), '
        f'{row["self_collision_pairs_checked"]} of {row["link_pairs"]} link pairs checked')
    demo = run_demo(arm, args, setup)
    row['demo'] = {k: demo.get(k) for k in (
        'steps', 'episodes', 'successes', 'success_rate', 'unsafe_states',
        'unsafe_by_constraint', 'min_margin', 'min_margin_constraint', 'hold_refused',
        'fallbacks', 'referee_stride', 'wall_time_s', 'steps_per_second', 'command', 'reused')}
    log(f'{arm.name}: referee unsafe {demo["unsafe_states"]} of {demo["steps"]}, min margin '
        f'{demo["min_margin"]:+.4f} m ({demo["min_margin_constraint"]}), mu reached '
        f'{demo["successes"]} of {demo["episodes"]} goals')
    log(f'{arm.name}: timing the support check at {args.timing_states} states of the run')
    row['timing'] = time_support(setup, args.timing_states, args.seed, args.timing_rounds)
    log(f'{arm.name}: is_safe p50/p99 {row["timing"]["support_is_safe"]["p50_ms"]:.2f}/'
        f'{row["timing"]["support_is_safe"]["p99_ms"]:.2f} ms, decision '
        f'{row["timing"]["decision"]["p50_ms"]:.2f}/{row["timing"]["decision"]["p99_ms"]:.2f} ms')
    if args.train:
        row['train'] = run_train(arm, args)
        t = row['train']
        log(f'{arm.name}: train unsafe {t["unsafe_states_train"]}/{t["unsafe_states_eval"]}, '
            f'policy {t["success_rate_policy"]:.0%} vs mu {t["success_rate_behavior"]:.0%}, '
            f'{t["wall_time_s"]:.0f} s')
    return row


COLUMNS = ('arm', 'dof', 'spheres', 'cover mm', 'pairs', 'steps', 'unsafe', 'min margin',
           'mu success', 'is_safe p50/p99 ms', 'decision p50/p99 ms')


def table(rows: list[dict]) -> str:
    lines = ['| ' + ' | '.join(COLUMNS) + (' | train: unsafe train/eval | policy vs mu | wall'
                                            if any('train' in r for r in rows) else '') + ' |']
    lines.append('|' + '---|' * (len(COLUMNS) + (3 if any('train' in r for r in rows) else 0)))
    for r in rows:
        d, s, dec = r['demo'], r['timing']['support_is_safe'], r['timing']['decision']
        cells = [r['arm'], r['dof'], r['spheres'], f'{r["worst_cover_error_m"] * 1e3:.1f}',
                 f'{r["self_collision_pairs_checked"]} of {r["link_pairs"]}', d['steps'],
                 d['unsafe_states'], f'{d["min_margin"]:+.3f} m ({d["min_margin_constraint"]})',
                 f'{d["successes"]}/{d["episodes"]} ({d["success_rate"]:.0%})',
                 f'{s["p50_ms"]:.2f} / {s["p99_ms"]:.2f}', f'{dec["p50_ms"]:.2f} / '
                 f'{dec["p99_ms"]:.2f}']
        if 'train' in r:
            t = r['train']
            cells += [f'{t["unsafe_states_train"]} / {t["unsafe_states_eval"]}',
                      f'{t["success_rate_policy"]:.0%} vs {t["success_rate_behavior"]:.0%} '
                      f'({t["eval_episodes"]} goals)', f'{t["wall_time_s"] / 60:.1f} min']
        elif any('train' in x for x in rows):
            cells += ['', '', '']
        lines.append('| ' + ' | '.join(str(c) for c in cells) + ' |')
    return '\n'.join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--arms', nargs='+', choices=sorted(ARMS), default=list(ARMS))
    parser.add_argument('--demo-steps', type=int, default=20000)
    parser.add_argument('--referee-stride', type=int, default=1)
    parser.add_argument('--timing-states', type=int, default=1000)
    parser.add_argument('--timing-rounds', type=int, default=5)
    parser.add_argument('--train', action='store_true', help='also one ssq-train per arm')
    parser.add_argument('--train-steps', type=int, default=5000)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--runs', type=Path, default=Path('runs/arms'))
    parser.add_argument('--out', type=Path, default=RESULTS)
    parser.add_argument('--reuse', action='store_true',
                        help='take stored run results of the same budget instead of rerunning')
    args = parser.parse_args(argv)
    if min(args.demo_steps, args.timing_states, args.timing_rounds, args.train_steps,
           args.referee_stride) < 1:
        parser.error('step counts and the stride must be at least 1')
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    rows = []
    for index, name in enumerate(args.arms, 1):
        log(f'[{index}/{len(args.arms)}] {name}')
        rows.append(bench_arm(ARMS[name], args))
    result = {
        'command': 'python -m bench.bench_arms ' + ' '.join(sys.argv[1:] if argv is None
                                                            else argv),
        'safe_set': str(config_path('safe_set.yaml').relative_to(ROOT)),
        'machine': {'cpu_count': os.cpu_count(), 'python': platform.python_version(),
                    'load_average_1min': os.getloadavg()[0]},
        'wall_time_s': round(time.monotonic() - started, 1),
        'arms': rows,
        'table': table(rows),
        **provenance(),  # each arm's configs are named in its row
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + '\n')
    print(result['table'])
    log(f'wrote {args.out} in {result["wall_time_s"]:.0f} s')
    return 0 if all(r['demo']['unsafe_states'] == 0 and r.get('train', {}).get(
        'unsafe_states_train', 0) == 0 and r.get('train', {}).get('unsafe_states_eval', 0) == 0
        for r in rows) else 1


if __name__ == '__main__':
    sys.exit(main())
