"""The safety monitor's bookkeeping, without ROS: unsafe-state counts, margin colours and when
to latch the e-stop.

Three judges are counted apart. The safe set S (the shield's spheres and clearances, from the
measured joint states), the geometry judge (the URDF's own collision geometry with exact
distances, from the same states: the independent judge on a real arm) and, in simulation, the
referee's verdicts (MuJoCo geometry, no margins; the number every "zero unsafe states" claim of
the project is checked against). The run's phases are bucketed into training (train, extract,
or no run at all) and evaluation (eval_policy, eval_behavior); `unsafe_states_train` / `_eval`
and the minimum margins in them are the referee's when it reports, else the geometry judge's
when it runs, else the safe set's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ssq_ros.graph_logic.phases import RunPhase
from ssq_ros.safety.safe_set import SafeSet

_EVAL = (RunPhase.EVAL_POLICY, RunPhase.EVAL_BEHAVIOR)
JUDGES = ('safe_set', 'geometry', 'referee')  # in rising order of authority


def margin_color(margin: float, comfortable: float) -> tuple[float, float, float, float]:
    """RGBA of a safety margin: green at `comfortable` or more, through yellow to red at 0;
    magenta below 0 (an unsafe state: impossible to miss)."""
    if not math.isfinite(margin) or margin < 0.0:
        return (1.0, 0.0, 1.0, 1.0)
    x = min(margin / comfortable, 1.0)
    return (min(1.0, 2.0 * (1.0 - x)), min(1.0, 2.0 * x), 0.0, 1.0)


@dataclass
class JudgeTally:
    """Counts and the minimum margin of one judge in one bucket."""

    states: int = 0
    unsafe: int = 0
    min_margin: float = math.inf
    worst_constraint: str = ''

    def add(self, unsafe: bool, margin: float, constraint: str) -> None:
        self.states += 1
        self.unsafe += int(unsafe)
        if margin < self.min_margin:
            self.min_margin, self.worst_constraint = margin, constraint


@dataclass
class SafetyTally:
    safe_set: SafeSet
    phase: RunPhase | None = None
    tallies: dict[tuple[str, str], JudgeTally] = field(default_factory=dict)
    last_margin: float = math.nan
    last_constraint: str = ''

    def _bucket(self) -> str:
        return 'eval' if self.phase in _EVAL else 'train'

    def _tally(self, judge: str, bucket: str) -> JudgeTally:
        return self.tallies.setdefault((judge, bucket), JudgeTally())

    def on_state(self, q: np.ndarray, qdot: np.ndarray) -> tuple[bool, float, str]:
        """Judge one measured state against S; (unsafe, min margin, tightest constraint)."""
        verdict = self.safe_set.evaluate(q, qdot)
        self._tally('safe_set', self._bucket()).add(not verdict.safe, verdict.min_margin,
                                                    verdict.constraint)
        self.last_margin, self.last_constraint = verdict.min_margin, verdict.constraint
        return not verdict.safe, verdict.min_margin, verdict.constraint

    def on_referee(self, unsafe: bool, margin: float, constraint: str) -> None:
        self._tally('referee', self._bucket()).add(unsafe, margin, constraint)

    def on_geometry(self, unsafe: bool, margin: float, constraint: str) -> None:
        self._tally('geometry', self._bucket()).add(unsafe, margin, constraint)

    def total(self, judge: str) -> JudgeTally:
        out = JudgeTally()
        for (name, _), tally in self.tallies.items():
            if name == judge:
                out.states += tally.states
                out.unsafe += tally.unsafe
                if tally.min_margin < out.min_margin:
                    out.min_margin, out.worst_constraint = tally.min_margin, \
                        tally.worst_constraint
        return out

    def values(self) -> dict[str, str]:
        """The diagnostic key/values of /ssq/safety/status (docs/topics.md)."""
        judge = next(j for j in JUDGES[::-1] if self.total(j).states or j == 'safe_set')
        out = {'judge': judge}
        for bucket in ('train', 'eval'):
            tally = self.tallies.get((judge, bucket), JudgeTally())
            out[f'unsafe_states_{bucket}'] = str(tally.unsafe)
            out[f'min_margin_{bucket}'] = repr(tally.min_margin) if tally.states else 'nan'
        for name in JUDGES:
            for bucket in ('train', 'eval'):
                tally = self.tallies.get((name, bucket), JudgeTally())
                out[f'{name}_unsafe_states_{bucket}'] = str(tally.unsafe)
            total = self.total(name)
            out[f'{name}_states'] = str(total.states)
            out[f'{name}_unsafe_states'] = str(total.unsafe)
            out[f'{name}_min_margin'] = repr(total.min_margin) if total.states else 'nan'
            out[f'{name}_tightest'] = total.worst_constraint
        return out

    @property
    def unsafe_total(self) -> int:
        return sum(self.total(j).unsafe for j in JUDGES)


@dataclass
class EstopTrigger:
    """When the monitor latches the e-stop: a measured state with a margin below `margin` (0:
    outside S), or an unsafe verdict of the referee.

    Requests repeat at most every `repeat_period` seconds while the condition holds, so a reset
    made while the arm is still outside S is latched again at once: recovering an arm outside S
    is the operator's job (jog mode on the robot's own pendant), never the graph's.
    """

    margin: float
    repeat_period: float = 0.5
    requests: int = 0
    last_reason: str = ''
    _last_request: float = -math.inf

    def on_margin(self, margin: float, constraint: str, now: float) -> str | None:
        """The reason to latch now, or None; `margin` is S's minimum at a measured state."""
        if margin >= self.margin:
            return None
        where = 'outside S' if margin < 0.0 else f'within {self.margin:g} of leaving S'
        return self.request(f'{constraint} margin {margin:.4f} ({where})', now)

    def request(self, reason: str, now: float) -> str | None:
        """Latch for `reason` unless a request went out less than `repeat_period` ago."""
        if now - self._last_request < self.repeat_period:
            return None
        self._last_request = now
        self.requests += 1
        self.last_reason = reason
        return reason
