"""Collision-sphere covers: fitted to a URDF's collision geometry, and verified against it.

The safe set is checked on spheres (ssq_ros/safety/robot.py), so the spheres must contain the
arm's real collision geometry. This module provides both halves, numpy and pinocchio only:

* `collision_points`: the collision geometry of every moving link as points in the frame of its
  pinocchio parent joint (after the model reduction that locks the unconfigured joints). Meshes,
  boxes, cylinders, spheres and capsules are read by pinocchio's GeometryModel (coal), never by
  our own parsing. A mesh contributes all its vertices plus a regular grid on each triangle; a
  primitive a regular grid on its surface. Every point of a triangle or primitive surface lies
  within `spacing` of a sample, and the samples are deterministic, so a fit and a verification
  of the same geometry see the same points.
* `cover_errors`: for every moving link, the largest distance by which any of its points lies
  outside the union of the spheres RIGIDLY attached to it (same parent joint). Only those move
  with it, so the number holds in every posture, exactly for these points. `load_robot` adds
  the error to the radii the safe set inflates, and refuses a cover whose error exceeds
  `RobotConfig.max_cover_error`.
* `fit_link_spheres`: the spheres `ssq-robot-setup` writes: the link's points split into k
  clusters (k-means seeded along the principal axis), each sphere the near-smallest ball that
  encloses its cluster, and k chosen (up to `max_spheres`) to make the total sphere volume
  small: tight spheres, few of them.
* `cached_cover_errors`: the verification result, cached on disk under $XDG_CACHE_HOME/ssq_ros
  (else ~/.cache/ssq_ros), keyed by the sha256 of the URDF content, the configured joints and
  the sphere list; written atomically, and a file that does not check out is recomputed.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pinocchio as pin

from ssq_ros.storage import atomic_write

coal = pin.coal  # the collision library pinocchio is built with (coal, formerly hpp-fcl)

SPACING = 0.005
"""Default sample spacing on collision surfaces [m]."""
CACHE_VERSION = 1


@dataclass(frozen=True)
class LinkPoints:
    """The collision geometry of one moving link as points."""

    link: str
    joint: int
    """pinocchio parent joint (in the reduced model): the rigid body the link belongs to."""
    placement: pin.SE3
    """the link frame in the parent joint's frame."""
    points: np.ndarray
    """(N, 3) points in the parent joint's frame."""

    def in_link_frame(self) -> np.ndarray:
        rotation, translation = self.placement.rotation, self.placement.translation
        return (self.points - translation) @ rotation


def _grid_steps(length: float, spacing: float) -> int:
    return max(1, math.ceil(length / spacing))


def _triangle_samples(vertices: np.ndarray, triangles: np.ndarray, spacing: float) -> np.ndarray:
    """Every vertex, plus a barycentric grid on each triangle with sub-edges <= spacing."""
    corners = vertices[triangles]  # (T, 3, 3)
    edges = np.stack([np.linalg.norm(corners[:, i] - corners[:, (i + 1) % 3], axis=1)
                      for i in range(3)], axis=1)
    steps = np.maximum(1, np.ceil(edges.max(axis=1) / spacing)).astype(int)
    out = [vertices]
    for n in np.unique(steps):
        if n == 1:
            continue  # the vertices already are the grid
        i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing='ij')
        keep = i + j <= n
        bary = np.stack([i[keep], j[keep], n - i[keep] - j[keep]], axis=1) / n  # (G, 3)
        out.append(np.einsum('gk,tkd->tgd', bary, corners[steps == n]).reshape(-1, 3))
    return np.concatenate(out)


def _box_samples(half: np.ndarray, spacing: float) -> np.ndarray:
    faces = []
    for axis in range(3):
        u, v = [a for a in range(3) if a != axis]
        gu = np.linspace(-half[u], half[u], _grid_steps(2 * half[u], spacing) + 1)
        gv = np.linspace(-half[v], half[v], _grid_steps(2 * half[v], spacing) + 1)
        uu, vv = np.meshgrid(gu, gv, indexing='ij')
        for sign in (-1.0, 1.0):
            face = np.zeros((uu.size, 3))
            face[:, u], face[:, v], face[:, axis] = uu.ravel(), vv.ravel(), sign * half[axis]
            faces.append(face)
    return np.concatenate(faces)


def _ring_angles(radius: float, spacing: float) -> np.ndarray:
    count = max(8, _grid_steps(2 * np.pi * radius, spacing))
    return np.linspace(0.0, 2 * np.pi, count, endpoint=False)


def _disk_samples(radius: float, z: float, spacing: float) -> np.ndarray:
    rings = [np.array([[0.0, 0.0, z]])]
    for r in np.linspace(0.0, radius, _grid_steps(radius, spacing) + 1)[1:]:
        a = _ring_angles(r, spacing)
        rings.append(np.c_[r * np.cos(a), r * np.sin(a), np.full(a.size, z)])
    return np.concatenate(rings)


def _cylinder_side(radius: float, half_length: float, spacing: float) -> np.ndarray:
    a = _ring_angles(radius, spacing)
    zs = np.linspace(-half_length, half_length, _grid_steps(2 * half_length, spacing) + 1)
    ring = np.c_[radius * np.cos(a), radius * np.sin(a)]
    return np.concatenate([np.c_[ring, np.full(a.size, z)] for z in zs])


def _hemisphere(radius: float, z: float, sign: float, spacing: float) -> np.ndarray:
    polar = np.linspace(0.0, np.pi / 2, _grid_steps(np.pi / 2 * radius, spacing) + 1)
    rows = []
    for theta in polar:
        r = radius * np.sin(theta)
        a = _ring_angles(r, spacing) if r > 1e-12 else np.zeros(1)
        rows.append(np.c_[r * np.cos(a), r * np.sin(a),
                          np.full(a.size, z + sign * radius * np.cos(theta))])
    return np.concatenate(rows)


def geometry_samples(geometry, spacing: float = SPACING) -> np.ndarray:
    """Points on one coal collision geometry, in its own frame; unknown kinds are an error."""
    if isinstance(geometry, coal.BVHModelBase):
        vertices = np.asarray(geometry.vertices(), dtype=float).reshape(-1, 3)
        triangles = np.array([[t[0], t[1], t[2]] for t in
                              (geometry.tri_indices(i) for i in range(geometry.num_tris))],
                             dtype=int).reshape(-1, 3)
        if triangles.size == 0:
            return vertices
        return _triangle_samples(vertices, triangles, spacing)
    if isinstance(geometry, coal.Box):
        return _box_samples(np.asarray(geometry.halfSide, dtype=float), spacing)
    if isinstance(geometry, coal.Cylinder):
        r, h = float(geometry.radius), float(geometry.halfLength)
        return np.concatenate([_cylinder_side(r, h, spacing), _disk_samples(r, h, spacing),
                               _disk_samples(r, -h, spacing)])
    if isinstance(geometry, coal.Capsule):
        r, h = float(geometry.radius), float(geometry.halfLength)
        return np.concatenate([_cylinder_side(r, h, spacing), _hemisphere(r, h, 1.0, spacing),
                               _hemisphere(r, -h, -1.0, spacing)])
    if isinstance(geometry, coal.Sphere):
        r = float(geometry.radius)
        return np.concatenate([_hemisphere(r, 0.0, 1.0, spacing),
                               _hemisphere(r, 0.0, -1.0, spacing)])
    raise ValueError(f'unsupported collision geometry {type(geometry).__name__} (supported: '
                     'meshes, boxes, cylinders, spheres, capsules)')


def package_search_dirs() -> list[str]:
    """Folders under which `package://pkg/...` mesh URIs are found, as ROS tools would search."""
    import sysconfig
    dirs = []
    for entry in os.environ.get('ROS_PACKAGE_PATH', '').split(os.pathsep):
        if entry:
            dirs += [entry, str(Path(entry).parent)]
    for prefix in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep):
        if prefix:
            dirs.append(str(Path(prefix) / 'share'))
    for key in ('purelib', 'platlib'):
        dirs.append(str(Path(sysconfig.get_paths()[key]) / 'cmeel.prefix' / 'share'))
    return [d for i, d in enumerate(dirs) if Path(d).is_dir() and d not in dirs[:i]]


def collision_points(urdf: Path, full: pin.Model, locked: Sequence[int],
                     spacing: float = SPACING) -> dict[str, LinkPoints]:
    """Points of every moving link's collision geometry, keyed by URDF link name.

    `full` is the URDF's pinocchio model, `locked` the joints the robot model locks at their
    neutral position. Links fixed to the world after the reduction are left out.
    """
    geom = pin.GeometryModel()
    pin.buildGeomFromUrdf(full, str(urdf), pin.COLLISION, geom,
                          package_dirs=package_search_dirs())
    model = full
    if locked:
        model, geom = pin.buildReducedModel(full, geom, list(locked), pin.neutral(full))
    grouped: dict[str, list[np.ndarray]] = {}
    joints: dict[str, tuple[int, pin.SE3]] = {}
    for obj in geom.geometryObjects:
        if obj.parentJoint == 0:
            continue
        frame = model.frames[obj.parentFrame]
        try:
            local = geometry_samples(obj.geometry, spacing)
        except ValueError as exc:
            raise ValueError(f'link {frame.name!r}, geometry {obj.name!r}: {exc}') from None
        placement = obj.placement
        grouped.setdefault(frame.name, []).append(
            local @ placement.rotation.T + placement.translation)
        joints[frame.name] = (obj.parentJoint, frame.placement.copy())
    return {link: LinkPoints(link=link, joint=joints[link][0], placement=joints[link][1],
                             points=np.concatenate(parts)) for link, parts in grouped.items()}


def _uncovered(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> float:
    """max over points of the distance outside the union of the spheres (<= 0: all inside)."""
    worst = -np.inf
    for start in range(0, len(points), 4096):
        chunk = points[start:start + 4096]
        gaps = np.linalg.norm(chunk[:, None] - centres[None], axis=2) - radii
        worst = max(worst, float(gaps.min(axis=1).max()))
    return worst


def cover_errors(links: dict[str, LinkPoints], sphere_joints: np.ndarray,
                 sphere_centres: np.ndarray, sphere_radii: np.ndarray) -> dict[str, float]:
    """Per link: how far its geometry sticks out of its rigid group's spheres [m], >= 0.

    `sphere_centres` are in the frames of the spheres' parent joints `sphere_joints`. A link
    whose rigid group has no sphere gets `inf`.
    """
    out = {}
    for link, data in links.items():
        mine = sphere_joints == data.joint
        if not np.any(mine):
            out[link] = math.inf
            continue
        out[link] = max(0.0, _uncovered(data.points, sphere_centres[mine], sphere_radii[mine]))
    return out


def sphere_errors(links: dict[str, LinkPoints], errors: dict[str, float],
                  sphere_joints: np.ndarray) -> np.ndarray:
    """Each sphere carries the worst error of the links rigidly attached with it."""
    out = np.zeros(len(sphere_joints))
    for link, error in errors.items():
        if math.isfinite(error):
            mine = sphere_joints == links[link].joint
            out[mine] = np.maximum(out[mine], error)
    return out


# ---------------------------------------------------------------------------------------------
# fitting


def _enclosing_ball(points: np.ndarray, iterations: int = 200) -> tuple[np.ndarray, float]:
    """A near-minimal enclosing ball (Badoiu-Clarkson); the radius always encloses all points."""
    centre = 0.5 * (points.min(axis=0) + points.max(axis=0))
    for i in range(1, iterations + 1):
        far = points[np.argmax(np.einsum('nd,nd->n', points - centre, points - centre))]
        centre = centre + (far - centre) / (i + 1)
    return centre, float(np.linalg.norm(points - centre, axis=1).max())


def _kmeans(points: np.ndarray, k: int, iterations: int = 30) -> np.ndarray:
    """Cluster labels; seeds are quantiles along the principal axis (deterministic)."""
    mean = points.mean(axis=0)
    axis = np.linalg.svd(points - mean, full_matrices=False)[2][0]
    along = (points - mean) @ axis
    order = np.argsort(along)
    seeds = np.array([points[order[(2 * i + 1) * len(points) // (2 * k)]] for i in range(k)])
    labels = np.zeros(len(points), dtype=int)
    for _ in range(iterations):
        dist = np.linalg.norm(points[:, None] - seeds[None], axis=2)
        new = dist.argmin(axis=1)
        for c in range(k):
            if np.any(new == c):
                seeds[c] = points[new == c].mean(axis=0)
        if np.array_equal(new, labels):
            break
        labels = new
    return labels


@dataclass(frozen=True)
class LinkFit:
    centres: np.ndarray
    radii: np.ndarray

    volume: float
    """volume of the union of the spheres [m^3] (estimated on a grid): what the fit keeps
    small, since the safe set treats all of it as arm."""


def union_volume(centres: np.ndarray, radii: np.ndarray, cells: int = 40) -> float:
    """Volume of a union of spheres, counted on a regular grid of cells^3 over its bounds."""
    low, high = (centres - radii[:, None]).min(axis=0), (centres + radii[:, None]).max(axis=0)
    axes = [np.linspace(lo, hi, cells, endpoint=False) + (hi - lo) / (2 * cells)
            for lo, hi in zip(low, high, strict=True)]
    grid = np.stack(np.meshgrid(*axes, indexing='ij'), axis=-1).reshape(-1, 3)
    inside = np.zeros(len(grid), dtype=bool)
    for centre, radius in zip(centres, radii, strict=True):
        inside |= np.einsum('nd,nd->n', grid - centre, grid - centre) <= radius ** 2
    return float(inside.mean() * np.prod(high - low))


def _cover_with(points: np.ndarray, sample: np.ndarray, k: int, resolution: float) -> LinkFit:
    """k spheres: k-means on `sample`, every point to its nearest cluster, each sphere the
    near-minimal enclosing ball of its cluster (centre from the sample, radius from all)."""
    labels = _kmeans(sample, k)
    seeds = np.array([sample[labels == c].mean(axis=0) for c in range(k) if np.any(labels == c)])
    nearest = np.linalg.norm(points[:, None] - seeds[None], axis=2).argmin(axis=1)
    near_sample = np.linalg.norm(sample[:, None] - seeds[None], axis=2).argmin(axis=1)
    centres, radii = [], []
    for c in range(len(seeds)):
        members = points[nearest == c]
        if len(members) == 0:
            continue
        part = sample[near_sample == c]
        centre, _ = _enclosing_ball(part if len(part) else members)
        centre = np.round(centre / resolution) * resolution
        radius = float(np.linalg.norm(members - centre, axis=1).max())
        centres.append(centre)
        # rounded up, plus one step: the written decimals still cover every point
        radii.append((math.ceil(radius / resolution - 1e-9) + 1) * resolution)
    centres, radii = np.array(centres), np.array(radii)
    return LinkFit(centres, radii, union_volume(centres, radii))


def fit_link_spheres(points: np.ndarray, max_spheres: int = 6, slack: float = 0.1,
                     resolution: float = 1e-4, sample_size: int = 3000) -> LinkFit:
    """Spheres that contain every one of `points` (N, 3).

    For k = 1..max_spheres the points are split into k clusters; more spheres hug the geometry
    more tightly but cost time in every support check, so the fit is the fewest spheres whose
    union volume is within `slack` of the smallest one found. Centres are rounded to
    `resolution` and radii rounded up after it, so the written decimals still cover.
    """
    stride = max(1, len(points) // sample_size)
    sample = points[::stride]
    fits = [_cover_with(points, sample, k, resolution)
            for k in range(1, min(max_spheres, len(sample)) + 1)]
    smallest = min(fit.volume for fit in fits)
    return next(fit for fit in fits if fit.volume <= (1.0 + slack) * smallest)


# ---------------------------------------------------------------------------------------------
# cache


def cache_dir() -> Path:
    base = os.environ.get('XDG_CACHE_HOME') or str(Path.home() / '.cache')
    return Path(base) / 'ssq_ros'


def cover_key(urdf_bytes: bytes, joint_names: Sequence[str], spheres: Sequence[tuple],
              spacing: float) -> str:
    """sha256 of everything the verification result depends on (the meshes are named by the
    URDF; changing a mesh file in place is not detected: change its name or clear the cache)."""
    payload = json.dumps({'version': CACHE_VERSION, 'pin': pin.__version__,
                          'urdf': hashlib.sha256(urdf_bytes).hexdigest(),
                          'joints': list(joint_names), 'spacing': spacing,
                          'spheres': [[str(n), str(f), [float(x) for x in o], float(r)]
                                      for n, f, o, r in spheres]}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _read_cache(path: Path, key: str, n_spheres: int) -> tuple[dict, np.ndarray] | None:
    """The cached result, or None when the file is missing or does not check out."""
    try:
        stored = json.loads(path.read_text())
        payload = stored['payload']
        if stored['digest'] != _digest(payload) or payload['key'] != key:
            return None
        links = {str(k): float(v) for k, v in payload['links'].items()}
        spheres = np.array(payload['spheres'], dtype=float)
        if spheres.shape != (n_spheres,) or not np.all(np.isfinite(spheres)) or np.any(
                spheres < 0) or any(not v >= 0 for v in links.values()):
            return None
        return links, spheres
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def cached_cover_errors(key: str, n_spheres: int,
                        compute: Callable[[], tuple[dict, np.ndarray]]
                        ) -> tuple[dict[str, float], np.ndarray]:
    """(per-link errors, per-sphere errors) from the disk cache, or from `compute`."""
    path = cache_dir() / f'cover-{key}.json'
    found = _read_cache(path, key, n_spheres)
    if found is None:
        links, spheres = compute()
        # inf (a link without spheres) is not cached: loading fails anyway
        if all(math.isfinite(v) for v in links.values()):
            payload = {'key': key, 'links': links, 'spheres': [float(s) for s in spheres]}
            with contextlib.suppress(OSError):
                text = json.dumps({'payload': payload, 'digest': _digest(payload)}, indent=1)
                atomic_write(path, lambda file: file.write(text.encode()))
        found = links, np.asarray(spheres, dtype=float)
    return found
