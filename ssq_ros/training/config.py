"""config/train_sim.yaml: what `ssq-train` runs. Every field declared once, validated on load."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ssq_ros.config import ConfigError, load, parse, spec, to_dict
from ssq_ros.paths import config_path
from ssq_ros.sim.config import SimConfig
from ssq_ros.training.learner import LearnerConfig


@dataclass
class ScheduleConfig:
    """When the trainer collects, trains, extracts, evaluates and checkpoints."""

    steps: int = spec(30_000, low=1, high=100_000_000, doc='environment steps of mu in total')
    learning_starts: int = spec(1_000, low=1, high=100_000_000,
                                doc='environment steps collected before the first update')
    updates_per_step: float = spec(1.0, low=0.0, high=64.0,
                                   doc='critic updates per environment step (fractions add up)')
    extract_every: int = spec(5_000, low=1, high=100_000_000,
                              doc='environment steps between two extractions')
    extract_steps: int = spec(1_000, low=1, high=10_000_000,
                              doc='policy gradient steps per periodic extraction')
    final_extract_steps: int = spec(3_000, low=1, high=10_000_000,
                                    doc='policy gradient steps of the final extraction')
    eval_every: int = spec(10_000, low=1, high=100_000_000,
                           doc='environment steps between two evaluations (after an extraction)')
    eval_episodes: int = spec(20, low=1, high=100_000,
                              doc='held-out goals of every evaluation (the same set each time)')
    final_eval_episodes: int = spec(50, low=1, high=100_000,
                                    doc='held-out goals of the final evaluation')
    calibration_episodes: int = spec(10, low=0, high=100_000,
                                     doc='final evaluation: episodes (of each of mu and the '
                                         'policy) whose Q(s, a) is compared with the return')
    calibration_tail: int = spec(200, low=0, high=100_000,
                                 doc='final evaluation: steps run past the time limit so the '
                                     'discounted returns of the last counted steps are complete')
    checkpoint_every: int = spec(5_000, low=1, high=100_000_000,
                                 doc='environment steps between checkpoints (taken at the next '
                                     'episode end, so no episode is cut)')
    seed: int = spec(0, low=0, high=2**31 - 1, doc='seed of mu, the networks and the episodes')
    torch_threads: int = spec(1, low=1, high=256, doc='torch CPU threads')


@dataclass
class TrainConfig:
    """The whole training run."""

    robot: str = spec('robot.yaml', doc='robot yaml: a file in config/ or a path')
    safe_set: str = spec('safe_set.yaml', doc='safe set + support yaml: a file in config/ or a '
                         'path')
    action_kind: str = spec('discrete', choices=('discrete', 'continuous'),
                            doc='discrete end-effector primitives with an exact masked backup, '
                                'or continuous actions with K samples of mu')
    sim: SimConfig = spec(default_factory=SimConfig,
                          doc='physics, task, actions and the behavior controller mu '
                              '(sigma, K, weights)')
    learner: LearnerConfig = spec(default_factory=LearnerConfig,
                                  doc='critic, extraction, replay capacity')
    schedule: ScheduleConfig = spec(default_factory=ScheduleConfig, doc='budgets and periods')


def load_train_config(path: str | Path) -> TrainConfig:
    """Load and validate a training config; unknown keys and bad values name the key."""
    return with_overrides(load(TrainConfig, path))


def with_overrides(config: TrainConfig, *, seed: int | None = None,
                   steps: int | None = None) -> TrainConfig:
    """The config with command-line overrides applied and everything re-validated."""
    data = to_dict(config)
    if seed is not None:
        data['schedule']['seed'] = seed
    if steps is not None:
        data['schedule']['steps'] = steps
    config = parse(TrainConfig, data, 'command line')
    schedule = config.schedule
    if schedule.learning_starts > schedule.steps:
        raise ConfigError(f'schedule.learning_starts ({schedule.learning_starts}) exceeds '
                          f'schedule.steps ({schedule.steps}): nothing would be learned')
    return config


def resolve_config_file(name: str) -> Path:
    """A path as given if it exists, else the package's config/ file of that name."""
    path = Path(name)
    return path if path.is_file() else config_path(name)


DEFAULT_CONFIG = 'train_sim.yaml'
"""The experiment every node reads when its config_file parameter is ''."""


def load_run_config(config_file: str | Path, steps: int | None = None) -> TrainConfig:
    """The experiment config every node reads ('' is the package's train_sim.yaml), with the
    launch's step budget applied; errors name the key."""
    path = resolve_config_file(str(config_file) or DEFAULT_CONFIG)
    config = load_train_config(path)
    return config if steps is None else with_overrides(config, steps=steps)
