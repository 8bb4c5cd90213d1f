"""std_msgs/Float64MultiArray <-> the labelled flat layouts of `ssq_ros.graph_logic.transitions`,
and joint commands that say which measured state they answer.

Each segment of the vector is one `layout.dim` entry: `label` = field name, `size` = its number
of values, `stride` = the same size (a 1-D segment); `data_offset` is 0. Any node can build or
read these messages with std_msgs alone (docs/topics.md lists the fields).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from std_msgs.msg import Float64MultiArray, MultiArrayDimension, MultiArrayLayout

from ssq_ros.graph_logic.transitions import (
    EPISODE_LAYOUT,
    EpisodeSummary,
    FlatLayout,
    Transition,
    decision_layout,
    pack_episode,
    pack_transition,
    transition_layout,
    unpack_episode,
    unpack_transition,
)
from ssq_ros.nodes.interfaces import TRANSITION_QOS  # noqa: F401  (importable from here too)
from ssq_ros.task.spaces import TaskSpaces


def to_message(layout: FlatLayout, data: np.ndarray) -> Float64MultiArray:
    dims = [MultiArrayDimension(label=name, size=size, stride=size)
            for name, size in zip(layout.fields, layout.sizes, strict=True)]
    return Float64MultiArray(layout=MultiArrayLayout(dim=dims, data_offset=0),
                             data=data.tolist())


def _labels_sizes(msg: Float64MultiArray) -> tuple[list[str], list[int]]:
    if msg.layout.data_offset != 0:
        raise ValueError(f'layout.data_offset must be 0, got {msg.layout.data_offset}')
    return [d.label for d in msg.layout.dim], [d.size for d in msg.layout.dim]


def transition_message(spaces: TaskSpaces, t: Transition) -> Float64MultiArray:
    return to_message(transition_layout(spaces), pack_transition(spaces, t))


def read_transition(spaces: TaskSpaces, msg: Float64MultiArray) -> Transition:
    """Decode; a ValueError names the field that is wrong."""
    labels, sizes = _labels_sizes(msg)
    return unpack_transition(spaces, labels, sizes, msg.data)


def episode_message(summary: EpisodeSummary) -> Float64MultiArray:
    return to_message(EPISODE_LAYOUT, pack_episode(summary))


def read_episode(msg: Float64MultiArray) -> EpisodeSummary:
    labels, sizes = _labels_sizes(msg)
    return unpack_episode(labels, sizes, msg.data)


def decision_message(spaces: TaskSpaces, stamp: float, action) -> Float64MultiArray:
    layout = decision_layout(spaces)
    return to_message(layout, layout.pack({'stamp': stamp, 'action': action}))


def read_decision(spaces: TaskSpaces, msg: Float64MultiArray) -> tuple[float, int | np.ndarray]:
    """(state stamp, action) of an executor decision; a ValueError names what is wrong."""
    labels, sizes = _labels_sizes(msg)
    parts = decision_layout(spaces).unpack(labels, sizes, msg.data)
    action = parts['action']
    if spaces.discrete:
        index = float(action[0])
        if index != int(index) or not 0 <= index < spaces.action_size:
            raise ValueError(f'action: {index} is not an index in [0, {spaces.action_size})')
        return float(parts['stamp'][0]), int(index)
    return float(parts['stamp'][0]), action


# A command's single layout dimension is labelled `joint_velocity@<stamp in ns>`: the stamp of
# the measured state it was computed from. ros2_control controllers and the hardware_interface
# ignore the layout; the lockstep simulator applies a command only to the state it answers.
_ANSWERS = 'joint_velocity@'


def command_message(command: np.ndarray, stamp: float) -> Float64MultiArray:
    """Joint velocities computed from the state stamped `stamp` [s]."""
    dim = MultiArrayDimension(label=f'{_ANSWERS}{int(round(stamp * 1e9))}',
                              size=len(command), stride=len(command))
    return Float64MultiArray(layout=MultiArrayLayout(dim=[dim], data_offset=0),
                             data=[float(v) for v in command])


class LastCommand:
    """The last command a commander sent and the stamp of the state it answers.

    The lockstep simulator re-sends a state it got no command for: the command was lost, or
    refused while a commander's name was not yet known to it (a restarted simulator learns the
    names of its peers after their publishers). The answer is that very command again, computed
    for that state, never a new decision and never an older command."""

    def __init__(self, publisher: Any, extra: dict[str, str]) -> None:
        self.publisher, self.extra = publisher, extra  # the node's StatusReporter.extra
        self.stamp: float | None = None
        self.message: Float64MultiArray | None = None
        self.repeats = 0

    def send(self, command: np.ndarray, stamp: float) -> None:
        """Publish `command`, computed for the state stamped `stamp`, and remember it."""
        self.stamp, self.message = stamp, command_message(command, stamp)
        self.publisher.publish(self.message)

    def send_again(self, stamp: float) -> bool:
        """For a re-sent state stamped `stamp`: publish its command again; False if none was
        sent for it (the state is not answered yet)."""
        if self.message is None or stamp != self.stamp:
            return False
        self.repeats += 1
        self.extra['commands_repeated'] = str(self.repeats)
        self.publisher.publish(self.message)
        return True


def answered_stamp(msg: Float64MultiArray) -> float | None:
    """The stamp [s] of the state a command answers, or None if it does not say."""
    if len(msg.layout.dim) != 1 or not msg.layout.dim[0].label.startswith(_ANSWERS):
        return None
    digits = msg.layout.dim[0].label[len(_ANSWERS):]
    return int(digits) * 1e-9 if digits.isdigit() else None
