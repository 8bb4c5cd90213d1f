"""What every ssq_ros node shares: parameters from config dataclasses, QoS, status, `main`.

- `declare_config` turns a `ssq_ros.config` dataclass into ROS parameters (description and range
  from its `spec`, nested sections as dotted names), reads them back and validates them with the
  same code that checks YAML files, so a bad value stops the node at start with the key's name.
- The QoS profiles and shared names are `ssq_ros.nodes.interfaces` (re-exported here).
- `StatusReporter` publishes the current `SafetyStatus` and its counts (topic and /diagnostics).
- `run_node` spins a node with clean SIGINT/SIGTERM handling and returns the exit code.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import faulthandler
import os
import signal
import sys
import threading
import traceback
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
)
from rclpy.duration import Duration
from rclpy.exceptions import ParameterException, ParameterUninitializedException
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions
from std_msgs.msg import String

from ssq_ros.config import ConfigError, parse, spec
from ssq_ros.nodes.interfaces import (  # noqa: F401  (the QoS profiles, importable from here too)
    COMMAND_QOS,
    DIAGNOSTICS_QOS,
    LATCHED_QOS,
    SENSOR_QOS,
)
from ssq_ros.safety.status import SafetyStatus, StatusCounter

T = TypeVar('T')

_INT64 = (-2 ** 63, 2 ** 63 - 1)
_SCALAR_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
                 float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}
_ARRAY_TYPES = {bool: ParameterType.PARAMETER_BOOL_ARRAY,
                int: ParameterType.PARAMETER_INTEGER_ARRAY,
                float: ParameterType.PARAMETER_DOUBLE_ARRAY,
                str: ParameterType.PARAMETER_STRING_ARRAY}


def parameter_type(tp: Any) -> int:
    """The ROS parameter type of a config field type (Optional[X] maps like X)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return parameter_type(inner[0])
    if origin is typing.Literal:
        return _SCALAR_TYPES[type(typing.get_args(tp)[0])]
    if origin in (tuple, list):
        items = {a for a in typing.get_args(tp) if a is not Ellipsis}
        if len(items) == 1 and next(iter(items)) in _ARRAY_TYPES:
            return _ARRAY_TYPES[next(iter(items))]
    if tp in _SCALAR_TYPES:
        return _SCALAR_TYPES[tp]
    raise TypeError(f'config type {tp} has no ROS parameter equivalent')


def parameter_descriptor(name: str, fld: dataclasses.Field, tp: Any) -> ParameterDescriptor:
    """Descriptor with the field's description, range and choices; read-only, because nodes
    read their parameters once at start-up."""
    kind = parameter_type(tp)
    meta = fld.metadata
    descriptor = ParameterDescriptor(name=name, type=kind, description=meta.get('doc', ''),
                                     read_only=True)
    low, high, choices = meta.get('low'), meta.get('high'), meta.get('choices')
    if typing.get_origin(tp) is typing.Literal:
        choices = typing.get_args(tp)
    if choices:
        descriptor.additional_constraints = f'one of: {", ".join(map(repr, choices))}'
    if low is not None or high is not None:
        if kind == ParameterType.PARAMETER_DOUBLE:
            descriptor.floating_point_range = [FloatingPointRange(
                from_value=float('-inf') if low is None else float(low),
                to_value=float('inf') if high is None else float(high), step=0.0)]
        elif kind == ParameterType.PARAMETER_INTEGER:
            descriptor.integer_range = [IntegerRange(
                from_value=_INT64[0] if low is None else int(low),
                to_value=_INT64[1] if high is None else int(high), step=0)]
    return descriptor


def _default(fld: dataclasses.Field) -> Any:
    if fld.default_factory is not dataclasses.MISSING:
        return fld.default_factory()
    return None if fld.default is dataclasses.MISSING else fld.default


@dataclasses.dataclass(frozen=True)
class NodeDiagnostics:
    """The /diagnostics period of every node that reports safety reactions (node configs
    inherit it, so it has one name, range and meaning)."""

    diagnostics_period: float = spec(1.0, doc='seconds between /diagnostics messages',
                                     low=0.05, high=60.0)


@dataclasses.dataclass(frozen=True)
class RunBudget:
    """The launch's step budget, for every node whose share of a run follows it: the learner,
    and the nodes that serve and score the held-out episodes, whose count scales with it."""

    steps: int = spec(0, doc='environment steps of the run (0: schedule.steps of the config); '
                      'the final extraction and evaluation sizes follow it', low=0,
                      high=100_000_000)


@dataclasses.dataclass(frozen=True)
class JointStateInput:
    """How a graph node checks /joint_states: the same parameters, meaning the same, in every
    node that reads them (node configs inherit these fields)."""

    max_stamp_age: float = spec(0.5, doc='refuse joint states stamped further than this from '
                                'the node clock [s]; 0 turns the check off', low=0.0, high=10.0)
    position_tolerance: float = spec(0.2, doc='refuse joint states further than this outside '
                                     'the URDF position limits [rad or m]', low=0.0, high=1.0)


def declare_config(node: Node, cls: type[T], prefix: str = '') -> T:
    """Declare `cls`'s fields as parameters of `node`, read them back, validate into `cls`.

    Raises ConfigError naming the parameter for a wrong type or an out-of-range value.
    """
    values = {}
    hints = typing.get_type_hints(cls)
    for fld in dataclasses.fields(cls):
        name, tp = f'{prefix}{fld.name}', hints[fld.name]
        if dataclasses.is_dataclass(tp):
            values[fld.name] = dataclasses.asdict(declare_config(node, tp, f'{name}.'))
            continue
        default = _default(fld)
        initial = default
        if default is None or (isinstance(default, (list, tuple)) and not default):
            initial = Parameter.Type(parameter_type(tp))  # ROS cannot infer a type from these
        elif isinstance(default, tuple):
            initial = list(default)
        try:
            node.declare_parameter(name, initial, parameter_descriptor(name, fld, tp))
            value = node.get_parameter(name).value
        except ParameterUninitializedException:
            value = default
        except ParameterException as exc:
            raise ConfigError(f'parameter {name}: {exc}') from exc
        if value is not None and not isinstance(value, (str, bool, int, float)):
            value = list(value)  # array.array from rclpy
        values[fld.name] = value
    return parse(cls, values, prefix.rstrip('.'))


def stamp_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


class StatusReporter:
    """Counts and publishes a node's safety reactions.

    `~/status` (std_msgs/String, latched) carries the current reaction's name whenever it
    changes; /diagnostics carries level, description and every count, periodically and on change.
    """

    def __init__(self, node: Node, period: float, hardware_id: str = '') -> None:
        self.node = node
        self.counter = StatusCounter()
        self.hardware_id = hardware_id
        self.extra: dict[str, str] = {}
        self._rejected = StatusCounter()
        self._last_rejection = ''
        self._published: SafetyStatus | None = None
        self._status_pub = node.create_publisher(String, '~/status', LATCHED_QOS)
        self._diag_pub = node.create_publisher(DiagnosticArray, '/diagnostics', DIAGNOSTICS_QOS)
        node.create_timer(period, self.publish_diagnostics)

    @property
    def current(self) -> SafetyStatus:
        return self.counter.current

    def record(self, statuses: Iterable[SafetyStatus]) -> SafetyStatus:
        """Count the reactions behind one outgoing command; publish if the current one changed."""
        current = self.counter.record(statuses)
        if current is not self._published:
            self._published = current
            self._status_pub.publish(String(data=current.name))
            self._log(current, current.description)
            self.publish_diagnostics()
        return current

    def reject(self, status: SafetyStatus, reason: str) -> None:
        """Count a refused incoming message and log why (throttled: floods stay readable)."""
        self._rejected.record([status])
        self.explain(status, reason)

    def explain(self, status: SafetyStatus, reason: str) -> None:
        """Log and publish why a message was refused, without counting it."""
        self._last_rejection = f'{status.name}: {reason}'
        self.node.get_logger().warning(f'refused: {self._last_rejection}',
                                       throttle_duration_sec=1.0)

    def counts(self) -> dict[str, int]:
        """Outgoing commands per reaction plus refused messages per reason."""
        merged = self.counter.as_dict()
        for name, count in self._rejected.as_dict().items():
            merged[name] = merged.get(name, 0) + count
        return merged

    def publish_diagnostics(self) -> None:
        current = self.counter.current
        values = [KeyValue(key=k, value=str(v)) for k, v in self.counts().items()]
        values += [KeyValue(key=k, value=v) for k, v in self.extra.items()]
        if self._last_rejection:
            values.append(KeyValue(key='last_refused', value=self._last_rejection))
        status = DiagnosticStatus(level=bytes([current.level]),
                                  name=self.node.get_fully_qualified_name(),
                                  message=f'{current.name}: {current.description}',
                                  hardware_id=self.hardware_id, values=values)
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self._diag_pub.publish(msg)

    def _log(self, status: SafetyStatus, text: str) -> None:
        # rclpy ties one severity to each call site, hence three calls.
        logger, line = self.node.get_logger(), f'{status.name}: {text}'
        if status.level == 0:  # routine changes (e.g. clamp on/off) at most every 2 s
            logger.info(line, throttle_duration_sec=2.0)
        elif status.level == 1:
            logger.warning(line, throttle_duration_sec=2.0)
        else:
            logger.error(line, throttle_duration_sec=0.5)


def run_node(factory: Callable[[], Node], args: list[str] | None = None) -> int:
    """Create the node and spin it until SIGINT/SIGTERM; returns the process exit code.

    0 after a signal; 2 if the node refused its parameters at start (the message names the
    parameter); 1 after an unexpected exception. The node's `before_shutdown()`, if it has
    one, runs while ROS is still up, so a node can send a last stop command.
    """
    stop_requested = False

    def request_stop(signum: int, frame: Any) -> None:
        nonlocal stop_requested
        stop_requested = True

    # Our own handlers instead of rclpy's: rclpy's shut the context down at once, and a node
    # could then no longer publish its final stop.
    rclpy.init(args=sys.argv if args is None else args,
               signal_handler_options=SignalHandlerOptions.NO)
    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    node = None
    executor = SingleThreadedExecutor()
    try:
        node = factory()
        executor.add_node(node)
        while not stop_requested and rclpy.ok():
            executor.spin_once(timeout_sec=0.05)
        _before_shutdown(node)
        return 0
    except ConfigError as exc:
        print(f'[{_node_label(args)}] bad configuration: {exc}', file=sys.stderr)
        return 2
    except Exception:  # a bug: still try to leave the arm stopped, then fail loudly
        traceback.print_exc()
        if node is not None:
            _before_shutdown(node)
        return 1
    finally:
        # Our handlers stay until ROS is down: a Ctrl-C reaches a node twice (the terminal's
        # process group, then ros2 launch), and the second must not interrupt the clean-up.
        with CleanupDeadline(_node_label(args), CLEANUP_LIMIT):
            executor.shutdown()
            if node is not None:
                node.destroy_node()
            rclpy.try_shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# The middleware's teardown once a node has done its part (its last stop sent). Under heavy
# load one teardown in a few hundred hung inside the middleware, deaf to SIGINT and SIGTERM
# (their handlers are Python's, and Python never got control back), until the launcher's SIGKILL
# 30 s later. Below the launchers' STOP_GRACE, so a clean stop stays a clean stop.
CLEANUP_LIMIT = 10.0


class CleanupDeadline:
    """Context: if the block has not finished after `limit` s, print every thread's stack (from
    C, without Python's lock, so also while the main thread is stuck in C) and leave the
    process with exit code 0: the node's work was done before its clean-up began.

    Two exits, because a hang inside the middleware can hold Python's lock: a Python thread
    (prints why, then `os._exit(0)`) and, 1 s later, a C-level timer that needs no lock."""

    def __init__(self, label: str, limit: float):
        self.label, self.limit = label, limit
        self.done = threading.Event()
        self._backstop: _ExitTimer | None = None

    def __enter__(self) -> CleanupDeadline:
        faulthandler.dump_traceback_later(self.limit, exit=False)
        threading.Thread(target=self._watch, daemon=True).start()
        self._backstop = _ExitTimer.start(self.limit + 1.0)
        return self

    def _watch(self) -> None:
        if not self.done.wait(self.limit + 0.5):
            print(f'[{self.label}] the ROS clean-up did not finish within {self.limit:g} s '
                  '(the stacks above show where it hung); exiting without it',
                  file=sys.stderr, flush=True)
            os._exit(0)

    def __exit__(self, *exc: Any) -> None:
        self.done.set()
        faulthandler.cancel_dump_traceback_later()
        if self._backstop is not None:
            self._backstop.cancel()


class _SigEvent(ctypes.Structure):
    """glibc's `struct sigevent` on LP64 (64 bytes), for a SIGEV_THREAD notification."""
    _fields_ = [('value', ctypes.c_void_p), ('signo', ctypes.c_int), ('notify', ctypes.c_int),
                ('function', ctypes.c_void_p), ('attributes', ctypes.c_void_p),
                ('pad', ctypes.c_int * 8)]


class _ITimerSpec(ctypes.Structure):
    _fields_ = [('interval_sec', ctypes.c_long), ('interval_nsec', ctypes.c_long),
                ('value_sec', ctypes.c_long), ('value_nsec', ctypes.c_long)]


class _ExitTimer:
    """A POSIX timer whose expiry runs libc's `_exit(0)` on a thread glibc creates: it never
    enters Python, so it fires while another thread holds Python's lock. Linux/glibc only
    (the ROS 2 Tier 1 platform); elsewhere `start` returns None and the Python exit remains."""

    CLOCK_MONOTONIC, SIGEV_THREAD = 1, 2

    def __init__(self, libc: ctypes.CDLL, timer: ctypes.c_void_p):
        self._libc, self._timer = libc, timer

    @classmethod
    def start(cls, seconds: float) -> _ExitTimer | None:
        if sys.platform != 'linux' or ctypes.sizeof(ctypes.c_void_p) != 8:
            return None
        try:  # a missing library must not cost the node its clean-up: the Python exit remains
            libc = ctypes.CDLL(None)
            timers = libc if hasattr(libc, 'timer_create') else \
                ctypes.CDLL(ctypes.util.find_library('rt') or 'librt.so.1')  # glibc < 2.34
            event = _SigEvent(value=None, notify=cls.SIGEV_THREAD,  # sigval 0 -> _exit(0)
                              function=ctypes.cast(libc._exit, ctypes.c_void_p).value)
            timer = ctypes.c_void_p()
            if timers.timer_create(cls.CLOCK_MONOTONIC, ctypes.byref(event),
                                   ctypes.byref(timer)) != 0:
                return None
        except (OSError, AttributeError):
            return None
        armed = cls(timers, timer)
        whole = int(seconds)
        when = _ITimerSpec(value_sec=whole, value_nsec=int((seconds - whole) * 1e9))
        if timers.timer_settime(timer, 0, ctypes.byref(when), None) != 0:
            armed.cancel()
            return None
        return armed

    def cancel(self) -> None:
        self._libc.timer_delete(self._timer)


def _before_shutdown(node: Node) -> None:
    hook = getattr(node, 'before_shutdown', None)
    if hook is not None:
        hook()


def wait_until_delivered(publisher: Any, timeout: float = 0.2) -> None:
    """Give a reliable publisher's last message a chance to reach its subscribers."""
    publisher.wait_for_all_acked(Duration(seconds=timeout))


def _node_label(args: list[str] | None) -> str:
    argv = sys.argv if args is None else args
    return argv[0].rsplit('/', 1)[-1] if argv else 'node'
