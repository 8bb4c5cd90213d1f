"""A servo that is not the support check's model (physics: actuation_latency, state_latency,
state_noise, timestamp_jitter, tracking_time_constant, payload_mass, armature_scale), measured
in MuJoCo: each option changes what it should, and the defaults are the ideal servo bit for
bit."""
from dataclasses import replace

import mujoco
import numpy as np
import pytest

from ssq_ros.config import ConfigError, parse
from ssq_ros.sim.env import ReachAvoidEnv, make_setup
from ssq_ros.sim.scene import build_scene
from ssq_ros.sim.simulator import ArmSimulator
from ssq_ros.task.config import PhysicsConfig, SimConfig


@pytest.fixture(scope='module')
def setup():
    return make_setup()


def simulator(setup, **physics) -> ArmSimulator:
    config = replace(setup.config.physics, **physics)
    scene = setup.scene if config.payload_mass == 0 and config.armature_scale == 1 else \
        build_scene(setup.robot, setup.safe_set.config, config)
    return ArmSimulator(setup.robot, scene, config)


def fine(setup, **physics) -> ArmSimulator:
    """A simulator stepped one physics step (2 ms) per call, to time responses."""
    return simulator(setup, control_period=setup.config.physics.timestep, **physics)


def reference_step(sim: ArmSimulator, data: mujoco.MjData, target: np.ndarray,
                   command: np.ndarray) -> np.ndarray:
    """The servo as it was before the options existed (commit b584fa1), on its own MjData."""
    start, change = target, command - target
    ramp = float(np.max(np.abs(change) / sim.ramp_rate))
    dt = sim.physics.timestep
    for k in range(1, sim.substeps + 1):
        progress = 1.0 if ramp <= 0 else min(1.0, k * dt / ramp)
        data.ctrl[sim.scene.actuator_index] = start + change * progress
        mujoco.mj_step(sim.model, data)
    return start + change * (1.0 if ramp <= 0 else min(1.0, sim.substeps * dt / ramp))


def test_defaults_are_the_ideal_servo_bit_for_bit(setup):
    assert PhysicsConfig().ideal_servo and setup.config.physics.ideal_servo
    sim = simulator(setup)
    data = mujoco.MjData(sim.model)
    rng = np.random.default_rng(3)
    for _ in range(3):
        start = setup.robot.home + rng.uniform(-0.2, 0.2, 7)
        sim.reset(start)
        mujoco.mj_resetData(sim.model, data)
        data.qpos[sim.scene.qpos_index] = start
        mujoco.mj_forward(sim.model, data)
        target = np.zeros(7)
        for _ in range(15):
            command = rng.uniform(-0.6, 0.6, 7) * setup.safe_set.velocity_limit
            sim.step(command)
            target = reference_step(sim, data, target, command)
            assert np.array_equal(sim.data.qpos, data.qpos)
            assert np.array_equal(sim.data.qvel, data.qvel)
            assert np.array_equal(sim.measured_q, sim.q)
            assert np.array_equal(sim.measured_qdot, sim.qdot)
            assert sim.measured_stamp == sim.time
            assert np.array_equal(sim.measured_ee_position(), sim.ee_position())


def first_motion(sim: ArmSimulator, command: np.ndarray, steps: int = 60,
                 threshold: float = 1e-3) -> float:
    """Seconds from the command until any joint moves faster than `threshold` rad/s."""
    sim.reset(sim.robot.home)
    for k in range(1, steps + 1):
        sim.step(command)
        if np.abs(sim.qdot).max() > threshold:
            return k * sim.physics.timestep
    raise AssertionError('the arm never moved')


@pytest.mark.parametrize('latency', [0.008, 0.02, 0.05])
def test_actuation_latency_delays_the_start_of_motion_by_it(setup, latency):
    command = np.array([0.0, 0.0, 0.0, -0.3, 0.0, 0.0, 0.0])
    ideal = first_motion(fine(setup), command)
    delayed = first_motion(fine(setup, actuation_latency=latency), command, steps=100)
    assert delayed - ideal == pytest.approx(latency, abs=1e-9)


def test_actuation_latency_keeps_the_previous_command_meanwhile(setup):
    # A command sequence with a reversal: with latency the whole response is the ideal one,
    # 10 physics steps later; in particular the arm keeps +0.3 rad/s for 20 ms after -0.3 is
    # given.
    forward = np.array([0.3, 0, 0, 0.2, 0, 0, 0])
    commands = [forward] * 60 + [-forward] * 60
    runs = {}
    for latency in (0.0, 0.02):
        sim = fine(setup, actuation_latency=latency)
        sim.reset(setup.robot.home)
        runs[latency] = []
        for command in commands:
            sim.step(command)
            runs[latency].append(sim.qdot)
    ideal, delayed = np.array(runs[0.0]), np.array(runs[0.02])
    assert np.abs(delayed[10:] - ideal[:-10]).max() < 1e-4
    assert np.abs(delayed[:10]).max() < 1e-4
    assert delayed[69, 0] == pytest.approx(0.3, abs=0.01) and ideal[69, 0] < 0.25


def test_tracking_time_constant_is_a_first_order_lag(setup):
    command = np.zeros(7)
    command[3] = -0.02  # the ramp takes well under a physics step... a few at most
    t63 = {}
    for tau in (0.0, 0.02, 0.05):
        sim = fine(setup, tracking_time_constant=tau)
        sim.reset(setup.robot.home)
        for k in range(1, 200):
            sim.step(command)
            if sim.qdot[3] <= 0.632 * command[3]:
                t63[tau] = k * sim.physics.timestep
                break
    for tau in (0.02, 0.05):
        assert t63[tau] - t63[0.0] == pytest.approx(tau, rel=0.15)


def test_state_latency_shows_the_state_of_that_long_ago(setup):
    sim = fine(setup, state_latency=0.02)
    sim.reset(setup.robot.home)
    truth, stamps = [], []
    command = 0.4 * setup.safe_set.velocity_limit * np.array([1, -1, 1, -1, 1, -1, 1])
    for _ in range(40):
        sim.step(command)
        truth.append((sim.time, sim.q, sim.qdot))
        stamps.append(sim.measured_stamp)
        if len(truth) > 10:
            t, q, qdot = truth[-11]
            assert np.array_equal(sim.measured_q, q) and np.array_equal(sim.measured_qdot, qdot)
            assert sim.measured_stamp == pytest.approx(t)
    # before the first 20 ms: the state it was reset to
    assert np.abs(np.array(stamps) - np.array([t for t, _, _ in truth]) + 0.02).max() < 1e-9


def test_state_noise_has_the_configured_spread_on_positions_and_velocities(setup):
    sigma = 0.003
    sim = simulator(setup, state_noise=sigma)
    sim.reset(setup.robot.home)
    dq, dqdot = [], []
    for _ in range(400):
        sim.step(np.zeros(7))
        dq.append(sim.measured_q - sim.q)
        dqdot.append(sim.measured_qdot - sim.qdot)
    dq, dqdot = np.array(dq), np.array(dqdot)
    assert dq.std() == pytest.approx(sigma, rel=0.05) and abs(dq.mean()) < 3e-4
    # the velocity noise is the finite difference of the position noise over a period
    assert np.allclose(dqdot[1:], (dq[1:] - dq[:-1]) / sim.physics.control_period)
    assert dqdot.std() == pytest.approx(np.sqrt(2) * sigma / sim.physics.control_period,
                                        rel=0.05)
    # the observation's hand position is that of the measured posture
    other = ArmSimulator(setup.robot, setup.scene, setup.config.physics)
    other.reset(sim.measured_q)
    assert np.allclose(sim.measured_ee_position(), other.ee_position(), atol=1e-12)


def test_timestamp_jitter_moves_only_the_stamp(setup):
    sim = simulator(setup, timestamp_jitter=0.005)
    sim.reset(setup.robot.home)
    errors = []
    for _ in range(300):
        sim.step(np.zeros(7))
        errors.append(sim.measured_stamp - sim.time)
        assert np.array_equal(sim.measured_q, sim.q)
    assert np.std(errors) == pytest.approx(0.005, rel=0.1)


def sag(sim: ArmSimulator, periods: int = 20) -> float:
    """How far the arm drifts [rad] in `periods` control periods of a zero command at home."""
    sim.reset(sim.robot.home)
    for _ in range(periods):
        sim.step(np.zeros(7))
    return float(np.abs(sim.q - sim.robot.home).max())


def test_payload_the_servo_must_carry_grows_the_tracking_error(setup):
    ideal = sag(simulator(setup))
    loaded = sag(simulator(setup, payload_mass=3.0))
    assert ideal < 1e-5 and loaded > 1e-3
    scene = build_scene(setup.robot, setup.safe_set.config, PhysicsConfig(payload_mass=3.0))
    body = scene.model.body('payload')
    assert scene.model.body_mass[body.id] == 3.0 and scene.model.body_gravcomp[body.id] == 0
    assert scene.model.body(scene.model.body_parentid[body.id]).name == setup.robot.ee_frame


def ramp_error(sim: ArmSimulator) -> float:
    """Largest velocity error against the ramp target over a fast reversal."""
    sim.reset(sim.robot.home)
    worst = 0.0
    for sign in (1, -1, 1, -1):
        sim.step(sign * 0.6 * sim.scene.velocity_limit)
        worst = max(worst, float(np.abs(sim.qdot - sim._target).max()))
    return worst


def test_armature_scale_changes_the_joint_inertia_and_the_tracking(setup):
    heavy = simulator(setup, armature_scale=20.0)
    assert np.allclose(heavy.model.dof_armature[heavy.scene.dof_index],
                       20 * setup.config.physics.armature)
    assert ramp_error(heavy) > 2 * ramp_error(simulator(setup))


def test_options_are_validated():
    with pytest.raises(ConfigError, match='actuation_latency.*multiple of timestep'):
        PhysicsConfig(actuation_latency=0.003)
    with pytest.raises(ConfigError, match='state_latency.*multiple of timestep'):
        PhysicsConfig(state_latency=0.0101)
    with pytest.raises(ConfigError, match='state_noise'):
        PhysicsConfig(state_noise=-0.001)
    with pytest.raises(ConfigError, match='armature_scale'):
        PhysicsConfig(armature_scale=-1.0)
    with pytest.raises(ConfigError, match='tracking_time_constant'):
        parse(SimConfig, {'physics': {'tracking_time_constant': 5.0}})
    with pytest.raises(ConfigError, match='payload_mass'):
        parse(SimConfig, {'physics': {'payload_mass': -1}})
    with pytest.raises(ConfigError, match='timestamp_jitter'):
        parse(SimConfig, {'physics': {'timestamp_jitter': 1.0}})
    assert PhysicsConfig(timestep=0.001, actuation_latency=0.003).steps_of(0.003) == 3
    assert not PhysicsConfig(state_noise=0.001).ideal_servo


def test_env_observes_the_measured_state(setup):
    noisy = replace(setup.config, physics=replace(setup.config.physics, state_noise=0.01,
                                                  state_latency=0.01))
    env = ReachAvoidEnv(setup=replace(setup, config=noisy))
    obs, info = env.reset(seed=2)
    obs, _, _, _, info = env.step(0)
    q, _ = env.joint_state()
    assert np.array_equal(q, env.sim.measured_q) and not np.array_equal(q, env.sim.q)
    assert obs[env.task.layout['q']] == pytest.approx(q.astype(np.float32))
    assert info['stamp'] == pytest.approx(env.sim.time - 0.01)
    # the same seed gives the same noise
    again = ReachAvoidEnv(setup=replace(setup, config=noisy))
    again.reset(seed=2)
    again.step(0)
    assert np.array_equal(again.sim.measured_q, q)


def test_envelope_bench_judges_every_physics_state(tmp_path):
    from bench import bench_servo_envelope as bench
    assert len(bench.cells(False, False)) == 36 and len(bench.cells(False, True)) == 41
    (tmp_path / 'config.yaml').write_text('sim: {task: {max_steps: 20}}\n')
    row = bench.run_cell((str(tmp_path), 'mu', (0.02, 0.02, 0.0), 1, False))
    # every physics step of every control period (25 of 2 ms), and the episode's start
    assert row['physics_states_judged'] == row['control_steps'] * 25 + 1
    assert row['unsafe_states'] == 0 and row['min_margin'] > 0
    assert set(row['min_S_margin_by_kind']) >= {'keep_out', 'joint_position', 'table'}
    assert '| 20 | 20 | 0 | 0 | 1 | mu |' in bench.table([row])
    # A plant-mismatch cell in the same process gets its own scene (payload body, armature),
    # and the row says which plant it ran.
    heavy = bench.run_cell((str(tmp_path), 'mu', (0.0, 0.0, 0.0, 5.0, 20.0), 1, False))
    assert (heavy['payload_mass'], heavy['armature_scale']) == (5.0, 20.0)
    assert '| 0 | 0 | 0 | 5 | 20 | mu |' in bench.table([heavy])
    ideal_model = bench._SETUPS[(str(tmp_path), 0.0, 1.0)].scene.model
    heavy_model = bench._SETUPS[(str(tmp_path), 5.0, 20.0)].scene.model
    assert mujoco.mj_name2id(heavy_model, mujoco.mjtObj.mjOBJ_BODY, 'payload') >= 0
    assert mujoco.mj_name2id(ideal_model, mujoco.mjtObj.mjOBJ_BODY, 'payload') < 0
    assert np.allclose(heavy_model.dof_armature, 20.0 * ideal_model.dof_armature)


def test_envelope_bench_tracking_stop_halts_a_servo_that_is_not_the_model(tmp_path):
    """hardware_interface's tracking check, in the bench: silent on the ideal servo, and on a
    servo lagging 200 ms that the model does not know it fires and the arm is held from then on."""
    from bench import bench_servo_envelope as bench
    (tmp_path / 'config.yaml').write_text('sim: {task: {max_steps: 60}}\n')
    ideal = bench.run_cell((str(tmp_path), 'mu', (0.0, 0.0, 0.0), 2, False, True))
    assert ideal['tracking_faults'] == 0 and ideal['tracking_stopped_steps'] == 0
    lagging = bench.run_cell((str(tmp_path), 'mu', (0.0, 0.2, 0.0), 2, False, True))
    print(f"lag 200 ms untold: {lagging['tracking_faults']} faults "
          f"({lagging['tracking_first_fault']}), held {lagging['tracking_stopped_steps']} steps")
    assert lagging['tracking_faults'] >= 1 and lagging['tracking_stopped_steps'] > 0
    assert 'tracking error' in lagging['tracking_first_fault']
    assert lagging['unsafe_states'] == 0


@pytest.mark.parametrize('latency', [0.05, 0.2])
def test_told_latency_keeps_mu_in_s_when_it_passes_the_commands_in_flight(tmp_path, latency):
    """Actuation latency of one and of four control periods, the support check told it, mu
    passing the commands the arm still follows (ArmProblem.behavior): no state outside S, in
    held-out episodes that reach the fixture's boundary (with no commands passed, ~8,000 states
    of 3 episodes were outside S at 50 ms; with only the last one passed, 10,006 at 200 ms)."""
    from bench import bench_servo_envelope as bench
    (tmp_path / 'config.yaml').write_text('{}\n')
    row = bench.run_cell((str(tmp_path), 'mu', (latency, 0.0, 0.0), 2, True))
    print(f"latency {latency * 1e3:g} ms told: outside S {row['states_outside_S']}, min S "
          f"margin {row['min_S_margin'] * 1e3:+.2f} mm ({row['min_S_constraint']}), reached "
          f"{row['successes']}/2")
    assert row['unsafe_states'] == 0 and row['states_outside_S'] == 0
    assert row['min_S_margin'] < 0.02  # it did come close to the boundary
