"""The launch files build, from ssq_ros.graph, the launch_ros actions a Jazzy install expects.

launch and launch_ros cannot be installed in a plain virtualenv, so the launch files run here
against recorders with the keyword signatures of the Jazzy API (launch_ros actions/node.py,
parameter_descriptions.py; launch actions and substitutions). They check that each launch file
declares the graph's arguments and starts exactly the graph's nodes with the graph's parameters.
"""
import runpy
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from ssq_ros.graph import GRAPHS, FromArg, robot_urdf

ROOT = Path(__file__).resolve().parents[1]


class Recorded:
    def __init__(self, kind, args, kwargs):
        self.kind, self.args, self.kwargs = kind, args, kwargs


def recorder(kind):
    def make(*args, **kwargs):
        return Recorded(kind, args, kwargs)
    return make


def node(*, executable, package=None, name=None, namespace=None, exec_name=None,
         parameters=None, remappings=None, ros_arguments=None, arguments=None, **kwargs):
    assert set(kwargs) <= {'condition', 'output'}, kwargs  # LaunchDescriptionEntity options
    return Recorded('Node', (), dict(executable=executable, package=package, name=name,
                                     parameters=parameters, remappings=remappings,
                                     arguments=arguments, **kwargs))


def declare(name, *, default_value=None, description=None, choices=None):
    return Recorded('DeclareLaunchArgument', (name,), dict(default_value=default_value,
                                                          description=description))


def parameter_value(value, *, value_type=None):
    assert value_type in (str, int, float, bool)
    return Recorded('ParameterValue', (value,), dict(value_type=value_type))


@pytest.fixture
def launch_api(monkeypatch):
    modules = {
        'launch': {'LaunchDescription': recorder('LaunchDescription')},
        'launch.actions': {'DeclareLaunchArgument': declare},
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


@pytest.mark.parametrize('graph_name', list(GRAPHS))
def test_launch_file_declares_the_graph(launch_api, graph_name):
    path = ROOT / 'launch' / f'{graph_name}.launch.py'
    description = runpy.run_path(str(path))['generate_launch_description']()
    graph = GRAPHS[graph_name]
    entities = description.args[0]
    declared = [e for e in entities if e.kind == 'DeclareLaunchArgument']
    assert [(d.args[0], d.kwargs['default_value']) for d in declared] == \
        [(a.name, a.default) for a in graph.arguments]
    nodes = [e.kwargs for e in entities if e.kind == 'Node']
    assert [(n['package'], n['executable'], n['name']) for n in nodes] == \
        [(s.package, s.executable, s.name) for s in graph.nodes]
    for spec, launched in zip(graph.nodes, nodes, strict=True):
        files = [p for p in launched['parameters'] if isinstance(p, str)]
        assert files == spec.param_file_paths()
        overrides = next((p for p in launched['parameters'] if isinstance(p, dict)), {})
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
            assert overrides['robot_description'] == robot_urdf().read_text()


def urdf_base_link(path):
    robot = ET.parse(path).getroot()
    children = {j.find('child').get('link') for j in robot.iter('joint')}
    roots = [link.get('name') for link in robot.iter('link') if link.get('name') not in children]
    assert len(roots) == 1, roots
    return roots[0]


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
