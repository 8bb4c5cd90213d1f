"""config/sim.yaml: physics, task, end-effector actions and the behavior controller."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ssq_ros.config import load
from ssq_ros.control.safe_behavior import BehaviorConfig
from ssq_ros.safety.actions import ActionConfig
from ssq_ros.sim.reach_avoid import TaskConfig
from ssq_ros.sim.scene import PhysicsConfig


@dataclass(frozen=True)
class SimConfig:
    physics: PhysicsConfig = field(default_factory=PhysicsConfig,
                                   metadata={'doc': 'MuJoCo stepping and the velocity servo'})
    task: TaskConfig = field(default_factory=TaskConfig,
                             metadata={'doc': 'reach-avoid episodes and reward'})
    actions: ActionConfig = field(default_factory=ActionConfig,
                                  metadata={'doc': 'end-effector actions -> joint commands'})
    behavior: BehaviorConfig = field(default_factory=BehaviorConfig,
                                     metadata={'doc': 'the safe behavior controller mu'})


def load_sim_config(path: str | Path) -> SimConfig:
    return load(SimConfig, path)
