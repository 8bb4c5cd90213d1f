"""Self-collision: which pairs of the arm's links can touch, and their signed margins.

The links are the frames the collision spheres are fixed to (robot yaml `collision_spheres`).
A pair of links is checked unless it is disabled the way MoveIt's setup assistant disables it;
the first rule that applies is the reason reported:

- `adjacent`: the two links move with the same joint, or with a joint and its parent joint, of
  pinocchio's model after the joints the robot yaml does not command are locked (links joined
  by a fixed or locked joint are one rigid body, so "adjacent" is judged between those bodies);
- `srdf`: a `<disable_collisions link1= link2=>` entry of the SRDF the config names (by default
  `auto`: the SRDF shipped beside the URDF, `<name>.srdf` in its folder or in a sibling `srdf/`
  folder, as example-robot-data and most description packages lay them out);
- `config`: an entry of `disabled_pairs` in the config;
- `never`: the two links' spheres, inflated by the clearance, never overlap over `samples`
  seeded random postures drawn uniformly within the URDF joint limits;
- `always`: they overlap in every one of those postures (a pair that touches by construction;
  a margin that is negative everywhere would only freeze the arm);
- `home`: they overlap at the robot yaml's home posture (MoveIt's "Default" rule: the posture
  the robot is declared safe in cannot be outside S; the sphere model of two links close by
  construction, e.g. at an elbow, overlaps where the real links do not).

The margin of a checked pair (A, B) is min over its sphere pairs (i on A, j on B) of
|c_i - c_j| - r_i - r_j - clearance, with r the sphere radius plus its cover error. The sphere
pairs are those that overlap (bare radii) in some sample, or where none ever does, those that
come within the clearance (`_select_pairs` says why). A whole batch is evaluated at once: one
gather of the sphere-pair centres, one norm and a segment minimum (`np.minimum.reduceat`).

Caveat of the sampling rules (MoveIt's too): a pair disabled as `never`, or a sphere pair left
out, is not checked at all, so a posture outside the sampled ones in which it touches would go
unnoticed; 10,000 samples over a 7-DoF arm make that unlikely, not impossible. Raise `samples`
if in doubt.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssq_ros.config import ConfigError, spec
from ssq_ros.paths import share_dir
from ssq_ros.safety.kinematics import Kinematics
from ssq_ros.safety.robot import RobotModel, resolve_package_uri

PREFIX = 'self_collision:'
REASONS = ('adjacent', 'srdf', 'config', 'never', 'always', 'home')


@dataclass(frozen=True)
class SelfCollisionConfig:
    enabled: bool = spec(True, doc='check pairs of the arm\'s own links against each other')
    clearance: float = spec(0.03, doc='gap kept between the spheres of two links [m]; with the '
                                      'support check\'s sample_gap_limit + hold_tolerance it '
                                      'must leave room (it must exceed their sum)',
                            low=0.0, high=0.5)
    srdf: str | None = spec('auto', doc='SRDF whose <disable_collisions> pairs are not '
                                        'checked: absolute path, package://pkg/path, a path in '
                                        'the package folder (e.g. urdf/arm.srdf), auto (the '
                                        'URDF\'s own: <name>.srdf beside it or in ../srdf/, if '
                                        'there is one) or null for none')
    disabled_pairs: tuple[tuple[str, str], ...] = spec(
        (), doc='further link pairs [link_a, link_b] that are never checked')
    samples: int = spec(10000, doc='random postures within the joint limits that decide the '
                                   '"never" and "always" in contact rules', low=100,
                        high=1_000_000)
    seed: int = spec(0, doc='seed of those postures (the pairs are a pure function of it)',
                     low=0)


def pair_name(pair: tuple[str, str]) -> str:
    """The margin column of a link pair: 'self_collision:linkA|linkB'."""
    return f'{PREFIX}{pair[0]}|{pair[1]}'


def sphere_links(robot: RobotModel) -> tuple[str, ...]:
    """The links (sphere frames) that carry spheres, in the order they first appear."""
    return tuple(dict.fromkeys(robot.sphere_frames))


def link_joints(robot: RobotModel) -> dict[str, int]:
    """Joint of pinocchio's (reduced) model each sphere link moves with (0: the fixed base)."""
    model = robot.model
    return {link: int(model.frames[model.getFrameId(link)].parentJoint)
            for link in sphere_links(robot)}


def all_pairs(robot: RobotModel) -> list[tuple[str, str]]:
    """Every unordered pair of sphere links, each as (earlier, later) in `sphere_links`."""
    links = sphere_links(robot)
    return [(a, b) for i, a in enumerate(links) for b in links[i + 1:]]


def adjacent_pairs(robot: RobotModel) -> set[tuple[str, str]]:
    """Pairs of links on the same rigid body or on bodies joined by one joint."""
    joints, parents = link_joints(robot), robot.model.parents
    return {(a, b) for a, b in all_pairs(robot)
            if joints[a] == joints[b] or parents[joints[a]] == joints[b]
            or parents[joints[b]] == joints[a]}


def resolve_srdf(name: str, where: str = 'self_collision.srdf') -> Path:
    """The SRDF file a config names: absolute, package:// or relative to the package folder."""
    try:
        path = resolve_package_uri(name) if name.startswith('package://') else (
            Path(name) if Path(name).is_absolute() else share_dir() / name)
    except FileNotFoundError as exc:
        raise ConfigError(f'{where}: {exc}') from exc
    if not path.is_file():
        raise ConfigError(f'{where}: SRDF file not found: {path}')
    return path


def find_srdf(urdf: Path) -> Path | None:
    """The SRDF shipped with a URDF: <name>.srdf beside it or in a sibling srdf/ folder."""
    for folder in (urdf.parent, urdf.parent.parent / 'srdf'):
        candidate = folder / f'{urdf.stem}.srdf'
        if candidate.is_file():
            return candidate
    return None


def srdf_disabled_pairs(path: str | Path) -> list[tuple[str, str]]:
    """(link1, link2) of every <disable_collisions> entry of an SRDF file."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise ConfigError(f'{path}: cannot read SRDF: {exc}') from exc
    pairs = []
    for entry in root.iter('disable_collisions'):
        first, second = entry.get('link1'), entry.get('link2')
        if not first or not second:
            raise ConfigError(f'{path}: <disable_collisions> needs link1 and link2')
        pairs.append((first, second))
    return pairs


class PairMargins:
    """Signed margins (B, P) of link pairs from sphere centres (B, S, 3), vectorised.

    The sphere pairs of all link pairs are laid out one link pair after the other (index
    arrays `first`, `second`, offsets `starts`): a batch costs one gather, one norm and one
    `np.minimum.reduceat`, whatever the number of pairs. `sphere_pairs` may name, per link
    pair, the (i, j) sphere pairs to check; by default every sphere of A against every one of B.
    """

    def __init__(self, robot: RobotModel, pairs: list[tuple[str, str]], radii: np.ndarray,
                 clearance: float, sphere_pairs: list[list[tuple[int, int]]] | None = None):
        frames = np.array(robot.sphere_frames)
        first, second, starts = [], [], []
        for k, (a, b) in enumerate(pairs):
            on_a, on_b = np.flatnonzero(frames == a), np.flatnonzero(frames == b)
            if sphere_pairs is None:
                chosen = [(int(i), int(j)) for i in on_a for j in on_b]
            else:
                chosen = list(sphere_pairs[k])
            if not chosen or any(frames[i] != a or frames[j] != b for i, j in chosen):
                raise ValueError(f'link pair {a}|{b}: needs sphere pairs (i on {a}, j on {b})')
            starts.append(len(first))
            first += [i for i, _ in chosen]
            second += [j for _, j in chosen]
        radii = np.asarray(radii, dtype=float)
        self.pairs: tuple[tuple[str, str], ...] = tuple(pairs)
        self.names: tuple[str, ...] = tuple(pair_name(p) for p in pairs)
        self.first = np.array(first, dtype=np.intp)
        self.second = np.array(second, dtype=np.intp)
        self.starts = np.array(starts, dtype=np.intp)
        self.reach = radii[self.first] + radii[self.second] + clearance
        """Centre distance (K,) below which a sphere pair is in contact."""
        self._reach32 = self.reach.astype(np.float32)

    def __len__(self) -> int:
        return len(self.pairs)

    def sphere_pair_margins(self, spheres: np.ndarray) -> np.ndarray:
        """|c_i - c_j| - r_i - r_j - clearance (B, K) of every sphere pair (float64)."""
        delta = spheres[:, self.first] - spheres[:, self.second]
        return np.sqrt(np.einsum('bki,bki->bk', delta, delta)) - self.reach

    def __call__(self, spheres: np.ndarray) -> np.ndarray:
        """Margins (B, P) of sphere centres (B, S, 3), columns named by `self.names`.

        The hot path of the support check (~100 states x ~150 sphere pairs per decision), so
        it gathers per axis in float32: half the memory traffic of float64, 2x faster. The
        rounding error of a float32 centre distance is below 4 x 2^-24 x (|c|max + |d|), under
        1e-6 m x (1 + |c|max); that much is taken off every margin, so a margin here is never
        above the exact one, and at most 2e-6 m x (1 + |c|max) below it.
        """
        if not len(self.pairs):
            return np.zeros(spheres.shape[:1] + (0,))
        axes = spheres.transpose(2, 0, 1).astype(np.float32)  # (3, B, S), contiguous
        delta = axes[:, :, self.first]
        delta -= axes[:, :, self.second]
        delta *= delta
        distance = delta[0]
        distance += delta[1]
        distance += delta[2]
        np.sqrt(distance, out=distance)
        margins = np.minimum.reduceat(distance - self._reach32, self.starts, axis=1)
        slack = 1e-6 * (1.0 + float(np.abs(spheres).max()))
        return margins.astype(float) - slack


@dataclass(frozen=True)
class PairSelection:
    """The link pairs checked for self-collision, the sphere pairs checked for each, and why
    every other link pair is not checked."""

    links: tuple[str, ...]
    enabled: tuple[tuple[str, str], ...]
    sphere_pairs: tuple[tuple[tuple[int, int], ...], ...]
    """Per enabled link pair, the (i, j) sphere indices whose distance its margin takes."""
    disabled: tuple[tuple[tuple[str, str], str], ...]
    """((link_a, link_b), reason) with reason one of REASONS (the first rule that applies)."""

    def reason(self, a: str, b: str) -> str | None:
        """Why the pair is not checked, None if it is (either order of the links)."""
        for pair, why in self.disabled:
            if set(pair) == {a, b}:
                return why
        return None


def sampled_extremes(robot: RobotModel, pairs: list[tuple[str, str]], radii: np.ndarray,
                     clearance: float, samples: int, seed: int, chunk: int = 2000
                     ) -> tuple[PairMargins, np.ndarray, np.ndarray, np.ndarray]:
    """Over `samples` seeded uniform postures within the URDF joint limits (sphere model,
    radii inflated by `clearance`): the margins object of `pairs` with every sphere pair, the
    smallest margin (K,) of each of its sphere pairs, and the smallest and largest margin (P,)
    of each link pair."""
    margins = PairMargins(robot, pairs, radii, clearance)
    kinematics = Kinematics(robot)
    rng = np.random.default_rng(seed)
    qs = rng.uniform(robot.position_lower, robot.position_upper, (samples, robot.dof))
    lowest = np.full(len(margins.first), np.inf)
    high = np.full(len(pairs), -np.inf)
    for begin in range(0, samples, chunk):
        values = margins.sphere_pair_margins(kinematics.sphere_positions(
            qs[begin:begin + chunk]))
        lowest = np.minimum(lowest, values.min(axis=0))
        per_link = np.minimum.reduceat(values, margins.starts, axis=1)
        high = np.maximum(high, per_link.max(axis=0))
    return margins, lowest, np.minimum.reduceat(lowest, margins.starts), high


def inflated_radii(robot: RobotModel) -> np.ndarray:
    """Sphere radii plus their verified cover error (S,): what a self-collision margin
    subtracts for each sphere (the same radii the safe set's zones use, less their clearance)."""
    return robot.cover_radii


_SELECTIONS: dict[tuple, PairSelection] = {}


def select_pairs(robot: RobotModel, config: SelfCollisionConfig,
                 where: str = 'safe_set.self_collision') -> PairSelection:
    """The enabled link pairs of `robot` under `config` (memoised: sampling costs ~0.3 s)."""
    radii = inflated_radii(robot)
    key = (str(robot.urdf_path), robot.joint_names, robot.sphere_frames,
           robot.sphere_offsets.tobytes(), radii.tobytes(), robot.position_lower.tobytes(),
           robot.position_upper.tobytes(), config)
    if key not in _SELECTIONS:
        _SELECTIONS[key] = _select_pairs(robot, config, radii, where)
    return _SELECTIONS[key]


def _select_pairs(robot: RobotModel, config: SelfCollisionConfig, radii: np.ndarray,
                  where: str) -> PairSelection:
    links = sphere_links(robot)
    candidates = all_pairs(robot)
    reasons: dict[tuple[str, str], str] = {}
    for pair in adjacent_pairs(robot):
        reasons[pair] = 'adjacent'

    def canonical(a: str, b: str) -> tuple[str, str] | None:
        if a in links and b in links and a != b:
            return (a, b) if links.index(a) < links.index(b) else (b, a)
        return None

    srdf = (find_srdf(robot.urdf_path) if config.srdf == 'auto' else
            None if config.srdf is None else resolve_srdf(config.srdf, f'{where}.srdf'))
    if srdf is not None:
        for a, b in srdf_disabled_pairs(srdf):
            pair = canonical(a, b)  # SRDFs name links without spheres too: nothing to disable
            if pair is not None:
                reasons.setdefault(pair, 'srdf')
    for index, (a, b) in enumerate(config.disabled_pairs):
        pair = canonical(a, b)
        if pair is None:
            raise ConfigError(f'{where}.disabled_pairs[{index}]: {a!r} and {b!r} must be two '
                              f'different links that carry collision spheres '
                              f'({", ".join(links)})')
        reasons.setdefault(pair, 'config')
    open_pairs = [p for p in candidates if p not in reasons]
    sphere_pairs: dict[tuple[str, str], tuple[tuple[int, int], ...]] = {}
    if open_pairs:
        margins, sphere_low, low, high = sampled_extremes(
            robot, open_pairs, radii, config.clearance, config.samples, config.seed)
        bounds = np.append(margins.starts, len(margins.first))
        home = margins(Kinematics(robot).sphere_positions(robot.home))[0]
        for k, pair in enumerate(open_pairs):
            if low[k] >= 0.0:
                reasons[pair] = 'never'
            elif high[k] < 0.0:
                reasons[pair] = 'always'
            elif home[k] < 0.0:
                reasons[pair] = 'home'
            else:
                # Sphere pairs that never come close carry none of the pair's contacts: the
                # pair checks those that overlap (bare radii) in some sample, or, where none
                # ever does, those that come within the clearance. Spheres fixed near a shared
                # joint keep an almost constant distance (ssq_arm's wrist sphere on link5 and
                # the hand's: never closer than 1.8 cm, bare, and hardly further near home)
                # and would otherwise cap the pair's margin below the clearance in every
                # posture near home without telling postures apart.
                rows = np.arange(bounds[k], bounds[k + 1])
                bare = sphere_low[rows] + config.clearance
                keep = rows[bare < (0.0 if np.any(bare < 0.0) else config.clearance)]
                sphere_pairs[pair] = tuple((int(margins.first[r]), int(margins.second[r]))
                                           for r in keep)
    enabled = tuple(p for p in candidates if p not in reasons)
    disabled = tuple((p, reasons[p]) for p in candidates if p in reasons)
    return PairSelection(links=links, enabled=enabled,
                         sphere_pairs=tuple(sphere_pairs[p] for p in enabled),
                         disabled=disabled)


def self_collision_margins(robot: RobotModel, config: SelfCollisionConfig,
                           where: str = 'safe_set.self_collision') -> PairMargins:
    """The margins of the enabled pairs (none when `config.enabled` is false)."""
    if not config.enabled:
        return PairMargins(robot, [], inflated_radii(robot), config.clearance)
    selection = select_pairs(robot, config, where)
    return PairMargins(robot, list(selection.enabled), inflated_radii(robot), config.clearance,
                       [list(p) for p in selection.sphere_pairs])
