"""ssq-sim-demo: the safe behavior controller in MuJoCo, counted by the independent referee.

    ssq-sim-demo --steps 20000 --out runs/sim_demo [--robot FILE] [--safe-set FILE]
                 [--sim FILE] [--continuous] [--baselines] [--referee-stride 1] [--seed 0]

Runs mu from random safe starts toward random goals whose straight path crosses a keep-out
zone, then writes DIR/sim_demo.json (`unsafe_states`, `min_margin`, `success_rate`: goals
reached per finished episode, ...) and DIR/sim_demo.png (hand paths against the zones, top and
front views). `--baselines` adds, on the same budget, the
same mu without the support check and a uniform random joint-velocity policy.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Circle, Rectangle  # noqa: E402
from tqdm import tqdm  # noqa: E402

from ssq_ros.config import ConfigError, to_dict, validate  # noqa: E402
from ssq_ros.sim.env import ReachAvoidEnv, ReachAvoidSetup, make_setup  # noqa: E402
from ssq_ros.sim.rollout import RolloutStats, rollout  # noqa: E402
from ssq_ros.storage import atomic_write  # noqa: E402
from ssq_ros.task.config import SimConfig, load_sim_config  # noqa: E402
from ssq_ros.training.provenance import provenance

PATHS_DRAWN = 40


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='ssq-sim-demo', description=__doc__.splitlines()[0])
    parser.add_argument('--steps', type=int, default=2000, help='control steps per policy')
    parser.add_argument('--out', type=Path, default=Path('runs/sim_demo'), help='output folder')
    parser.add_argument('--robot', type=Path, help='robot yaml (default: config/robot.yaml)')
    parser.add_argument('--safe-set', type=Path, help='safe-set yaml (config/safe_set.yaml)')
    parser.add_argument('--sim', type=Path, help='sim yaml (default: config/sim.yaml)')
    parser.add_argument('--continuous', action='store_true',
                        help='continuous end-effector actions (K safe samples of mu)')
    parser.add_argument('--baselines', action='store_true',
                        help='also run the unshielded mu and a random joint-velocity policy')
    parser.add_argument('--referee-stride', type=int,
                        help='judge every this many physics steps (1 = every step)')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f'--steps must be at least 1, got {args.steps}')
    return args


def build(args: argparse.Namespace) -> ReachAvoidSetup:
    config = load_sim_config(args.sim) if args.sim else SimConfig()
    if args.referee_stride is not None:
        config = dataclasses.replace(config, physics=dataclasses.replace(
            config.physics, referee_stride=args.referee_stride))
        validate(config, '--referee-stride')
    return make_setup(args.robot, args.safe_set, config=config)


def run_policy(setup: ReachAvoidSetup, policy: str, discrete: bool, steps: int,
               seed: int) -> RolloutStats:
    if policy == 'random_joint':
        config = dataclasses.replace(setup.config, actions=dataclasses.replace(
            setup.config.actions, space='joint'))
        setup = dataclasses.replace(setup, config=config)
    env = ReachAvoidEnv(discrete, setup=setup)
    with tqdm(total=steps, desc=policy, unit='step', mininterval=2.0) as bar:
        return rollout(env, policy, steps, seed, progress=lambda _: bar.update())


def plot_paths(setup: ReachAvoidSetup, stats: RolloutStats, path: Path) -> Path:
    """Top (x-y) and front (y-z) views of the hand paths against the zones."""
    cfg = setup.safe_set.config
    figure, axes = plt.subplots(1, 2, figsize=(13, 6))
    for axis, (i, j), title in ((axes[0], (0, 1), 'top view (x-y)'),
                                (axes[1], (1, 2), 'front view (y-z)')):
        for zone in cfg.keep_out_boxes:
            corner = (zone.center[i] - zone.half_extents[i], zone.center[j] - zone.half_extents[j])
            axis.add_patch(Rectangle(corner, 2 * zone.half_extents[i], 2 * zone.half_extents[j],
                                     color='tab:red', alpha=0.3))
            axis.annotate(zone.name, (zone.center[i], zone.center[j]), ha='center', fontsize=8)
        for zone in cfg.keep_out_spheres:
            axis.add_patch(Circle((zone.center[i], zone.center[j]), zone.radius,
                                  color='tab:red', alpha=0.3))
            axis.annotate(zone.name, (zone.center[i], zone.center[j]), ha='center', fontsize=8)
        if j == 2 and cfg.table_height is not None:
            axis.axhline(cfg.table_height, color='saddlebrown', label='table')
        for k, (points, goal) in enumerate(zip(stats.paths[:PATHS_DRAWN],
                                               stats.goals[:PATHS_DRAWN], strict=False)):
            line, = axis.plot(points[:, i], points[:, j], linewidth=0.8)
            axis.plot(points[0, i], points[0, j], 'o', color=line.get_color(), markersize=3)
            axis.plot(goal[i], goal[j], '*', color=line.get_color(), markersize=8,
                      label='goal' if k == 0 else None)
        axis.set_xlabel('xyz'[i] + ' [m]')
        axis.set_ylabel('xyz'[j] + ' [m]')
        axis.set_aspect('equal')
        axis.set_title(title)
    axes[1].legend(loc='upper right')
    figure.suptitle(f'{stats.policy} behavior: {stats.steps} steps, {stats.episodes} episodes, '
                    f'{stats.unsafe_states} unsafe states (referee), min margin '
                    f'{stats.min_margin:.3f} m')
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        setup = build(args)
    except (ConfigError, FileNotFoundError) as exc:
        print(f'ssq-sim-demo: {exc}', file=sys.stderr)
        return 2
    discrete = not args.continuous
    safe = run_policy(setup, 'safe', discrete, args.steps, args.seed)
    result = safe.summary()
    result.update(success_rate=safe.successes / max(safe.episodes, 1),
                  robot=str(setup.robot.urdf_path), discrete=discrete,
                  referee_stride=setup.config.physics.referee_stride,
                  sim_config=to_dict(setup.config), **provenance(setup.config))
    if args.baselines:
        result['baselines'] = {
            'unshielded': run_policy(setup, 'unshielded', True, args.steps, args.seed).summary(),
            'random_joint': run_policy(setup, 'random_joint', False, args.steps,
                                       args.seed).summary()}
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = atomic_write(args.out / 'sim_demo.json',
                             lambda f: f.write(json.dumps(result, indent=2).encode()))
    png_path = plot_paths(setup, safe, args.out / 'sim_demo.png')
    print(f'safe behavior: {safe.steps} steps, {safe.episodes} episodes, {safe.successes} '
          f'reached (success rate {result["success_rate"]:.0%}), unsafe states '
          f'{safe.unsafe_states}, min margin {safe.min_margin:.4f} m '
          f'({safe.min_margin_constraint}), hold refused {safe.hold_refused}, '
          f'{safe.steps / max(safe.wall_time_s, 1e-9):.0f} steps/s')
    for name, row in result.get('baselines', {}).items():
        print(f'{name}: unsafe states {row["unsafe_states"]} of {row["steps"]} '
              f'({row["unsafe_by_constraint"]})')
    print(f'wrote {json_path} and {png_path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
