"""The launch files build, from ssq_ros.graph, the launch_ros actions a Jazzy install expects.

launch and launch_ros cannot be installed in a plain virtualenv, so the launch files run here
against recorders with the keyword signatures of the Jazzy API (launch_ros actions/node.py,
parameter_descriptions.py; launch actions and substitutions). They check that each launch file
declares the graph's arguments and starts exactly the graph's nodes with the graph's parameters,
that each node's exit handler ends the launch exactly when `ssq-launch` ends the graph
(`node_exit`), and that robot_state_publisher gets the URDF of the run's robot (`robot_file`).
"""
import runpy
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from ssq_ros.graph import GRAPHS, FromArg, node_exit, robot_base_frame, robot_urdf

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / 'data'


class Recorded:
    def __init__(self, kind, args, kwargs):
        self.kind, self.args, self.kwargs = kind, args, kwargs


def recorder(kind):
    def make(*args, **kwargs):
        return Recorded(kind, args, kwargs)
    return make


def node(*, executable, package=None, name=None, namespace=None, exec_name=None,
         parameters=None, remappings=None, ros_arguments=None, arguments=None, **kwargs):
    # LaunchDescriptionEntity options, and ExecuteLocal's respawn (launch >= 3.4, Jazzy).
    assert set(kwargs) <= {'condition', 'output', 'respawn', 'respawn_delay',
                           'respawn_max_retries'}, kwargs
    return Recorded('Node', (), dict(executable=executable, package=package, name=name,
                                     parameters=parameters, remappings=remappings,
                                     arguments=arguments, **kwargs))


def declare(name, *, default_value=None, description=None, choices=None):
    return Recorded('DeclareLaunchArgument', (name,), dict(default_value=default_value,
                                                          description=description))


def parameter_value(value, *, value_type=None):
    assert value_type in (str, int, float, bool)
    return Recorded('ParameterValue', (value,), dict(value_type=value_type))


def opaque_function(*, function, args=None, kwargs=None, condition=None):
    return Recorded('OpaqueFunction', (), dict(function=function, args=list(args or []),
                                               kwargs=dict(kwargs or {}), condition=condition))


def on_process_exit(*, target_action=None, on_exit):
    return Recorded('OnProcessExit', (), dict(target_action=target_action, on_exit=on_exit))


def shutdown(*, reason='reason not given', due_to_sigint=False):
    return Recorded('Shutdown', (), dict(reason=reason, due_to_sigint=due_to_sigint))


def emit_event(*, event):
    return Recorded('EmitEvent', (), dict(event=event))


def log_info(*, msg):
    return Recorded('LogInfo', (), dict(msg=msg))


def ament_prefix(root, packages):
    """An install prefix whose ament index registers `packages`, as a ROS installation's."""
    index = root / 'share' / 'ament_index' / 'resource_index' / 'packages'
    index.mkdir(parents=True, exist_ok=True)
    for package in packages:
        (index / package).touch()
    return root


@pytest.fixture
def launch_api(monkeypatch, tmp_path):
    # The ROS tools the graphs start are installed unless a test says otherwise.
    monkeypatch.setenv('AMENT_PREFIX_PATH', str(ament_prefix(
        tmp_path / 'ros', ['robot_state_publisher', 'rviz2'])))
    modules = {
        'launch': {'LaunchDescription': recorder('LaunchDescription')},
        'launch.actions': {'DeclareLaunchArgument': declare, 'EmitEvent': emit_event,
                           'LogInfo': log_info, 'OpaqueFunction': opaque_function,
                           'RegisterEventHandler': recorder('RegisterEventHandler')},
        'launch.event_handlers': {'OnProcessExit': on_process_exit},
        'launch.events': {'Shutdown': shutdown},
        'launch.conditions': {'IfCondition': recorder('IfCondition'),
                              'UnlessCondition': recorder('UnlessCondition')},
        'launch.substitutions': {'LaunchConfiguration': recorder('LaunchConfiguration')},
        'launch_ros': {},
        'launch_ros.actions': {'Node': node},
        'launch_ros.parameter_descriptions': {'ParameterValue': parameter_value},
    }
    for name, attrs in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, module)


class Context:
    """The part of launch's LaunchContext the launch description uses."""

    def __init__(self, launch_configurations=None, is_shutdown=False):
        self.launch_configurations = launch_configurations or {}
        self.is_shutdown = is_shutdown


class Exited:
    """launch.events.process.ProcessExited, as far as the handlers read it."""

    def __init__(self, returncode):
        self.returncode = returncode


def launch_entities(graph_name, **overrides):
    """The launch file's entities, with OpaqueFunctions run as launch runs them: with the
    launch configurations (the arguments' defaults updated by `overrides`)."""
    path = ROOT / 'launch' / f'{graph_name}.launch.py'
    description = runpy.run_path(str(path))['generate_launch_description']()
    assert description.kind == 'LaunchDescription'
    entities = description.args[0]
    declared = {e.args[0]: e.kwargs['default_value'] for e in entities
                if e.kind == 'DeclareLaunchArgument'}
    context = Context({**declared, **overrides})
    expanded = []
    for entity in entities:
        if entity.kind == 'OpaqueFunction':
            f = entity.kwargs
            condition = f['condition']
            if condition is not None:  # IfCondition(LaunchConfiguration(name))
                assert condition.kind == 'IfCondition'
                if context.launch_configurations[condition.args[0].args[0]] != 'true':
                    continue
            expanded += f['function'](context, *f['args'], **f['kwargs'])
        else:
            expanded.append(entity)
    return expanded


def launched_nodes(entities):
    return [e.kwargs for e in entities if e.kind == 'Node']


def overrides_of(launched):
    return next((p for p in launched['parameters'] if isinstance(p, dict)), {})


@pytest.mark.parametrize('graph_name', list(GRAPHS))
def test_launch_file_declares_the_graph(launch_api, graph_name):
    entities = launch_entities(graph_name, rviz='true')  # every node of the graph
    graph = GRAPHS[graph_name]
    declared = [e for e in entities if e.kind == 'DeclareLaunchArgument']
    assert [(d.args[0], d.kwargs['default_value']) for d in declared] == \
        [(a.name, a.default) for a in graph.arguments]
    nodes = launched_nodes(entities)
    assert [(n['package'], n['executable'], n['name']) for n in nodes] == \
        [(s.package, s.executable, s.name) for s in graph.nodes]
    for spec, launched in zip(graph.nodes, nodes, strict=True):
        files = [p for p in launched['parameters'] if isinstance(p, str)]
        assert files == spec.param_file_paths()
        overrides = overrides_of(launched)
        for name, value in spec.parameters:
            if isinstance(value, FromArg):
                launched_value = overrides[name]
                assert launched_value.kind == 'ParameterValue'
                assert launched_value.args[0].args == (value.arg,)
        assert launched['remappings'] == list(spec.remappings)
        condition = launched['condition']
        if spec.if_arg or spec.unless_arg:
            kind = 'IfCondition' if spec.if_arg else 'UnlessCondition'
            assert condition.kind == kind
            assert condition.args[0].args == (spec.if_arg or spec.unless_arg,)
        else:
            assert condition is None
        if spec.executable == 'robot_state_publisher':
            description = overrides['robot_description']
            assert description.kind == 'ParameterValue'  # a string, never parsed as YAML
            assert description.kwargs['value_type'] is str
            assert description.args[0] == robot_urdf().read_text()


@pytest.mark.parametrize('graph_name', list(GRAPHS))
def test_each_node_exit_ends_the_launch_as_it_ends_ssq_launch(launch_api, graph_name):
    entities = launch_entities(graph_name, rviz='true')
    handlers = {id(e.args[0].kwargs['target_action']): e.args[0] for e in entities
                if e.kind == 'RegisterEventHandler'}
    nodes = [e for e in entities if e.kind == 'Node']
    assert len(handlers) == len(nodes)
    for spec, node in zip(GRAPHS[graph_name].nodes, nodes, strict=True):
        handler = handlers[id(node)]  # OnProcessExit(target_action=this very node)
        assert handler.kind == 'OnProcessExit'
        respawn = {k: node.kwargs[k] for k in ('respawn', 'respawn_delay',
                                               'respawn_max_retries') if k in node.kwargs}
        assert respawn == ({'respawn': True, 'respawn_delay': spec.respawn_delay,
                            'respawn_max_retries': spec.respawn_max_retries}
                           if spec.respawn else {}), spec.name
        # launch respawns after every exit it did not cause, and counts each one.
        for exits, code in enumerate((0, 1, -2, -9, -15, 2) if spec.respawn else
                                     (0, 1, 2, -2, -9, -15)):
            emitted = handler.kwargs['on_exit'](Exited(code), Context())
            end = node_exit(spec, code, exits)
            if end.respawn or spec.respawn and not end.ends_graph:
                (log,) = emitted  # launch_ros starts it again; the log says so
                assert log.kind == 'LogInfo' and log.kwargs['msg'].startswith(end.message)
                continue
            if not end.ends_graph:
                assert emitted is None, (spec.name, code)
                continue
            log, action = emitted
            assert action.kind == 'EmitEvent' and action.kwargs['event'].kind == 'Shutdown'
            reason = action.kwargs['event'].kwargs['reason']
            assert reason.startswith(end.message) and graph_name in reason
            assert log.kind == 'LogInfo' and log.kwargs['msg'] == reason  # what ssq-launch says
            # Once launch is shutting down (Ctrl-C), exits are expected: no second shutdown.
            assert handler.kwargs['on_exit'](Exited(code), Context(is_shutdown=True)) is None


def test_the_learner_exit_ends_the_training_launch(launch_api):
    entities = launch_entities('train_sim')
    learner = next(e for e in entities if e.kind == 'Node' and e.kwargs['name'] == 'q_learner')
    handler = next(e.args[0] for e in entities if e.kind == 'RegisterEventHandler'
                   and e.args[0].kwargs['target_action'] is learner)
    _, emit = handler.kwargs['on_exit'](Exited(0), Context())
    assert emit.kwargs['event'].kwargs['reason'] == \
        'q_learner finished; stopping the train_sim graph'


def write_config(path, robot):
    text = (DATA / 'train_sim_tiny.yaml').read_text().replace('robot: robot.yaml',
                                                             f'robot: {robot}')
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize('graph_name', ['train_sim', 'deploy_sim'])
def test_robot_description_follows_the_config(launch_api, tmp_path, graph_name):
    config = write_config(tmp_path / 'ur5_run.yaml', DATA / 'ur5.yaml')
    entities = launch_entities(graph_name, config=config)
    publisher = next(n for n in launched_nodes(entities)
                     if n['executable'] == 'robot_state_publisher')
    urdf = overrides_of(publisher)['robot_description'].args[0]
    assert urdf == robot_urdf(DATA / 'ur5.yaml').read_text()
    assert '<robot name="ur5"' in urdf and urdf != robot_urdf().read_text()


def urdf_base_link(path):
    robot = ET.parse(path).getroot()
    # Top-level elements only: a <transmission> also holds <joint> elements.
    children = {j.find('child').get('link') for j in robot.findall('joint')}
    roots = [link.get('name') for link in robot.findall('link')
             if link.get('name') not in children]
    assert len(roots) == 1, roots
    return roots[0]


@pytest.mark.parametrize('robot', ['config/robot.yaml', 'test/data/panda.yaml',
                                   'test/data/ur5.yaml', 'test/data/xarm7.yaml'])
def test_rviz_fixed_frame_is_the_base_link_of_the_runs_robot(robot):
    """launch_description passes `-f robot_base_frame(...)` to rviz2: the URDF's root link."""
    from ssq_ros.safety.robot import load_robot

    assert robot_base_frame(ROOT / robot) == urdf_base_link(load_robot(ROOT / robot).urdf_path)


def test_rviz_config_shows_robot_and_safety_markers_in_the_base_frame():
    rviz = yaml.safe_load((ROOT / 'rviz' / 'ssq.rviz').read_text())
    manager = rviz['Visualization Manager']
    assert manager['Global Options']['Fixed Frame'] == urdf_base_link(robot_urdf())
    displays = {d['Class']: d for d in manager['Displays']}
    assert displays['rviz_default_plugins/RobotModel']['Description Topic']['Value'] == \
        '/robot_description'
    markers = displays['rviz_default_plugins/MarkerArray']['Topic']
    assert markers['Value'] == '/ssq/safety/markers'
    # Volatile matches a latched or a volatile publisher; transient local would miss the latter.
    assert markers['Durability Policy'] == 'Volatile'
    assert markers['Reliability Policy'] == 'Reliable'


def test_missing_optional_ros_tools_are_reported_not_fatal(launch_api, monkeypatch, tmp_path):
    """A ROS installation without rviz2 (a headless robot PC) still launches the graph."""
    monkeypatch.setenv('AMENT_PREFIX_PATH', str(ament_prefix(tmp_path / 'bare', ['rclpy'])))
    entities = launch_entities('train_sim', rviz='true')
    names = {n['name'] for n in launched_nodes(entities)}
    assert 'rviz2' not in names and 'robot_state_publisher' not in names
    assert {'mujoco_sim', 'safe_behavior', 'q_learner', 'policy_executor',
            'safety_monitor'} <= names
    notes = [e.kwargs['msg'] for e in entities if e.kind == 'LogInfo']
    assert any("package 'rviz2' is not installed" in n for n in notes), notes
    assert any("package 'robot_state_publisher' is not installed" in n for n in notes)
    # Installed, rviz2 starts with the run's robot base as its fixed frame; rviz:=false skips.
    monkeypatch.setenv('AMENT_PREFIX_PATH', str(ament_prefix(tmp_path / 'full',
                                                              ['robot_state_publisher',
                                                               'rviz2'])))
    rviz = [n for n in launched_nodes(launch_entities('train_sim', rviz='true'))
            if n['name'] == 'rviz2']
    assert len(rviz) == 1 and rviz[0]['arguments'][-2:] == ['-f', 'ssq_link0']
    assert not [n for n in launched_nodes(launch_entities('train_sim', rviz='false'))
                if n['name'] == 'rviz2']


@pytest.mark.parametrize('graph_name', list(GRAPHS))
def test_nodes_get_the_stop_grace_before_sigterm_unless_the_user_sets_one(launch_api,
                                                                           graph_name):
    """launch waits `sigterm_timeout` (5 s by default) after SIGINT; the graphs set STOP_GRACE,
    as ssq-launch waits, and a `sigterm_timeout:=` on the command line still wins."""
    from ssq_ros.graph import STOP_GRACE
    path = ROOT / 'launch' / f'{graph_name}.launch.py'
    entities = runpy.run_path(str(path))['generate_launch_description']().args[0]
    for given, expected in (({}, f'{STOP_GRACE:g}'), ({'sigterm_timeout': '3'}, '3')):
        context = Context(dict(given))
        for entity in entities:
            if entity.kind == 'OpaqueFunction' and entity.kwargs['condition'] is None \
                    and not entity.kwargs['args']:
                entity.kwargs['function'](context)
        assert context.launch_configurations['sigterm_timeout'] == expected
