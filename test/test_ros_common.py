"""Parameters declared from config dataclasses, validated, and described to ROS tools; the
deadline on a node's clean-up."""
import subprocess
import sys
import time
from dataclasses import dataclass, field

import pytest
import rclpy
from rcl_interfaces.msg import ParameterType
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

from ssq_ros.config import ConfigError, spec
from ssq_ros.nodes.common import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS, declare_config


@dataclass(frozen=True)
class Inner:
    gain: float = spec(0.5, doc='a gain', low=0.0, high=1.0)


@dataclass(frozen=True)
class Example:
    rate: float = spec(100.0, doc='rate [Hz]', low=1.0)
    count: int = spec(3, doc='count', low=1, high=10)
    mode: str = spec('a', doc='mode', choices=('a', 'b'))
    enabled: bool = spec(True, doc='on/off')
    names: tuple[str, ...] = spec((), doc='joint names')
    offset: float | None = spec(None, doc='optional offset')
    inner: Inner = field(default_factory=Inner)


@pytest.fixture(scope='module')
def ros():
    rclpy.init()
    yield
    rclpy.try_shutdown()


def declared(overrides=()):
    node = Node('params_test', parameter_overrides=[Parameter(k, value=v) for k, v in overrides])
    try:
        return declare_config(node, Example), node
    except Exception:
        node.destroy_node()
        raise


def test_defaults_descriptors_and_nested_names(ros):
    cfg, node = declared()
    assert cfg == Example()
    rate, count, mode, names, gain = node.describe_parameters(
        ['rate', 'count', 'mode', 'names', 'inner.gain'])
    assert rate.type == ParameterType.PARAMETER_DOUBLE and rate.read_only
    assert rate.description == 'rate [Hz]' and rate.floating_point_range[0].from_value == 1.0
    assert count.integer_range[0].from_value == 1 and count.integer_range[0].to_value == 10
    assert mode.additional_constraints == "one of: 'a', 'b'"
    assert names.type == ParameterType.PARAMETER_STRING_ARRAY
    assert gain.floating_point_range[0].to_value == 1.0
    node.destroy_node()


def test_overrides_are_read_back_into_the_dataclass(ros):
    cfg, node = declared([('rate', 50.0), ('names', ['j1', 'j2']), ('offset', 0.1),
                          ('inner.gain', 0.25), ('mode', 'b')])
    assert cfg == Example(rate=50.0, names=('j1', 'j2'), offset=0.1, inner=Inner(0.25), mode='b')
    node.destroy_node()


@pytest.mark.parametrize('override, words', [
    (('rate', 0.5), 'parameter rate: .*out of range'),
    (('count', 11), 'parameter count: .*out of range'),
    (('inner.gain', 2.0), 'parameter inner.gain'),
    (('mode', 'c'), "mode: 'c' is not one of"),
    (('rate', 'fast'), 'parameter rate'),
])
def test_bad_values_stop_with_the_parameter_name(ros, override, words):
    with pytest.raises(ConfigError, match=words):
        declared([override])


def test_qos_profiles_say_what_they_carry():
    assert SENSOR_QOS.reliability == ReliabilityPolicy.BEST_EFFORT
    assert COMMAND_QOS.reliability == ReliabilityPolicy.RELIABLE and COMMAND_QOS.depth == 1
    assert COMMAND_QOS.durability == DurabilityPolicy.VOLATILE
    assert LATCHED_QOS.durability == DurabilityPolicy.TRANSIENT_LOCAL


def _run_python(code: str) -> tuple[int, str, float]:
    start = time.monotonic()
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=120)
    return done.returncode, done.stderr, time.monotonic() - start


def test_a_clean_up_that_hangs_is_left_after_its_limit_with_the_stacks_printed():
    code, stderr, wall = _run_python(
        'import time\n'
        'from ssq_ros.nodes.common import CleanupDeadline\n'
        'with CleanupDeadline("hung_node", 1.0):\n'
        '    time.sleep(60)\n'
        'raise SystemExit(3)\n')
    assert code == 0 and wall < 30, (code, wall, stderr)
    assert 'most recent call first' in stderr and 'line 4' in stderr, stderr  # where it hung
    assert '[hung_node] the ROS clean-up did not finish within 1 s' in stderr


@pytest.mark.skipif(sys.platform != 'linux', reason='the C-level exit timer is Linux/glibc only')
def test_a_clean_up_hung_in_c_holding_pythons_lock_still_exits_0():
    # The hang CI met: the middleware's teardown never returned and held Python's lock, so no
    # Python thread could run. libc's sleep through PyDLL holds that lock the same way.
    code, stderr, wall = _run_python(
        'import ctypes\n'
        'from ssq_ros.nodes.common import CleanupDeadline\n'
        'with CleanupDeadline("hung_in_c", 1.0):\n'
        '    ctypes.PyDLL(None).sleep(60)\n'
        'raise SystemExit(3)\n')
    assert code == 0 and wall < 30, (code, wall, stderr)
    assert 'most recent call first' in stderr and 'line 4' in stderr, stderr
    assert 'did not finish' not in stderr, stderr  # the Python exit never got the lock


def test_a_clean_up_that_finishes_is_not_interrupted():
    code, stderr, _ = _run_python(
        'import time\n'
        'from ssq_ros.nodes.common import CleanupDeadline\n'
        'with CleanupDeadline("quick_node", 0.5):\n'
        '    pass\n'
        'time.sleep(1.5)\n'
        'raise SystemExit(3)\n')
    assert code == 3 and 'did not finish' not in stderr, stderr
    assert 'most recent call first' not in stderr, stderr
