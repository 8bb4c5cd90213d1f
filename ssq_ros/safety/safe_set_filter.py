"""The whole safe set at the last filter: every command checked by the support check before it
reaches the arm, whoever sent it.

The nodes that choose actions (the behavior controller, the shielded executor) already pick only
commands the support check accepts. This filter runs the same check again in the hardware
interface, at the measured state, so that a command from anywhere else (a user's script, a buggy
node, a second graph started by mistake) cannot drive the arm out of S either.

Timing model (docs/safety.md, "Who guarantees what"): a command acts `lead` seconds after the
measured state (the state's age plus the controller's actuation delay); until then the arm keeps
following the command sent before. The filter predicts the state at that moment along the
support check's own velocity-ramp model, then asks the support check whether the new command
keeps the arm in S from there, over its period and the braking to rest that follows. The check's
period must cover how long a command can stay in force (one control period plus one actuation
delay, see `SafeSetFilter.check_period`).

A refused command is scaled down along its direction (as MoveIt Servo slows down near a
collision) to the largest of a fixed ladder of fractions that passes; if none passes, the arm is
braked to rest (the hold command, zero velocity), which the support check's braking model makes
the safest command there is.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ssq_ros.safety.safe_set import Verdict
from ssq_ros.safety.support import SupportCheck

# Fractions of a refused command tried in one batch, largest first; 0 (brake) is the fallback.
SCALE_LADDER = (0.75, 0.5, 0.35, 0.2, 0.1, 0.05)


@dataclass(frozen=True)
class FilterResult:
    """The command to send and how the filter changed it.

    `scale` is 1 for a command passed unchanged, in (0, 1) for one scaled down, 0 for braking.
    For a refused command, `explain()` names the tightest constraint along its path (computed
    on demand: a node logs it at most once a second, and it costs another pass of the check).
    """

    velocity: np.ndarray
    scale: float
    _why: Callable[[], Verdict] | None = None

    @property
    def refused(self) -> bool:
        return self._why is not None

    def explain(self) -> Verdict | None:
        """The tightest constraint of the refused command's path; None if it passed."""
        return None if self._why is None else self._why()


class SafeSetFilter:
    """Support check of single commands at measured states, with a scale-down fallback."""

    def __init__(self, support: SupportCheck, timing_window: int = 2000) -> None:
        self.support = support
        self.dof = support.dof
        self.check_times: deque[float] = deque(maxlen=timing_window)
        """Seconds per `filter` call, most recent last (p50/p99 for diagnostics)."""
        self._last_scale = 1.0

    @staticmethod
    def check_period(control_period: float, actuation_delay: float) -> float:
        """How long one command may stay in force: until the next one, sent a control period
        later, has passed the same actuation delay (a sampled controller may hold it for its
        whole update period, which the delay includes)."""
        return control_period + actuation_delay

    def filter(self, q: np.ndarray, qdot: np.ndarray, command: np.ndarray,
               previous: np.ndarray, lead: float) -> FilterResult:
        """The largest fraction of `command` the support check accepts from the state the arm
        will be in when the command acts; zero velocity if none.

        `q`, `qdot`: the measured state; `previous`: the commands the arm follows until this
        one acts (the last one, or the last few oldest first, `SupportCheck.predict`); `lead`
        [s]: the measured state's age plus the actuation delay. Malformed input raises
        ValueError (the gate validates commands and states before they get here).
        """
        start = time.perf_counter()
        try:
            return self._filter(q, qdot, np.asarray(command, dtype=float), previous, lead)
        finally:
            self.check_times.append(time.perf_counter() - start)

    def _filter(self, q: np.ndarray, qdot: np.ndarray, command: np.ndarray,
                previous: np.ndarray, lead: float) -> FilterResult:
        if not np.any(command):
            return FilterResult(command.copy(), 1.0)  # hold: the safest command there is
        # The support check predicts the state `lead` ahead under `previous` and judges the
        # command from there. One pass: the command alone while commands pass (the common
        # case), the command and its whole ladder in one batch while they are being refused
        # (at a boundary, where every period would otherwise need two passes).
        previous = np.asarray(previous, dtype=float)
        scales = np.array((1.0,) if self._last_scale == 1.0 else (1.0,) + SCALE_LADDER)
        accepted = self.support.is_safe(q, qdot, scales[:, None] * command[None], previous,
                                        lead)
        if not accepted[0] and len(scales) == 1:
            scales = np.array(SCALE_LADDER)
            accepted = self.support.is_safe(q, qdot, scales[:, None] * command[None],
                                            previous, lead)
        scale = float(scales[int(np.argmax(accepted))]) if accepted.any() else 0.0
        self._last_scale = scale
        if scale == 1.0:
            return FilterResult(command.copy(), 1.0)

        def why() -> Verdict:
            return self.support.explain(q, qdot, command, previous, lead)

        return FilterResult(scale * command, scale, why)  # the ladder is largest first

    def timing_ms(self) -> tuple[float, float, int]:
        """(p50, p99) of the recent `filter` calls in milliseconds, and how many were timed."""
        if not self.check_times:
            return float('nan'), float('nan'), 0
        times = np.fromiter(self.check_times, dtype=float) * 1e3
        return float(np.percentile(times, 50)), float(np.percentile(times, 99)), len(times)
