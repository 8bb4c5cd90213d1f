"""The simulated velocity controller follows the support check's model of the arm closely:
the assumption the safety guarantee rests on, measured in MuJoCo."""
from dataclasses import replace

import numpy as np
import pytest

from ssq_ros.safety.support import swept_path
from ssq_ros.sim.env import make_setup
from ssq_ros.sim.simulator import ArmSimulator


@pytest.fixture(scope='module')
def setup():
    return make_setup()


def test_tracking_matches_the_support_model(setup):
    sim = ArmSimulator(setup.robot, setup.scene, setup.config.physics)
    support = setup.support
    rng = np.random.default_rng(0)
    worst_position, worst_velocity = 0.0, 0.0
    for _ in range(10):
        sim.reset(setup.robot.home)
        for _ in range(6):
            q, qdot = sim.q, sim.qdot
            command = rng.uniform(-0.8, 0.8, 7) * setup.safe_set.velocity_limit
            positions, velocities, _ = swept_path(q, qdot, command[None], support.period,
                                                  support.rate, 1, 1)
            sim.step(command)
            worst_position = max(worst_position, np.abs(sim.q - positions[0, 0]).max())
            worst_velocity = max(worst_velocity, np.abs(sim.qdot - velocities[0, 0]).max())
    # Tracking lag of the effort-limited servo: well inside the 0.01 rad hold tolerance.
    assert worst_position < 0.005 and worst_velocity < 0.05


def test_hold_brakes_along_the_checked_path(setup):
    sim = ArmSimulator(setup.robot, setup.scene, setup.config.physics)
    sim.reset(setup.robot.home)
    command = 0.8 * setup.safe_set.velocity_limit * np.array([1, -1, 1, 1, -1, 1, 1])
    for _ in range(8):
        sim.step(command)
    q, qdot = sim.q, sim.qdot
    positions, _, _ = swept_path(q, qdot, np.zeros((1, 7)), setup.support.period,
                                 setup.support.rate, 1, 50)
    for _ in range(12):
        sim.step(np.zeros(7))
    assert np.abs(sim.qdot).max() < 1e-3
    assert np.abs(sim.q - positions[0, -1]).max() < 0.005


def test_bad_commands_and_periods_are_refused(setup):
    sim = ArmSimulator(setup.robot, setup.scene, setup.config.physics)
    sim.reset(setup.robot.home)
    with pytest.raises(ValueError, match='finite'):
        sim.step(np.full(7, np.nan))
    with pytest.raises(ValueError, match='finite'):
        sim.step(np.zeros(6))
    with pytest.raises(ValueError, match='multiple'):
        ArmSimulator(setup.robot, setup.scene,
                     replace(setup.config.physics, control_period=0.051))
