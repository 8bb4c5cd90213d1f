"""The support check's promise where a policy takes it: a driver that hugs the keep-out zones
with accepted commands only stays inside S (by the safe set's own margins) in real MuJoCo."""
from dataclasses import replace

import pytest

from ssq_ros.safety.support import SupportCheck
from ssq_ros.sim.boundary_driver import drive, hugging_chooser
from ssq_ros.sim.env import make_setup
from ssq_ros.sim.simulator import ArmSimulator

STEPS, EPISODE_STEPS, HUG_WEIGHT = 300, 60, 20.0


@pytest.fixture(scope='module')
def setup():
    return make_setup()


def simulator(setup) -> ArmSimulator:
    return ArmSimulator(setup.robot, setup.scene, setup.config.physics)


@pytest.mark.parametrize('seed', [1, 2])
def test_boundary_hugging_commands_keep_the_arm_inside_s(setup, seed):
    run = drive(setup, simulator(setup), STEPS, seed, EPISODE_STEPS,
                hugging_chooser(setup, HUG_WEIGHT))
    assert run.states_outside == 0 and run.min_margin >= 0.0, run
    assert run.referee_unsafe == 0 and run.hold_refused == 0
    # It did hug: the closest approach is within a few mm of S's boundary.
    assert run.min_margin < 2 * setup.support.config.tracking_allowance


def test_without_the_tracking_allowance_the_servo_lag_leaves_s(setup):
    """A goal-greedy driver on the model alone (no allowance), measured at every 2 ms physics
    step, ends on S's boundary: the MuJoCo servo trails the ramp the check assumes, and with no
    room kept for that the arm reaches S's edge (bench_support_tracking: 10 and 11 physics steps
    outside S for seeds 1 and 0; on another CPU the same run kept +0.05 mm, so the test asks
    for the edge, within 1 mm, not for the sign of a margin that small). This is what the
    allowance is for: with it the hugging runs above keep their margins >= 0."""
    config = replace(setup.support.config, tracking_allowance=0.0)
    bare = replace(setup, support=SupportCheck(setup.safe_set, config,
                                               setup.config.physics.control_period))
    physics = setup.config.physics
    every_step = replace(physics, control_period=physics.timestep, referee_stride=1)
    substeps = int(round(physics.control_period / physics.timestep))
    run = drive(bare, ArmSimulator(bare.robot, bare.scene, every_step), 400, 1, EPISODE_STEPS,
                hugging_chooser(bare, 0.0), substeps)
    assert run.min_margin < 0.001, run
    assert run.referee_unsafe == 0  # still inside the clearance the referee does not see
