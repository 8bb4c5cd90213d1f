"""ssq-identify recovers the latency, lag and ramp fraction of a servo recorded in MuJoCo.

The recording is made in-process with the package's simulator, whose servo has the latency,
ramp and lag given (PhysicsConfig actuation_latency, command_acceleration_fraction,
tracking_time_constant), driven by 100 Hz velocity steps; the log is written by the same
ServoRecorder hardware_interface uses for `record_path`.
"""
from dataclasses import replace

import numpy as np
import pytest

from ssq_ros.cli.identify import fit_servo, main
from ssq_ros.safety.tracking import (
    ServoRecorder,
    TrackingConfig,
    TrackingMonitor,
    read_servo_log,
)
from ssq_ros.sim.env import make_setup
from ssq_ros.sim.simulator import ArmSimulator

PERIOD = 0.01


@pytest.fixture(scope='module')
def setup():
    return make_setup()


def record(setup, path, latency, tau, fraction, duration=6.0, seed=0):
    """Steps of velocity (a new random target every 0.3 s, undone by the next) sent at 100 Hz
    and the joint state measured before each, by a simulated servo with the given model."""
    physics = replace(setup.config.physics, control_period=PERIOD, actuation_latency=latency,
                      tracking_time_constant=tau, command_acceleration_fraction=fraction)
    sim = ArmSimulator(setup.robot, setup.scene, physics)
    sim.reset(setup.robot.home)
    rng = np.random.default_rng(seed)
    vmax = 0.5 * setup.safe_set.velocity_limit
    recorder = ServoRecorder(str(path), setup.robot.joint_names)
    command = np.zeros(setup.robot.dof)
    hold = int(round(0.3 / PERIOD))
    for k in range(int(round(duration / PERIOD))):
        if k % hold == 0:
            command = rng.uniform(-1, 1, setup.robot.dof) * vmax if (k // hold) % 2 == 0 \
                else -command
        recorder.measured(sim.time, sim.q, sim.qdot)
        recorder.sent(sim.time, command)
        sim.step(command)
    recorder.close()


@pytest.mark.parametrize('latency,tau,fraction', [(0.03, 0.04, 0.5), (0.012, 0.025, 0.75)])
def test_identify_recovers_latency_lag_and_ramp_of_a_simulated_servo(setup, tmp_path, latency,
                                                                     tau, fraction):
    path = tmp_path / 'servo.jsonl'
    record(setup, path, latency, tau, fraction)
    fit = fit_servo(read_servo_log(str(path)), setup.robot.acceleration_limit)
    assert fit.latency == pytest.approx(latency, abs=0.004)
    assert fit.time_constant == pytest.approx(tau, abs=0.005)
    assert fit.fraction == pytest.approx(fraction, abs=0.07)
    assert fit.velocity_rms < 0.1 * fit.ideal_velocity_rms


def test_the_command_prints_the_lines_to_paste(setup, tmp_path, capsys):
    path = tmp_path / 'servo.jsonl'
    record(setup, path, 0.02, 0.0, 0.5, duration=3.0)
    main([str(path), '--max-time-constant', '0.05'])
    out = capsys.readouterr().out
    assert 'actuation latency 20.0 ms' in out
    assert 'actuation_latency: 0.020' in out
    tau = float(out.split('tracking_time_constant: ')[1].split()[0])
    assert tau <= 0.004  # MuJoCo's own servo lags a little behind its reference
    assert 'actuation_delay: 0.020' in out


def test_a_file_that_is_not_a_servo_log_is_refused(tmp_path, capsys):
    path = tmp_path / 'other.jsonl'
    path.write_text('{"hello": 1}\n')
    with pytest.raises(SystemExit) as exit_info:
        main([str(path)])
    assert exit_info.value.code == 2 and 'not a servo log' in capsys.readouterr().err


def test_a_sent_command_keeps_the_time_it_was_decided_for(tmp_path):
    path = tmp_path / 'servo.jsonl'
    recorder = ServoRecorder(str(path), ['a'])
    for k in range(12):
        recorder.measured(0.01 * k, [0.0], [0.0])
        # hardware_interface says when the gate decided; an older recording did not
        recorder.sent(0.01 * k + 0.002, [0.1], 0.01 * k if k % 2 else None)
    recorder.close()
    log = read_servo_log(str(path))
    assert log.decide_times[1::2] == pytest.approx(0.01 * np.arange(1, 12, 2))
    assert np.all(np.isnan(log.decide_times[::2]))
    assert log.send_times == pytest.approx(0.01 * np.arange(12) + 0.002)


def test_the_tracking_check_passes_the_identified_servo(setup, tmp_path):
    """hardware_interface's tracking check with the identified model follows the simulated
    servo far more closely than with the ideal one, well inside its bounds."""
    path = tmp_path / 'servo.jsonl'
    record(setup, path, 0.03, 0.04, 0.5)
    log = read_servo_log(str(path))
    fit = fit_servo(log, setup.robot.acceleration_limit)
    worst = {}
    for name, latency, tau in (('identified', fit.latency, fit.time_constant),
                               ('ideal', 0.0, 0.0)):
        monitor = TrackingMonitor(log.joints, fit.fraction * setup.robot.acceleration_limit,
                                  latency, tau, TrackingConfig(enabled=True))
        faults = []
        for i, t in enumerate(log.times):
            faults.append(monitor.measured(t, log.positions[i], log.velocities[i]))
            monitor.sent(log.send_times[i], log.commands[i])
        worst[name] = monitor.worst_position.max()
        if name == 'identified':
            assert not any(faults)
            assert worst[name] < 0.1 * monitor.config.position_bound
    assert worst['identified'] < 0.2 * worst['ideal'], worst
