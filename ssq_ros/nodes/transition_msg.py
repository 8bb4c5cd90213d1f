"""std_msgs/Float64MultiArray <-> the labelled flat layouts of `ssq_ros.graph_logic.transitions`.

Each segment of the vector is one `layout.dim` entry: `label` = field name, `size` = its number
of values, `stride` = the same size (a 1-D segment); `data_offset` is 0. Any node can build or
read these messages with std_msgs alone (docs/topics.md lists the fields).
"""
from __future__ import annotations

import numpy as np
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
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
from ssq_ros.training.learner import TaskSpaces

# Training data: every message matters and a burst must not overwrite unread ones, so reliable
# with a deep queue; volatile, because a learner that restarts resumes from its checkpoint.
TRANSITION_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000,
                            reliability=ReliabilityPolicy.RELIABLE,
                            durability=DurabilityPolicy.VOLATILE)


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
