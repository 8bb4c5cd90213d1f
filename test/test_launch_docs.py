"""The docs cover what the code defines: every parameter, reaction, controller and topic."""
from pathlib import Path

from ssq_ros.config import describe
from ssq_ros.nodes.hardware_interface import STANDARD_CONTROLLERS, HardwareInterfaceConfig
from ssq_ros.safety.status import SafetyStatus

DOCS = Path(__file__).resolve().parents[1] / 'docs'


def test_every_hardware_parameter_and_controller_is_documented():
    text = (DOCS / 'hardware.md').read_text()
    for name, _, _, doc in describe(HardwareInterfaceConfig):
        assert f'`{name}`' in text and doc in text, name
    for controller in STANDARD_CONTROLLERS:
        assert f'`{controller}`' in text, controller


def test_every_safety_reaction_is_documented_with_its_description():
    text = (DOCS / 'topics.md').read_text()
    for status in SafetyStatus:
        assert f'| `{status.name}` |' in text and status.description in text, status.name


def test_hardware_interface_topics_are_documented():
    text = (DOCS / 'topics.md').read_text()
    for topic in ('/joint_states', '/ssq/joint_command', '/forward_velocity_controller/commands',
                  '/ssq/estop_button', '/ssq/estop', '/ssq/estop_reset', '/diagnostics',
                  '/hardware_interface/status', '/ssq/safety/markers'):
        assert f'`{topic}`' in text, topic
