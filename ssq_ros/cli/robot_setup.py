"""ssq-robot-setup: write a robot yaml for any URDF arm, with collision spheres fitted to it.

    ssq-robot-setup --urdf URDF_OR_PACKAGE_URI --ee FRAME --out robot.yaml [--joints J ...]
                    [--home Q ...] [--srdf FILE [--srdf-state NAME]] [--acceleration-limits A ...]
                    [--max-spheres N] [--slack F]

Joints: the given ones in command order, else the URDF's revolute and prismatic joints from the
root to --ee. Limits come from the URDF (load_robot reads them). Home: --home, else a group_state
of --srdf (--srdf-state, else `home`, else the first one). Acceleration limits: given, else
DEFAULT_ACCELERATION for every joint (stated in the file). The collision spheres are fitted to
every moving link's collision geometry as pinocchio loads it (meshes, boxes, cylinders, spheres,
capsules; see ssq_ros/safety/collision_cover.py); the written file is then loaded with
load_robot, which verifies the cover, and a per-link summary is printed.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pinocchio as pin

from ssq_ros.config import ConfigError
from ssq_ros.safety.collision_cover import SPACING, collision_points, fit_link_spheres
from ssq_ros.safety.robot import load_robot, resolve_package_uri, resolve_urdf

DEFAULT_ACCELERATION = 5.0
"""Acceleration limit [rad/s^2 or m/s^2] written for every joint when none is given: low on
purpose (a longer braking distance is the safe side); replace it with the datasheet's values."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='ssq-robot-setup', description=__doc__.splitlines()[0])
    parser.add_argument('--urdf', required=True,
                        help='URDF: absolute path, package://pkg/path, or a file in urdf/')
    parser.add_argument('--ee', required=True, help='end-effector frame (a URDF link)')
    parser.add_argument('--out', required=True, type=Path, help='robot yaml to write')
    parser.add_argument('--joints', nargs='+', help='actuated joints in command order '
                        '(default: the revolute/prismatic joints from the root to --ee)')
    parser.add_argument('--home', nargs='+', type=float, help='home posture [rad or m], '
                        'command order')
    parser.add_argument('--srdf', help='SRDF whose group_state gives the home posture')
    parser.add_argument('--srdf-state', help='group_state name (default: home, else the first)')
    parser.add_argument('--acceleration-limits', nargs='+', type=float,
                        help=f'per joint [rad/s^2] (default: {DEFAULT_ACCELERATION} each)')
    parser.add_argument('--max-spheres', type=int, default=6, help='most spheres per link')
    parser.add_argument('--slack', type=float, default=0.1,
                        help='per link, the fewest spheres whose union volume is within this '
                        'fraction of the smallest one found')
    args = parser.parse_args(argv)
    if args.max_spheres < 1:
        parser.error('--max-spheres must be at least 1')
    if args.slack < 0:
        parser.error('--slack must not be negative')
    return args


def chain_joints(model: pin.Model, ee: str) -> list[str]:
    """The 1-DoF joints from the root to frame `ee`, root first; other moving joints refused."""
    joint = model.frames[model.getFrameId(ee)].parentJoint
    names = []
    while joint > 0:
        j = model.joints[joint]
        if j.nq == 1 and j.nv == 1:
            names.append(model.names[joint])
        else:
            raise ConfigError(f'--ee {ee}: joint {model.names[joint]!r} on the chain is a '
                              f'{j.shortname()} (nq={j.nq}), not a revolute or prismatic joint; '
                              'only 1-DoF joints can be commanded')
        joint = model.parents[joint]
    if not names:
        raise ConfigError(f'--ee {ee}: no revolute or prismatic joint between the root and it')
    return names[::-1]


def unique_frames(model: pin.Model) -> set[str]:
    names = [frame.name for frame in model.frames]
    return {name for name in names if names.count(name) == 1}


def sphere_frame(model: pin.Model, link: str, unique: set[str]) -> str:
    """The frame a link's spheres are written in: the link, or where a joint shares its name
    (other code looks frames up by name), another link on the same rigid body."""
    if link in unique:
        return link
    joint = next(f.parentJoint for f in model.frames if f.name == link)
    for frame in model.frames:
        if frame.parentJoint == joint and frame.type == pin.FrameType.BODY and (
                frame.name in unique):
            return frame.name
    raise ConfigError(f'link {link!r}: its name is shared by several frames and no other link '
                      'moves with it; rename the joint or the link in the URDF')


def srdf_home(model: pin.Model, srdf: str, state: str | None, joints: list[str]) -> list[float]:
    path = resolve_package_uri(srdf) if srdf.startswith('package://') else Path(srdf)
    if not path.is_file():
        raise ConfigError(f'--srdf: file not found: {path}')
    pin.loadReferenceConfigurations(model, str(path))
    states = {str(entry.key()): np.array(entry.data())
              for entry in model.referenceConfigurations}
    if not states:
        raise ConfigError(f'--srdf {path}: no group_state; pass --home instead')
    name = state or ('home' if 'home' in states else sorted(states)[0])
    if name not in states:
        raise ConfigError(f'--srdf-state: no group_state {name!r} in {path} '
                          f'(has: {", ".join(sorted(states))})')
    q = states[name]
    return [float(q[model.joints[model.getJointId(j)].idx_q]) for j in joints]


def _num(v: float, digits: int = 4) -> str:
    text = f'{float(v):.{digits}f}'.rstrip('0')
    text = text + '0' if text.endswith('.') else text
    return '0.0' if float(text) == 0 else text


def _list(values) -> str:
    return '[' + ', '.join(_num(v) for v in values) + ']'


def _wrapped(key: str, items: list[str], width: int = 99) -> str:
    lines, line = [], f'{key}: ['
    indent = ' ' * len(line)
    for i, item in enumerate(items):
        piece = item + (', ' if i < len(items) - 1 else ']')
        if len(line) + len(piece.rstrip()) > width and line.strip() not in (f'{key}: [', ''):
            lines.append(line.rstrip())
            line = indent
        line += piece
    lines.append(line)
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    started = time.monotonic()
    try:
        urdf = resolve_urdf(args.urdf, '--urdf')
        try:
            full = pin.buildModelFromUrdf(str(urdf))
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(f'--urdf: pinocchio cannot read {urdf}: {exc}') from exc
        if not full.existFrame(args.ee):
            raise ConfigError(f'--ee: unknown frame {args.ee!r} in {urdf.name}')
        if args.ee not in unique_frames(full):
            raise ConfigError(f'--ee: several frames of {urdf.name} are named {args.ee!r} (a '
                              'link and a joint); choose another frame')
        joints = args.joints or chain_joints(full, args.ee)
        for name in joints:
            if not full.existJointName(name):
                raise ConfigError(f'--joints: unknown joint {name!r}')
        if args.home is not None:
            home, home_note = args.home, 'given to ssq-robot-setup'
        elif args.srdf:
            home = srdf_home(full, args.srdf, args.srdf_state, joints)
            home_note = f'from {args.srdf}'
        else:
            raise ConfigError('no home posture: pass --home Q ... (command order) or --srdf FILE '
                              'with a group_state')
        if len(home) != len(joints):
            raise ConfigError(f'--home: expected {len(joints)} values ({", ".join(joints)}), '
                              f'got {len(home)}')
        if args.acceleration_limits is not None:
            accel, accel_note = args.acceleration_limits, 'given to ssq-robot-setup'
        else:
            accel = [DEFAULT_ACCELERATION] * len(joints)
            accel_note = (f'ssq-robot-setup default, {DEFAULT_ACCELERATION} per joint, low on '
                          'purpose: use the datasheet values')
        if len(accel) != len(joints):
            raise ConfigError(f'--acceleration-limits: expected {len(joints)} values, got '
                              f'{len(accel)}')
        locked = [full.getJointId(n) for n in full.names[1:] if n not in joints]
        model = pin.buildReducedModel(full, locked, pin.neutral(full)) if locked else full
        print(f'{urdf.name}: joints {", ".join(joints)}; loading the collision geometry',
              flush=True)
        try:
            links = collision_points(urdf, full, locked)
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(f'--urdf: cannot read the collision geometry: {exc}') from exc
        if not links:
            raise ConfigError(f'--urdf: no moving link of {urdf.name} has collision geometry')
        spheres, fits, unique = [], {}, unique_frames(model)
        for n, (link, data) in enumerate(links.items(), start=1):
            name = sphere_frame(model, link, unique)
            frame = model.frames[model.getFrameId(name)].placement
            local = (data.points - frame.translation) @ frame.rotation
            fit = fit_link_spheres(local, args.max_spheres, args.slack)
            fits[link] = fit
            print(f'  [{n}/{len(links)}] {link}: {len(local)} points -> {len(fit.radii)} '
                  f'spheres, largest radius {fit.radii.max():.3f} m', flush=True)
            spheres += [(f'{link}_{i}', name, c, r)
                        for i, (c, r) in enumerate(zip(fit.centres, fit.radii, strict=True))]
    except (ConfigError, FileNotFoundError) as exc:
        print(f'ssq-robot-setup: {exc}', file=sys.stderr)
        return 2

    header = [
        f'# Generated by ssq-robot-setup from {args.urdf}:',
        '#   ' + shlex.join(['ssq-robot-setup', *argv]),
        '# Collision spheres fitted to the collision geometry of every moving link (mesh vertices '
        'and',
        f'# surface samples {SPACING * 1000:.0f} mm apart, k-means clusters, smallest enclosing '
        'ball each); load_robot',
        '# verifies the cover at load. Regenerate rather than edit the spheres by hand.',
        f'# home: {home_note}.',
    ]
    body = [
        # As given: load_robot resolves it the same way (package://, absolute, or urdf/).
        f'urdf: {args.urdf}',
        _wrapped('joint_names', list(joints)),
        f'ee_frame: {args.ee}',
        _wrapped('home', [_num(v, 6) for v in home]),
        f'# acceleration_limits: {accel_note}.',
        _wrapped('acceleration_limits', [_num(v) for v in accel]),
        'collision_spheres:',
    ]
    body += [f'  - {{name: {name}, frame: {frame}, offset: {_list(c)}, radius: {_num(r)}}}'
             for name, frame, c, r in spheres]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text('\n'.join(header + body) + '\n')
    try:
        robot = load_robot(args.out)
    except ConfigError as exc:
        print(f'ssq-robot-setup: wrote {args.out}, but it does not load: {exc}', file=sys.stderr)
        return 1
    print(f'\n{"link":<24}{"spheres":>8}{"max radius [m]":>16}{"volume [l]":>12}'
          f'{"uncovered [m]":>15}')
    for link, fit in fits.items():
        print(f'{link:<24}{len(fit.radii):>8}{fit.radii.max():>16.3f}{fit.volume * 1e3:>12.2f}'
              f'{robot.link_cover_error[link]:>15.4f}')
    print(f'{len(spheres)} spheres; wrote {args.out} ({robot.dof} joints, verified by '
          f'load_robot) in {time.monotonic() - started:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
