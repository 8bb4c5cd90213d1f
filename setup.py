"""ament_python build of ssq_ros; the same file serves `pip install` into a plain virtualenv.

Versions live in requirements.txt only: its sections become the extras `venv` (the ROS 2 Jazzy
wheels and the scientific stack, for machines without a ROS installation), `test` and `bench`.
Under colcon the ROS installation provides rclpy and the messages, so install_requires stays empty
as ament_python packages expect.
"""
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = 'ssq_ros'
HERE = Path(__file__).resolve().parent


def read_pinned_sections(path: Path) -> dict:
    """Split requirements.txt into extras: lines before any `# [name]` marker are `venv`."""
    sections = {'venv': []}
    current = 'venv'
    for raw in path.read_text().splitlines():
        line = raw.strip() if raw.lstrip().startswith('#') else raw.split('#')[0].strip()
        if line.startswith('# [') and line.endswith(']'):
            current = line[3:-1]
            sections.setdefault(current, [])
        elif line and not line.startswith('#'):
            sections[current].append(line)
    return sections


def share(folder: str) -> tuple:
    return (f'share/{PACKAGE}/{folder}', sorted(glob(f'{folder}/*.*')))


CONSOLE_SCRIPTS = [
    'ssq-sim-demo = ssq_ros.cli.sim_demo:main',
    'ssq-train = ssq_ros.cli.train:main',
    'ssq-report = ssq_ros.cli.report:main',
    'ssq-select = ssq_ros.cli.select:main',
    'hardware_interface = ssq_ros.nodes.hardware_interface:main',
    'mujoco_sim = ssq_ros.nodes.mujoco_sim:main',
    'episode_server = ssq_ros.nodes.episode_server:main',
    'safe_behavior = ssq_ros.nodes.safe_behavior:main',
    'q_learner = ssq_ros.nodes.q_learner:main',
    'policy_executor = ssq_ros.nodes.policy_executor:main',
    'safety_monitor = ssq_ros.nodes.safety_monitor:main',
    'ssq-gridworld = ssq_ros.cli.gridworld:main',
    'ssq-launch = ssq_ros.cli.launch:main',
    'ssq-robot-setup = ssq_ros.cli.robot_setup:main',
    'ssq-identify = ssq_ros.cli.identify:main',
]

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*', 'bench', 'bench.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
        share('launch'),
        share('config'),
        share('config/tasks'),
        share('urdf'),
        share('rviz'),
    ],
    install_requires=['setuptools'],
    extras_require=read_pinned_sections(HERE / 'requirements.txt'),
    zip_safe=True,
    maintainer='ssq_ros developers',
    maintainer_email='dev@ssq-ros.invalid',
    description='Safe-Support Q-Learning for manipulators: learn without entering unsafe states.',
    license='Apache-2.0',
    entry_points={'console_scripts': CONSOLE_SCRIPTS},
)
