"""The spaces a learner and an exported policy are built for, derived from the task.

They travel with every checkpoint and exported policy, so an executor refuses a policy made for
another arm or task (`ssq_ros.task.setup.task_spaces` derives them).
"""
from __future__ import annotations

from dataclasses import dataclass

from ssq_ros.config import ConfigError, parse, spec, to_dict


@dataclass(frozen=True)
class TaskSpaces:
    """Observation and action spaces a learner is built for; travels with checkpoints/exports."""

    obs_dim: int = spec(doc='observation size', low=1, high=100_000)
    action_kind: str = spec(doc='discrete: an index into action_names; continuous: a vector',
                            choices=('discrete', 'continuous'))
    action_size: int = spec(doc='discrete: number of actions; continuous: action dimension',
                            low=1, high=100_000)
    num_samples: int = spec(1, doc="continuous: K samples of mu stored per transition (mu's "
                            'support at s\'); discrete: unused', low=1, high=100_000)
    action_names: tuple[str, ...] = spec((), doc='discrete: a name per action (may be empty)')
    action_low: tuple[float, ...] = spec((), doc='continuous: lower action bound (may be empty)')
    action_high: tuple[float, ...] = spec((), doc='continuous: upper action bound (may be '
                                          'empty)')
    observation_fields: tuple[str, ...] = spec((), doc='names of the observation slices')
    observation_sizes: tuple[int, ...] = spec((), doc='sizes of the observation slices', low=1)

    @property
    def discrete(self) -> bool:
        return self.action_kind == 'discrete'

    def support_shape(self) -> tuple[int, ...]:
        """Shape of mu's support at one state: probabilities (n,) or K samples (K, d)."""
        return (self.action_size,) if self.discrete else (self.num_samples, self.action_size)


def check_spaces(spaces: TaskSpaces) -> TaskSpaces:
    """Re-validate `spaces` and the consistency of its optional names and bounds."""
    spaces = parse(TaskSpaces, to_dict(spaces), 'TaskSpaces')
    if spaces.discrete and spaces.action_names and \
            len(spaces.action_names) != spaces.action_size:
        raise ConfigError(f'TaskSpaces.action_names: {len(spaces.action_names)} names for '
                          f'{spaces.action_size} actions')
    for name in ('action_low', 'action_high'):
        bound = getattr(spaces, name)
        if bound and (spaces.discrete or len(bound) != spaces.action_size):
            raise ConfigError(f'TaskSpaces.{name}: expected {spaces.action_size} values for a '
                              f'continuous action, got {len(bound)}')
    if len(spaces.observation_fields) != len(spaces.observation_sizes) or (
            spaces.observation_sizes and sum(spaces.observation_sizes) != spaces.obs_dim):
        raise ConfigError('TaskSpaces.observation_fields/sizes: must pair up and sum to '
                          f'obs_dim={spaces.obs_dim}')
    return spaces
