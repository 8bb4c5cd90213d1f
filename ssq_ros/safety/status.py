"""Every safety reaction the node graph can take, named once, with a counter.

Each node publishes its current reaction and how often each one happened, so a user can always see
why the arm slowed or stopped (the same idea as MoveIt Servo's status codes). Levels follow
diagnostic_msgs/DiagnosticStatus: OK=0, WARN=1, ERROR=2, STALE=3, so a node maps them directly.
"""
from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable

OK_LEVEL, WARN_LEVEL, ERROR_LEVEL, STALE_LEVEL = 0, 1, 2, 3


class SafetyStatus(enum.Enum):
    """A safety reaction: (diagnostic level, what happened and what the graph did about it)."""

    OK = (OK_LEVEL, 'command forwarded unchanged')
    # Commands shaped on their way to the arm.
    POSITION_LIMIT_CLAMP = (WARN_LEVEL, 'joint velocity reduced so the arm can brake before '
                            'its position limit (with margin)')
    VELOCITY_LIMIT_SCALE = (WARN_LEVEL, 'whole velocity vector scaled down (direction kept) '
                            'to respect joint velocity limits')
    ACCELERATION_LIMIT_CLAMP = (WARN_LEVEL, 'change from the last sent command scaled down to '
                                'respect joint acceleration limits')
    SAFE_SET_SCALE = (WARN_LEVEL, 'command scaled down along its direction: at full size it '
                      'could leave the safe set (zones, workspace, table, limits) within the '
                      'control period or its braking')
    # Incoming commands refused; the arm is stopped instead.
    COMMAND_REJECTED_NONFINITE = (ERROR_LEVEL, 'command contains NaN or inf; refused, arm '
                                  'stopped')
    COMMAND_REJECTED_SIZE = (ERROR_LEVEL, 'command has the wrong number of joints; refused, '
                             'arm stopped')
    # Incoming joint states refused (the last good state ages and the watchdog stops the arm).
    UNKNOWN_JOINT = (ERROR_LEVEL, 'joint state names a joint that is not configured; refused')
    MISSING_JOINT = (ERROR_LEVEL, 'joint state lacks a configured joint; refused')
    DUPLICATE_JOINT = (ERROR_LEVEL, 'joint state names a joint twice; refused')
    STATE_REJECTED_SIZE = (ERROR_LEVEL, 'joint state arrays and names differ in length; '
                           'refused')
    STATE_REJECTED_NONFINITE = (ERROR_LEVEL, 'joint state contains NaN or inf; refused')
    STATE_OUT_OF_ORDER = (ERROR_LEVEL, 'joint state stamp is not newer than the last one; '
                          'refused')
    STATE_IMPLAUSIBLE = (ERROR_LEVEL, 'joint state position far outside the joint limits '
                         '(wrong robot config or units?); refused')
    STATE_STAMP_OFF_CLOCK = (ERROR_LEVEL, 'joint state stamp is too far from the clock; refused')
    # Stops: the arm is actively commanded to stand still.
    NO_STATE_YET = (STALE_LEVEL, 'no valid joint state received yet; holding still')
    NO_COMMAND_YET = (OK_LEVEL, 'no command received yet; holding still')
    STALE_STATE_STOP = (STALE_LEVEL, 'no fresh joint state within the timeout; stopped')
    STALE_COMMAND_STOP = (WARN_LEVEL, 'no fresh command within the timeout; stopped')
    COMMAND_FOR_OTHER_STATE = (WARN_LEVEL, 'command was computed for another state than the '
                               'current one (e.g. before a reset); dropped, not applied')
    ESTOPPED = (ERROR_LEVEL, 'emergency stop latched; only stop commands until reset')
    SAFE_SET_STOP = (ERROR_LEVEL, 'no fraction of the command keeps the arm in the safe set; '
                     'braking to rest')
    MULTIPLE_COMMANDERS_STOP = (ERROR_LEVEL, 'more than one node publishes joint commands; '
                                'stopped until only one does')
    UNKNOWN_COMMANDER_STOP = (ERROR_LEVEL, 'a node that is not one of the configured commanders '
                              'publishes joint commands; commands refused, the arm stopped, '
                              'until it is gone')
    TRACKING_FAULT_STOP = (ERROR_LEVEL, 'the measured motion departed from the servo model '
                           'of the support check beyond the tracking bounds (lag, slip, '
                           'latency); stopped and latched until /ssq/estop_reset')
    # Reactions of the learning and execution nodes.
    NO_POLICY_YET = (WARN_LEVEL, 'no policy received yet; behavior controller acts instead')
    ACTION_OUTSIDE_SUPPORT_FALLBACK = (WARN_LEVEL, 'policy action outside the safe support; '
                                       'fell back to the behavior controller')
    NO_SAFE_ACTION_STOP = (ERROR_LEVEL, 'no action in the safe support at this state; stopped')
    UNSAFE_STATE = (ERROR_LEVEL, 'the measured state is outside the safe set')
    GOAL_REFUSED = (WARN_LEVEL, 'operator goal (/clicked_point) refused: not a robot frame, '
                    'outside the goal box, unreachable or unsafe; the last goal stays')
    MONITOR_ESTOP = (ERROR_LEVEL, 'the measured state left the safe set or came within the '
                     'configured margin of it; e-stop latched through hardware_interface')

    def __init__(self, level: int, description: str) -> None:
        self.level = level
        self.description = description

    @property
    def stops_arm(self) -> bool:
        """True for reactions whose outgoing command is a stop."""
        return self in _STOPS


_STOPS = frozenset({
    SafetyStatus.COMMAND_REJECTED_NONFINITE, SafetyStatus.COMMAND_REJECTED_SIZE,
    SafetyStatus.NO_STATE_YET, SafetyStatus.NO_COMMAND_YET, SafetyStatus.STALE_STATE_STOP,
    SafetyStatus.STALE_COMMAND_STOP, SafetyStatus.ESTOPPED, SafetyStatus.NO_SAFE_ACTION_STOP,
    SafetyStatus.SAFE_SET_STOP, SafetyStatus.MULTIPLE_COMMANDERS_STOP,
    SafetyStatus.UNKNOWN_COMMANDER_STOP, SafetyStatus.TRACKING_FAULT_STOP,
})


def most_severe(statuses: Iterable[SafetyStatus]) -> SafetyStatus:
    """The reaction to report when several apply: highest level, then first given; OK if none."""
    worst = SafetyStatus.OK
    for status in statuses:
        if status.level > worst.level or worst is SafetyStatus.OK:
            worst = status
    return worst


class StatusCounter:
    """How often each reaction happened, and the most recent one.

    Nodes record one entry per outgoing command (for the reactions that shaped it) and one per
    refused incoming message, so the counts read as 'commands sent / messages refused because of'.
    """

    def __init__(self) -> None:
        self._counts: Counter[SafetyStatus] = Counter()
        self.current = SafetyStatus.OK

    def record(self, statuses: Iterable[SafetyStatus]) -> SafetyStatus:
        """Count `statuses` (an empty batch counts as OK); return and remember the most severe."""
        batch = list(statuses) or [SafetyStatus.OK]
        self._counts.update(batch)
        self.current = most_severe(batch)
        return self.current

    def count(self, status: SafetyStatus) -> int:
        return self._counts[status]

    def as_dict(self) -> dict[str, int]:
        """Counts of every reaction that happened at least once, by name, in enum order."""
        return {s.name: self._counts[s] for s in SafetyStatus if self._counts[s]}
