"""Count-based exploration: a bonus for reaching positions the collector has rarely reached.

Issue 14's costly task: the way to the goal runs 15-30 cm against the distance reward (over a
region the hand must not sweep), which neither mu's draws nor the induced policy ever take, so
the critic never sees it. A bonus scale / sqrt(n) on the cell of a grid the hand ends in, n the
visits counted so far including this one, added to the reward the critic learns from, makes
rarely reached cells worth reaching until they are not rare (the count-based bonus of
MBIE-EB and #Exploration). It changes only what is learned from, never which actions are
allowed: the collector still acts inside mu's support.
"""
from __future__ import annotations

import math

import numpy as np


class VisitCounts:
    """Visits per cell of a cubic grid over positions (cells of `cell_size` m), and the bonus
    `scale / sqrt(n)` of a visit."""

    def __init__(self, cell_size: float, scale: float):
        if not (math.isfinite(cell_size) and cell_size > 0):
            raise ValueError(f'cell_size must be a positive finite length, got {cell_size!r}')
        if not (math.isfinite(scale) and scale >= 0):
            raise ValueError(f'scale must be a finite value >= 0, got {scale!r}')
        self.cell_size = float(cell_size)
        self.scale = float(scale)
        self.counts: dict[tuple[int, ...], int] = {}

    def cell(self, position) -> tuple[int, ...]:
        position = np.asarray(position, dtype=float)
        if position.ndim != 1 or position.size == 0 or not np.all(np.isfinite(position)):
            raise ValueError(f'position must be a non-empty vector of finite values, got '
                             f'{position!r}')
        return tuple(int(i) for i in np.floor(position / self.cell_size))

    def visit(self, position) -> float:
        """Count a visit to `position`'s cell; its bonus, scale / sqrt(visits so far)."""
        key = self.cell(position)
        count = self.counts.get(key, 0) + 1
        self.counts[key] = count
        return self.scale / math.sqrt(count)

    def state_dict(self) -> dict:
        """Plain lists (a checkpoint is read with torch.load(weights_only=True))."""
        return {'cell_size': self.cell_size, 'scale': self.scale,
                'cells': [list(key) for key in self.counts],
                'counts': list(self.counts.values())}

    def load_state_dict(self, state: dict) -> None:
        if (state.get('cell_size'), state.get('scale')) != (self.cell_size, self.scale):
            raise ValueError(f'visit counts of cell_size {state.get("cell_size")}, scale '
                             f'{state.get("scale")}; these are {self.cell_size}, {self.scale}')
        cells, counts = state.get('cells', []), state.get('counts', [])
        if len(cells) != len(counts) or any(int(n) < 1 for n in counts):
            raise ValueError('visit counts: cells and counts do not match')
        self.counts = {tuple(int(i) for i in key): int(n) for key, n in
                       zip(cells, counts, strict=True)}
