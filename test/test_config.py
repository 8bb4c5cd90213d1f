"""The config loader rejects what a user could get wrong, naming the key."""
from dataclasses import dataclass, field
from typing import Literal

import pytest

from ssq_ros.config import ConfigError, load, parse, spec, to_dict


@dataclass(frozen=True)
class Inner:
    gamma: float = spec(0.99, doc='discount', low=0.0, high=1.0)
    mode: Literal['a', 'b'] = spec('a', doc='mode')


@dataclass(frozen=True)
class Outer:
    steps: int = spec(10, doc='steps', low=1)
    name: str = spec('x', doc='name', choices=('x', 'y'))
    box: tuple[float, float, float] = spec((0.0, 0.0, 0.0), doc='a point')
    inner: Inner = field(default_factory=Inner)


def test_defaults_and_round_trip():
    cfg = parse(Outer, {'inner': {'gamma': 0.5}, 'box': [1, 2, 3]})
    assert cfg.inner.gamma == 0.5 and cfg.box == (1.0, 2.0, 3.0) and cfg.steps == 10
    assert parse(Outer, to_dict(cfg)) == cfg


@pytest.mark.parametrize('data, words', [
    ({'stpes': 3}, 'stpes: unknown key'),
    ({'inner': {'gama': 0.5}}, 'inner.gama: unknown key'),
    ({'steps': 'ten'}, 'steps: expected a number'),
    ({'steps': 2.5}, 'steps: expected an integer'),
    ({'steps': 0}, 'steps: 0 is below the minimum'),
    ({'inner': {'gamma': 1.5}}, 'inner.gamma: 1.5 is above the maximum'),
    ({'inner': {'gamma': float('nan')}}, 'inner.gamma: must be finite'),
    ({'inner': {'mode': 'c'}}, "inner.mode: 'c' is not one of"),
    ({'name': 'z'}, "name: 'z' is not one of"),
    ({'box': [1, 2]}, 'box: expected 3 items'),
    ({'steps': True}, 'steps: expected a number'),
])
def test_bad_values_name_the_key(data, words):
    with pytest.raises(ConfigError, match=words.replace('(', r'\(').replace('[', r'\[')):
        parse(Outer, data)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(ConfigError, match='cannot read'):
        load(Outer, tmp_path / 'absent.yaml')
    bad = tmp_path / 'bad.yaml'
    bad.write_text('steps: [1, 2\n')
    with pytest.raises(ConfigError, match='not valid YAML'):
        load(Outer, bad)
    scalar = tmp_path / 'scalar.yaml'
    scalar.write_text('3\n')
    with pytest.raises(ConfigError, match='expected a mapping'):
        load(Outer, scalar)
