"""ament-style package checks: the manifest, the dependencies it declares, the entry points."""
import ast
import importlib
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Top-level Python module -> the package.xml key that provides it.
MODULE_TO_KEY = {
    'rclpy': 'rclpy', 'rcl_interfaces': 'rcl_interfaces', 'std_msgs': 'std_msgs',
    'sensor_msgs': 'sensor_msgs',
    'geometry_msgs': 'geometry_msgs', 'trajectory_msgs': 'trajectory_msgs',
    'visualization_msgs': 'visualization_msgs', 'diagnostic_msgs': 'diagnostic_msgs',
    'std_srvs': 'std_srvs', 'rosgraph_msgs': 'rosgraph_msgs',
    'builtin_interfaces': 'builtin_interfaces', 'ament_index_python': 'ament_index_python',
    'launch': 'launch', 'launch_ros': 'launch_ros', 'pinocchio': 'pinocchio', 'coal': 'coal',
    'numpy': 'python3-numpy', 'yaml': 'python3-yaml', 'matplotlib': 'python3-matplotlib',
    'tqdm': 'python3-tqdm', 'torch': 'python3-pytorch-pip', 'mujoco': 'python3-mujoco-pip',
    'gymnasium': 'python3-gymnasium-pip', 'tensorboard': 'python3-tensorboard-pip',
}


def manifest():
    return ET.parse(ROOT / 'package.xml').getroot()


def test_manifest_is_format_3_ament_python():
    root = manifest()
    assert root.tag == 'package' and root.get('format') == '3'
    assert root.findtext('name') == 'ssq_ros'
    assert re.fullmatch(r'\d+\.\d+\.\d+', root.findtext('version'))
    assert root.findtext('license') == 'Apache-2.0'
    assert root.find('maintainer').get('email')
    assert root.findtext('export/build_type') == 'ament_python'


def imported_top_modules(folder: Path) -> set[str]:
    names = set()
    for path in folder.rglob('*.py'):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name.split('.')[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split('.')[0])
    return names


def test_every_imported_dependency_is_declared():
    declared = {e.text for e in manifest() if e.tag in ('exec_depend', 'depend')}
    third_party = imported_top_modules(ROOT / 'ssq_ros') | imported_top_modules(ROOT / 'launch')
    third_party -= set(sys.stdlib_module_names) | {'ssq_ros', '__future__'}
    unmapped = sorted(third_party - set(MODULE_TO_KEY))
    assert not unmapped, f'imports with no package.xml mapping in this test: {unmapped}'
    missing = sorted(MODULE_TO_KEY[m] for m in third_party if MODULE_TO_KEY[m] not in declared)
    assert not missing, f'package.xml lacks exec_depend for {missing}'


def console_scripts():
    tree = ast.parse((ROOT / 'setup.py').read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
                getattr(t, 'id', None) == 'CONSOLE_SCRIPTS' for t in node.targets):
            return [ast.literal_eval(e) for e in node.value.elts]
    raise AssertionError('setup.py defines no CONSOLE_SCRIPTS')


@pytest.mark.parametrize('entry', console_scripts() or ['<none>'])
def test_console_entry_point_imports(entry):
    if entry == '<none>':
        pytest.fail('setup.py declares no console entry points')
    name, target = (s.strip() for s in entry.split('='))
    module, func = target.split(':')
    assert callable(getattr(importlib.import_module(module), func)), name


def test_data_folders_are_installed():
    text = (ROOT / 'setup.py').read_text()
    for folder in ('launch', 'config', 'urdf', 'rviz'):
        assert f"share('{folder}')" in text
    assert (ROOT / 'resource' / 'ssq_ros').is_file()
    assert 'script_dir=$base/lib/ssq_ros' in (ROOT / 'setup.cfg').read_text()


def test_learning_safety_sim_layers_do_not_import_ros():
    for layer in ('learning', 'safety', 'sim'):
        folder = ROOT / 'ssq_ros' / layer
        if folder.is_dir():
            bad = imported_top_modules(folder) & {'rclpy', 'launch', 'launch_ros'}
            assert not bad, f'ssq_ros/{layer} imports {bad}'
