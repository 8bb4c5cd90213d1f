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
from dataclasses import dataclass

import numpy as np

from ssq_ros.safety.safe_set import Verdict
from ssq_ros.safety.support import SupportCheck, swept_path

# Fractions of a refused command tried in one batch, largest first; 0 (brake) is the fallback.
SCALE_LADDER = (0.75, 0.5, 0.35, 0.2, 0.1, 0.05)


@dataclass(frozen=True)
class FilterResult:
    """The command to send and how the filter changed it.

    `scale` is 1 for a command passed unchanged, in (0, 1) for one scaled down, 0 for braking.
    `refused` holds the tightest constraint along the original command's path when it was
    refused (for the log), else None.
    """

    velocity: np.ndarray
    scale: float
    refused: Verdict | None


class SafeSetFilter:
    """Support check of single commands at measured states, with a scale-down fallback."""

    def __init__(self, support: SupportCheck, timing_window: int = 2000) -> None:
        self.support = support
        self.dof = support.dof
        self.check_times: deque[float] = deque(maxlen=timing_window)
        """Seconds per `filter` call, most recent last (p50/p99 for diagnostics)."""

    @staticmethod
    def check_period(control_period: float, actuation_delay: float) -> float:
        """How long one command may stay in force: until the next one, sent a control period
        later, has passed the same actuation delay (a sampled controller may hold it for its
        whole update period, which the delay includes)."""
        return control_period + actuation_delay

    def predict(self, q: np.ndarray, qdot: np.ndarray, previous: np.ndarray, lead: float
                ) -> tuple[np.ndarray, np.ndarray]:
        """State (q, qdot) `lead` seconds after (q, qdot) while the arm ramps toward the
        `previous` command, along the support check's velocity-ramp model."""
        if lead <= 0.0:
            return np.asarray(q, dtype=float), np.asarray(qdot, dtype=float)
        positions, velocities, _ = swept_path(q, qdot, np.asarray(previous, dtype=float)[None],
                                              lead, self.support.rate, 1, 1)
        return positions[0, 0], velocities[0, 0]

    def filter(self, q: np.ndarray, qdot: np.ndarray, command: np.ndarray,
               previous: np.ndarray, lead: float) -> FilterResult:
        """The largest fraction of `command` the support check accepts from the state the arm
        will be in when the command acts; zero velocity if none.

        `q`, `qdot`: the measured state; `previous`: the command the arm follows until this one
        acts; `lead` [s]: the measured state's age plus the actuation delay. Malformed input
        raises ValueError (the gate validates commands and states before they get here).
        """
        start = time.perf_counter()
        try:
            return self._filter(q, qdot, np.asarray(command, dtype=float), previous, lead)
        finally:
            self.check_times.append(time.perf_counter() - start)

    def _filter(self, q: np.ndarray, qdot: np.ndarray, command: np.ndarray,
                previous: np.ndarray, lead: float) -> FilterResult:
        q_act, qdot_act = self.predict(q, qdot, previous, lead)
        if not np.any(command):
            return FilterResult(command.copy(), 1.0, None)  # hold: the safest command there is
        # The common case first: one candidate, one pass of the check.
        if self.support.is_safe(q_act, qdot_act, command[None])[0]:
            return FilterResult(command.copy(), 1.0, None)
        refused = self.support.explain(q_act, qdot_act, command)
        scales = np.array(SCALE_LADDER)
        accepted = self.support.is_safe(q_act, qdot_act, scales[:, None] * command[None])
        if accepted.any():
            scale = float(scales[int(np.argmax(accepted))])  # the ladder is largest first
            return FilterResult(scale * command, scale, refused)
        return FilterResult(np.zeros(self.dof), 0.0, refused)

    def timing_ms(self) -> tuple[float, float, int]:
        """(p50, p99) of the recent `filter` calls in milliseconds, and how many were timed."""
        if not self.check_times:
            return float('nan'), float('nan'), 0
        times = np.fromiter(self.check_times, dtype=float) * 1e3
        return float(np.percentile(times, 50)), float(np.percentile(times, 99)), len(times)
