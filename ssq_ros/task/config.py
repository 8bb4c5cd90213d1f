"""The experiment's `sim` section: physics timing, the reach-avoid task, actions and mu.

Every default here is the shipped, tuned value (docs/results.md); an experiment YAML lists only
what it changes. Why some of them are what they are (measured on the package arm):

- task.max_steps 250 (12.5 s at 50 ms): a scripted detour (lift over the zone, cross, descend;
  bench/bench_reach_time.py) reaches all 30 held-out goals within 250 steps (29 within 200),
  median 158 steps. At 0.15 m/s and 200 steps: 12 of 30.
- actions.speed 0.25 m/s: the detour needs a median 213 steps at 0.15 and 171 at 0.30 (the joint
  velocity limits scale fast commands down, and the support check refuses more).
- behavior.goal_preference 2.0: mu reaches 50 % of the held-out goals; at 1.5 it reached 10 % of
  an earlier goal set (45 % at 2.0): few successes in its data to learn the last centimetres.
- behavior.num_samples 8 (K): the target's K forward passes are most of an update: 8 gives
  1.04-1.15x SB3 SAC's updates/s, 16 gave 0.72-0.81x. Measured cost (1 seed each): calibration
  error on mu's data 22 % against 14 % at 16.
- physics: the support check's model (config/safe_set.yaml: support) assumes the velocity
  controller ramps at least as fast as command_acceleration_fraction.

No MuJoCo here: `physics` is plain numbers, which the robot side needs too (control_period is the
support check's horizon); `ssq_ros.sim.scene` builds the MuJoCo model from them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ssq_ros.config import load, spec
from ssq_ros.control.safe_behavior import BehaviorConfig
from ssq_ros.safety.actions import ActionConfig
from ssq_ros.task.reach_avoid import TaskConfig


@dataclass(frozen=True)
class PhysicsConfig:
    timestep: float = spec(0.002, doc='physics step [s]', low=1e-4, high=0.01)
    control_period: float = spec(0.05, doc='agent control period [s]; a multiple of timestep',
                                 low=1e-3, high=1.0)
    velocity_error_at_full_effort: float = spec(
        0.1, doc='velocity servo gain: the tracking error [rad/s] that commands the URDF effort '
                 'limit (kv = effort / error)', low=1e-3, high=10.0)
    armature: float = spec(0.1, doc='reflected rotor inertia added to each joint [kg m^2]',
                           low=0.0, high=10.0)
    command_acceleration_fraction: float = spec(
        0.5, doc='the simulated controller ramps its velocity target at this fraction of the '
                 'acceleration limits (synchronised across joints)', low=0.01, high=1.0)
    referee_stride: int = spec(5, doc='the referee judges every this many physics steps',
                               low=1, high=1000)
    table_half_size: float = spec(1.5, doc='half width of the square table [m]', low=0.1)


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
    """A `sim` section from a YAML file of overrides (keys not given take the defaults)."""
    return load(SimConfig, path)
