"""The node graphs of ssq_ros, described once for both ways of running them.

`ros2 launch ssq_ros <graph>.launch.py` (launch/, through `launch_description`) and
`ssq-launch <graph>` (ssq_ros.launcher, plain processes) read the same `GRAPHS`, so the two
cannot drift apart. Every ssq_ros node receives its launch arguments as parameters with these
names: `config_file` (an experiment YAML, '' for the package defaults), `run_dir` (where runs,
checkpoints and policies live), `steps`, `headless`.

Topics (docs/topics.md): the simulator stands in for a ros2_control arm (/joint_states out,
/forward_velocity_controller/commands in). Commanding nodes publish /ssq/joint_command; on a real
arm and in deploy_sim the hardware_interface filters it on its way to the controller, in
train_sim it is remapped straight onto the simulator's controller topic.

When a graph ends is described here too (`NodeSpec.ends_graph`, `NodeSpec.respawn`,
`node_exit`): the exit of its ending node (the learner: training is over) or the failure of a node
that is not respawned stops every node, in both launchers; a node with `respawn` is started again
`respawn_delay` s after a crash (non-zero exit, or killed by a signal), at most
`respawn_max_retries` times in a run, as launch_ros does (`Node(respawn=True, respawn_delay=...,
respawn_max_retries=...)`); the crash after the last retry ends the graph. robot_state_publisher
publishes the URDF of the run's robot (`robot_file`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ssq_ros.config import load
from ssq_ros.nodes.interfaces import COMMAND_TOPIC, SIM_CONTROLLER_TOPIC
from ssq_ros.paths import config_path, share_dir

_ARG_TYPES = {'str': str, 'int': int, 'float': float, 'bool': bool}
STOP_GRACE = 15.0
"""Seconds a node gets after SIGINT before SIGTERM (and SIGTERM before SIGKILL), in both
launchers: stopping a node (its last stop command, the learner's checkpoint, then rclpy and the
interpreter with torch, MuJoCo and pinocchio loaded) took 5.2-5.4 s on a loaded 2-core machine."""


@dataclass(frozen=True)
class LaunchArg:
    """A launch argument: `name:=value` on either command line."""

    name: str
    default: str
    description: str
    type: str = 'str'  # one of str, int, float, bool

    def convert(self, text: str) -> Any:
        """The typed value of `text`; a ValueError names the argument."""
        if self.type == 'bool':
            if text.lower() in ('true', '1'):
                return True
            if text.lower() in ('false', '0'):
                return False
            raise ValueError(f'{self.name}:={text}: expected true or false')
        try:
            return _ARG_TYPES[self.type](text)
        except ValueError:
            raise ValueError(f'{self.name}:={text}: expected {self.type}') from None


@dataclass(frozen=True)
class FromArg:
    """A parameter whose value is a launch argument's."""

    arg: str


@dataclass(frozen=True)
class FromRunConfig:
    """A parameter whose value is a field of the run's experiment config (the `config` launch
    argument; `path` is dotted into TrainConfig), read when the graph starts: a value the graph
    needs that the experiment already holds is never copied into this file."""

    path: str

    def resolve(self, args: dict[str, Any]) -> Any:
        from ssq_ros.training.config import load_run_config

        value: Any = load_run_config(args.get('config', ''))
        for part in self.path.split('.'):
            value = getattr(value, part)
        return value


@dataclass(frozen=True)
class SharePath:
    """A file inside the package's share directory (config/, urdf/, rviz/)."""

    relative: str

    def resolve(self) -> str:
        return str(share_dir() / self.relative)


@dataclass(frozen=True)
class NodeSpec:
    """One node of a graph.

    `if_arg` / `unless_arg` name a bool launch argument that must be true / false for the node
    to start. `venv_runnable` is False for tools of a ROS installation (robot_state_publisher,
    rviz2), which the plain-venv launcher skips with a note. `ends_graph`: this node's exit,
    whatever its code, is the end of the graph (q_learner exits 0 once training is over); any
    other node ends it only by failing (`node_exit`). `respawn`: a crash (non-zero exit code,
    or a signal) starts the node again after `respawn_delay` s instead of ending the graph, at
    most `respawn_max_retries` times per run (the next crash ends it); a refused configuration
    (exit code 2) is never respawned, as it would only fail again. A clean exit is never
    respawned by ssq-launch (ros2 launch respawns after any exit that its own shutdown did not
    cause: docs/topics.md).
    """

    executable: str
    name: str
    package: str = 'ssq_ros'
    param_files: tuple[str, ...] = ()
    parameters: tuple[tuple[str, Any], ...] = ()
    arguments: tuple[str | SharePath, ...] = ()
    remappings: tuple[tuple[str, str], ...] = ()
    if_arg: str | None = None
    unless_arg: str | None = None
    venv_runnable: bool = True
    ends_graph: bool = False
    respawn: bool = False
    respawn_delay: float = 1.0
    respawn_max_retries: int = 3

    def __post_init__(self) -> None:
        if self.respawn_delay <= 0.0 or self.respawn_max_retries < 1:
            # A positive delay also lets launch's shutdown win the race against its respawn
            # when an ending node exits (launch waits respawn_delay on its shutdown future).
            raise ValueError(f'{self.name}: respawn_delay must be > 0 and '
                             'respawn_max_retries >= 1 (an endless crash loop is never wanted)')

    def param_file_paths(self) -> list[str]:
        return [str(config_path(name)) for name in self.param_files]

    def resolved_arguments(self) -> list[str]:
        return [a.resolve() if isinstance(a, SharePath) else a for a in self.arguments]

    def enabled(self, args: dict[str, Any]) -> bool:
        if self.if_arg is not None and not args[self.if_arg]:
            return False
        return not (self.unless_arg is not None and args[self.unless_arg])

    def parameter_values(self, args: dict[str, Any]) -> dict[str, Any]:
        """Parameters with launch-argument and run-config references replaced by values."""
        return {k: args[v.arg] if isinstance(v, FromArg) else
                v.resolve(args) if isinstance(v, FromRunConfig) else v
                for k, v in self.parameters}

    def reads_run_config(self) -> bool:
        return any(isinstance(v, FromRunConfig) for _, v in self.parameters)


@dataclass(frozen=True)
class Graph:
    name: str
    description: str
    arguments: tuple[LaunchArg, ...]
    nodes: tuple[NodeSpec, ...]

    def resolve_args(self, overrides: dict[str, str]) -> dict[str, Any]:
        """Typed launch-argument values: defaults updated by `overrides`; unknown names and
        wrong types are a ValueError naming the argument."""
        known = {a.name: a for a in self.arguments}
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ValueError(f'{self.name}: unknown launch argument {unknown[0]!r} (known: '
                             f'{", ".join(known)})')
        return {name: arg.convert(overrides.get(name, arg.default)) for name, arg in known.items()}


@dataclass(frozen=True)
class NodeExit:
    """What a node's exit means for its graph; `ssq-launch` and `ros2 launch` both act on it.
    `respawn`: the node is started again after its spec's `respawn_delay`."""

    ends_graph: bool
    failed: bool
    message: str
    respawn: bool = False


CONFIG_ERROR_EXIT = 2  # run_node's exit code for a refused parameter or config file


def node_exit(spec: NodeSpec, returncode: int, respawns: int = 0) -> NodeExit:
    """What the exit (`returncode`) of a node that was respawned `respawns` times already means.

    A node with `respawn` that crashed (non-zero exit code, or killed by a signal: negative)
    is started again while `respawns < respawn_max_retries`, unless it refused its
    configuration (exit code 2: it would only fail again). Otherwise the exit ends the graph if
    the node is its ending node (`ends_graph`) or if it failed. Any other node that exits
    cleanly on its own (only after a signal sent to it alone; RViz when its window is closed)
    leaves the rest of the graph running, as `ros2 launch` does by default."""
    failed = returncode != 0
    if failed and spec.respawn and returncode != CONFIG_ERROR_EXIT:
        if respawns < spec.respawn_max_retries:
            return NodeExit(False, True, f'{spec.name} died (exit code {returncode}); '
                            f'respawning it in {spec.respawn_delay:g} s (respawn '
                            f'{respawns + 1} of at most {spec.respawn_max_retries})', True)
        return NodeExit(True, True, f'{spec.name} died (exit code {returncode}) after '
                        f'{respawns} respawns, the limit (respawn_max_retries); not respawning '
                        'it again')
    if failed:
        message = f'{spec.name} died (exit code {returncode})'
    elif spec.ends_graph:
        message = f'{spec.name} finished'
    else:
        message = f'{spec.name} exited cleanly on its own'
    return NodeExit(spec.ends_graph or failed, failed, message)


def _arg(name: str, default: str, description: str, type_: str = 'str') -> LaunchArg:
    return LaunchArg(name, default, description, type_)


CONFIG = _arg('config', '', "experiment YAML for every node; '' uses the package defaults")
RUN_DIR = _arg('run_dir', 'runs/latest', 'folder for logs, checkpoints and policy weights')
HEADLESS = _arg('headless', 'true', 'run the simulator without its viewer', 'bool')
RVIZ = _arg('rviz', 'false', 'start RViz with the robot and the safety markers', 'bool')

ROBOT_STATE_PUBLISHER = NodeSpec(
    executable='robot_state_publisher', name='robot_state_publisher',
    package='robot_state_publisher', venv_runnable=False)
RVIZ_NODE = NodeSpec(executable='rviz2', name='rviz2', package='rviz2',
                     arguments=('-d', SharePath('rviz/ssq.rviz')), if_arg='rviz',
                     venv_runnable=False)
COMMON = (('config_file', FromArg('config')), ('run_dir', FromArg('run_dir')))
MUJOCO_SIM = NodeSpec(executable='mujoco_sim', name='mujoco_sim', param_files=('nodes.yaml',),
                      parameters=(('config_file', FromArg('config')),
                                  ('headless', FromArg('headless')), ('mode', 'realtime')))
# Training: lockstep sim time (faster than real time), the executor's /ssq/joint_command taken
# directly (no hardware_interface in this graph); stamp checks against sim time.
SIM_TIME = (('use_sim_time', True),)
# The step budget reaches every node whose share of the run follows it (the learner's
# extraction; the held-out episodes the simulator serves and the behavior scores).
STEPS = ('steps', FromArg('steps'))
# Training in simulation respawns every node after a crash: with the lockstep simulator nothing
# moves while a commander or the simulator is down, the behavior holds what the learner has not
# acknowledged, and the learner resumes from its checkpoint (docs/topics.md, "Faults"). The
# deploy graphs respawn nothing that commands or guards the arm: a restarted hardware_interface
# would come up with its e-stop latch released, and an arm that stopped because its commander
# died resumes only by an operator's decision, as after a driver's protective stop.
RESPAWN = {'respawn': True}
# The simulator keeps its clock and episode counters in run_dir (sim_state.json), so a
# respawned one goes on forward in time and never repeats an episode.
# Only these may command the simulated arm in training: nothing filters their commands on the
# way (no hardware_interface), so the simulator refuses every command while another node
# publishes on its command topics (UNKNOWN_COMMANDER_STOP).
TRAIN_COMMANDERS = ('safe_behavior', 'policy_executor')
MUJOCO_SIM_TRAIN = NodeSpec(executable='mujoco_sim', name='mujoco_sim',
                            param_files=('nodes.yaml',),
                            parameters=(('config_file', FromArg('config')),
                                        ('headless', FromArg('headless')), ('mode', 'training'),
                                        ('relay_joint_command', True), STEPS,
                                        ('run_dir', FromArg('run_dir')),
                                        ('commanders', TRAIN_COMMANDERS)), **RESPAWN)
SAFETY_MONITOR = NodeSpec(executable='safety_monitor', name='safety_monitor',
                          param_files=('nodes.yaml',), parameters=(COMMON[0],))
# Deployed, the executor also takes goals an operator clicks in RViz (Publish Point), and runs
# the run folder's last export or the one ssq-select chose.
POLICY_FILE = _arg('policy_file', 'policy.pt', "the run folder's policy to run: policy.pt (its "
                   "last export) or ssq-select's policy_selected.pt / policy_averaged.pt")
POLICY_EXECUTOR = NodeSpec(executable='policy_executor', name='policy_executor',
                           param_files=('nodes.yaml',),
                           parameters=COMMON + (('operator_goals', True),
                                                ('policy_file', FromArg('policy_file'))))
# The simulated controller acts on a command only at its next control period (the experiment's
# sim.physics.control_period, 50 ms by default), so the interface must brake that much earlier
# than on a 1 kHz ros2_control loop.
HARDWARE_INTERFACE = NodeSpec(
    executable='hardware_interface', name='hardware_interface', param_files=('hardware.yaml',),
    parameters=(COMMON[0], ('actuation_delay', FromRunConfig('sim.physics.control_period'))))
TO_SIM_CONTROLLER = ((COMMAND_TOPIC, SIM_CONTROLLER_TOPIC),)

GRAPHS = {g.name: g for g in (
    Graph('train_sim', 'train in MuJoCo: the safe behavior controller acts, the learner '
          'learns, the monitor counts unsafe states',
          (CONFIG, RUN_DIR, _arg('steps', '0', 'environment steps to train for (0: the config\'s '
                                      'schedule.steps)', 'int'),
           HEADLESS, RVIZ),
          (ROBOT_STATE_PUBLISHER, MUJOCO_SIM_TRAIN,
           NodeSpec(executable='safe_behavior', name='safe_behavior',
                    param_files=('nodes.yaml',), parameters=(COMMON[0], STEPS) + SIM_TIME,
                    remappings=TO_SIM_CONTROLLER, **RESPAWN),
           NodeSpec(executable='q_learner', name='q_learner', param_files=('nodes.yaml',),
                    parameters=COMMON + (STEPS,), ends_graph=True, **RESPAWN),
           NodeSpec(executable='policy_executor', name='policy_executor',
                    param_files=('nodes.yaml',),
                    parameters=(COMMON[0], ('act_only_in_eval', True)) + SIM_TIME,
                    **RESPAWN),
           NodeSpec(executable='safety_monitor', name='safety_monitor',
                    param_files=('nodes.yaml',), parameters=(COMMON[0],) + SIM_TIME,
                    **RESPAWN),
           RVIZ_NODE)),
    Graph('deploy_sim', 'run a trained policy in MuJoCo behind the support shield and the '
          'hardware interface, exactly as on a real arm',
          (CONFIG, RUN_DIR, POLICY_FILE, HEADLESS, RVIZ),
          (ROBOT_STATE_PUBLISHER, MUJOCO_SIM, HARDWARE_INTERFACE, POLICY_EXECUTOR,
           SAFETY_MONITOR, RVIZ_NODE)),
    Graph('deploy_hw', 'run on a real arm under ros2_control (its driver, controllers and '
          'robot_state_publisher are started by the arm\'s own bring-up)',
          (CONFIG, RUN_DIR, POLICY_FILE,
           _arg('controller', 'forward_velocity_controller',
                'active ros2_control controller the hardware interface commands'),
           _arg('controller_kind', '', "velocity, position or trajectory; '' derives it from a "
                'standard controller name'),
           _arg('robot_config', '', "robot yaml of the arm; '' is config/robot.yaml"),
           _arg('train_on_robot', 'false', 'collect data and learn on the robot with the safe '
                'behavior controller instead of executing a policy', 'bool'),
           RVIZ),
          (NodeSpec(executable='hardware_interface', name='hardware_interface',
                    param_files=('hardware.yaml',),
                    parameters=(COMMON[0], ('controller', FromArg('controller')),
                                ('controller_kind', FromArg('controller_kind')),
                                ('robot_config', FromArg('robot_config')))),
           replace(POLICY_EXECUTOR, unless_arg='train_on_robot'),
           NodeSpec(executable='safe_behavior', name='safe_behavior',
                    param_files=('nodes.yaml',), parameters=(COMMON[0],),
                    if_arg='train_on_robot'),
           # The learner never commands the arm (the behavior holds while it is down).
           NodeSpec(executable='q_learner', name='q_learner', param_files=('nodes.yaml',),
                    parameters=COMMON, if_arg='train_on_robot', ends_graph=True, **RESPAWN),
           NodeSpec(executable='episode_server', name='episode_server',
                    param_files=('nodes.yaml',), parameters=(COMMON[0],),
                    if_arg='train_on_robot'),
           SAFETY_MONITOR, RVIZ_NODE)),
)}


def robot_file(args: dict[str, Any]) -> Path:
    """The robot yaml of a run, from a graph's typed launch arguments (`Graph.resolve_args`), as
    the nodes pick it: deploy_hw's `robot_config` when given (hardware_interface's parameter),
    else the robot the experiment config names (`config`, '' for config/train_sim.yaml)."""
    from ssq_ros.training.config import load_run_config, resolve_config_file

    if args.get('robot_config'):
        return Path(args['robot_config'])
    return resolve_config_file(load_run_config(args.get('config', '')).robot)


def robot_urdf(robot: str | Path | None = None) -> Path:
    """The URDF a robot yaml names (config/robot.yaml when None)."""
    from ssq_ros.safety.robot import RobotConfig, resolve_urdf

    return resolve_urdf(load(RobotConfig, robot or config_path('robot.yaml')).urdf)


def robot_base_frame(robot: str | Path) -> str:
    """The base frame of a robot yaml's arm (RViz's fixed frame: the safe set and the markers
    are drawn in it)."""
    from ssq_ros.safety.robot import load_robot

    return load_robot(robot).base_frame


def ros_package_available(package: str) -> bool:
    """Whether a ROS package is installed (registered in the ament index of AMENT_PREFIX_PATH)."""
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    try:
        get_package_prefix(package)
    except (PackageNotFoundError, LookupError, OSError):  # OSError: no ROS environment
        return False
    return True


def launch_description(graph_name: str) -> Any:
    """The launch_ros LaunchDescription of a graph (needs a ROS 2 installation).

    Each node gets an OnProcessExit handler that shuts the launch down when `node_exit` says
    the graph ends. robot_state_publisher and rviz2 are made at launch time (OpaqueFunction),
    once the arguments are known, with the URDF and the base frame (RViz's fixed frame) of the
    run's robot (`robot_file`).
    """
    from launch.actions import (
        DeclareLaunchArgument,
        EmitEvent,
        LogInfo,
        OpaqueFunction,
        RegisterEventHandler,
    )
    from launch.conditions import IfCondition, UnlessCondition
    from launch.event_handlers import OnProcessExit
    from launch.events import Shutdown
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node
    from launch_ros.parameter_descriptions import ParameterValue

    from launch import LaunchDescription

    graph = GRAPHS[graph_name]
    types = {a.name: _ARG_TYPES[a.type] for a in graph.arguments}

    def end_graph_on_exit(spec: NodeSpec, exits: list[int], event: Any,
                          context: Any) -> list[Any] | None:
        if context.is_shutdown:
            return None
        # launch counts every exit of a respawning node against respawn_max_retries (it
        # respawns after any exit its shutdown did not cause), so the count here does too.
        end = node_exit(spec, event.returncode, respawns=len(exits))
        exits.append(event.returncode)
        if end.respawn:
            return [LogInfo(msg=end.message)]  # launch_ros itself starts it again
        if not end.ends_graph:
            if spec.respawn:
                return [LogInfo(msg=f'{end.message}; ros2 launch respawns it (launch '
                                    'respawns after any exit it did not cause)')]
            return None
        reason = f'{end.message}; stopping the {graph.name} graph'
        return [LogInfo(msg=reason), EmitEvent(event=Shutdown(reason=reason))]

    def node_actions(spec: NodeSpec, extra: dict[str, Any],
                     arguments: tuple[str, ...] = ()) -> list[Any]:
        overrides = {k: ParameterValue(LaunchConfiguration(v.arg), value_type=types[v.arg])
                     if isinstance(v, FromArg) else v for k, v in spec.parameters
                     if not isinstance(v, FromRunConfig)}
        overrides.update(extra)
        condition = None
        if spec.if_arg is not None:
            condition = IfCondition(LaunchConfiguration(spec.if_arg))
        elif spec.unless_arg is not None:
            condition = UnlessCondition(LaunchConfiguration(spec.unless_arg))
        # launch_ros's own respawn (launch.actions.ExecuteLocal): after `respawn_delay` s, at
        # most `respawn_max_retries` times; the exit handler below ends the graph on the
        # crash after the last one, and on a clean exit of the ending node (its Shutdown
        # reaches launch within respawn_delay, which cancels the respawn).
        respawn = dict(respawn=True, respawn_delay=spec.respawn_delay,
                       respawn_max_retries=spec.respawn_max_retries) if spec.respawn else {}
        node = Node(
            package=spec.package, executable=spec.executable, name=spec.name,
            parameters=spec.param_file_paths() + ([overrides] if overrides else []),
            arguments=spec.resolved_arguments() + list(arguments),
            remappings=list(spec.remappings),
            condition=condition, output='screen', **respawn)
        exits: list[int] = []
        on_exit = OnProcessExit(target_action=node,
                                on_exit=lambda event, context: end_graph_on_exit(
                                    spec, exits, event, context))
        return [node, RegisterEventHandler(on_exit)]

    def with_robot_description(context: Any, spec: NodeSpec) -> list[Any]:
        args = graph.resolve_args({a.name: context.launch_configurations[a.name]
                                   for a in graph.arguments})
        urdf = robot_urdf(robot_file(args)).read_text()
        return node_actions(spec, {'robot_description': ParameterValue(urdf, value_type=str)})

    def with_run_config_values(context: Any, spec: NodeSpec) -> list[Any]:
        args = graph.resolve_args({a.name: context.launch_configurations[a.name]
                                   for a in graph.arguments})
        return node_actions(spec, {k: v.resolve(args) for k, v in spec.parameters
                                   if isinstance(v, FromRunConfig)})

    def with_fixed_frame(context: Any, spec: NodeSpec) -> list[Any]:
        args = graph.resolve_args({a.name: context.launch_configurations[a.name]
                                   for a in graph.arguments})
        return node_actions(spec, {}, ('-f', robot_base_frame(robot_file(args))))

    def if_installed(function: Any) -> Any:
        """`function`'s actions if the spec's package is installed, else a note: the tools of
        a ROS installation are optional (a headless machine may lack rviz2)."""
        def checked(context: Any, spec: NodeSpec) -> list[Any]:
            if not ros_package_available(spec.package):
                return [LogInfo(msg=f'not starting {spec.name}: package {spec.package!r} is not '
                                    'installed (optional for this graph)')]
            return function(context, spec)
        return checked

    def stop_grace(context: Any) -> list:
        # launch's default 5 s before SIGTERM is shorter than a node with torch, MuJoCo and
        # pinocchio loaded needs to exit on a busy machine; `sigterm_timeout:=` still wins.
        context.launch_configurations.setdefault('sigterm_timeout', f'{STOP_GRACE:g}')
        return []

    actions = [OpaqueFunction(function=stop_grace)]
    actions += [DeclareLaunchArgument(a.name, default_value=a.default,
                                      description=a.description) for a in graph.arguments]
    for spec in graph.nodes:
        if spec.executable == 'robot_state_publisher':
            actions.append(OpaqueFunction(function=if_installed(with_robot_description),
                                          args=[spec]))
        elif spec.executable == 'rviz2':
            actions.append(OpaqueFunction(function=if_installed(with_fixed_frame), args=[spec],
                                          condition=IfCondition(LaunchConfiguration('rviz'))))
        elif spec.reads_run_config():
            actions.append(OpaqueFunction(function=with_run_config_values, args=[spec]))
        else:
            actions += node_actions(spec, {})
    return LaunchDescription(actions)
