"""Self-collision: which link pairs are checked, their margins, and that the support check keeps
the arm from folding into itself, judged by MuJoCo's own geometry. Real pinocchio, real MuJoCo."""
from dataclasses import replace

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ssq_ros.config import ConfigError
from ssq_ros.paths import config_path
from ssq_ros.safety.kinematics import Kinematics
from ssq_ros.safety.robot import load_robot
from ssq_ros.safety.safe_set import SafeSet, load_safe_set_config
from ssq_ros.safety.self_collision import (
    PairMargins,
    SelfCollisionConfig,
    adjacent_pairs,
    find_srdf,
    inflated_radii,
    pair_name,
    select_pairs,
    srdf_disabled_pairs,
)
from ssq_ros.safety.support import SupportCheck
from ssq_ros.sim.env import make_setup
from ssq_ros.sim.simulator import ArmSimulator

DATA = config_path('robot.yaml').parents[1] / 'test' / 'data'
PANDA_SRDF = 'package://example-robot-data/robots/panda_description/srdf/panda.srdf'


@pytest.fixture(scope='module')
def robot():
    return load_robot(config_path('robot.yaml'))


@pytest.fixture(scope='module')
def safe_set(robot):
    return SafeSet(robot, load_safe_set_config(config_path('safe_set.yaml')))


def naive_margins(robot, pairs, sphere_pairs, radii, clearance, spheres):
    """The definition, one state and one sphere pair at a time."""
    out = np.empty((len(spheres), len(pairs)))
    for b, centres in enumerate(spheres):
        for k in range(len(pairs)):
            out[b, k] = min(np.linalg.norm(centres[i] - centres[j]) - radii[i] - radii[j]
                            - clearance for i, j in sphere_pairs[k])
    return out


def all_sphere_pairs(robot, pairs):
    frames = np.array(robot.sphere_frames)
    return [[(i, j) for i in np.flatnonzero(frames == a) for j in np.flatnonzero(frames == b)]
            for a, b in pairs]


def test_ssq_arm_pairs(robot, safe_set):
    selection = select_pairs(robot, safe_set.config.self_collision)
    links = selection.links
    assert links == ('ssq_link1', 'ssq_link2', 'ssq_link3', 'ssq_link4', 'ssq_link5',
                     'ssq_link6', 'ssq_link7', 'ssq_hand')
    # Parent/child bodies, and the hand, fixed to link7 (one body after pinocchio's reduction).
    assert selection.reason('ssq_link1', 'ssq_link2') == 'adjacent'
    assert selection.reason('ssq_hand', 'ssq_link7') == 'adjacent'
    assert selection.reason('ssq_link6', 'ssq_hand') == 'adjacent'
    assert ('ssq_link7', 'ssq_hand') in adjacent_pairs(robot)
    # The base and the elbow cannot meet; the wrist can fold the hand onto the forearm, and
    # the elbow bring the hand down onto the shoulder.
    assert selection.reason('ssq_link1', 'ssq_link4') == 'never'
    assert selection.reason('ssq_link5', 'ssq_hand') is None
    assert ('ssq_link1', 'ssq_hand') in selection.enabled
    # Every pair has exactly one fate.
    assert len(selection.enabled) + len(selection.disabled) == len(links) * (len(links) - 1) // 2
    assert safe_set.names[safe_set.self_collision_columns] == tuple(
        pair_name(p) for p in selection.enabled)
    assert 'self_collision:ssq_link5|ssq_hand' in safe_set.names


def test_selection_is_a_pure_function_of_the_seed(robot, safe_set):
    config = safe_set.config.self_collision
    assert select_pairs(robot, config) is select_pairs(robot, config)  # memoised
    other = select_pairs(robot, replace(config, seed=7))
    assert other.enabled == select_pairs(robot, config).enabled


def write_safe_set(tmp_path, **self_collision):
    data = yaml.safe_load(config_path('safe_set.yaml').read_text())
    data['safe_set']['self_collision'] = {**data['safe_set'].get('self_collision', {}),
                                          **self_collision}
    path = tmp_path / 'safe_set.yaml'
    path.write_text(yaml.safe_dump(data))
    return path


def test_yaml_disabled_pairs_and_srdf_are_honoured(robot, tmp_path):
    srdf = tmp_path / 'arm.srdf'
    srdf.write_text('<robot name="ssq_arm">\n'
                    '  <disable_collisions link1="ssq_hand" link2="ssq_link2" reason="Never"/>\n'
                    '  <disable_collisions link1="ssq_link0" link2="ssq_link5" reason="Never"/>\n'
                    '</robot>\n')
    assert srdf_disabled_pairs(srdf) == [('ssq_hand', 'ssq_link2'), ('ssq_link0', 'ssq_link5')]
    path = write_safe_set(tmp_path, srdf=str(srdf),
                          disabled_pairs=[['ssq_hand', 'ssq_link5']])
    config = load_safe_set_config(path)
    assert config.self_collision.disabled_pairs == (('ssq_hand', 'ssq_link5'),)
    selection = select_pairs(robot, config.self_collision)
    assert selection.reason('ssq_link2', 'ssq_hand') == 'srdf'  # either order
    assert selection.reason('ssq_link5', 'ssq_hand') == 'config'
    names = SafeSet(robot, config).names
    assert 'self_collision:ssq_link5|ssq_hand' not in names
    assert 'self_collision:ssq_link2|ssq_hand' not in names
    assert 'self_collision:ssq_link1|ssq_hand' in names
    with pytest.raises(ConfigError, match='disabled_pairs'):
        SafeSet(robot, load_safe_set_config(write_safe_set(
            tmp_path, disabled_pairs=[['ssq_hand', 'ssq_link0']])))  # link0 has no spheres
    with pytest.raises(ConfigError, match='SRDF file not found'):
        SafeSet(robot, load_safe_set_config(write_safe_set(tmp_path, srdf='missing.srdf',
                                                           disabled_pairs=[])))
    off = SafeSet(robot, load_safe_set_config(write_safe_set(tmp_path, enabled=False)))
    assert not any(n.startswith('self_collision:') for n in off.names)
    assert off.margins(robot.home, np.zeros(7)).shape == (1, len(off.names))


def test_panda_srdf_from_its_package():
    panda = load_robot(DATA / 'panda.yaml')
    config = SelfCollisionConfig(srdf=PANDA_SRDF)
    selection = select_pairs(panda, config)
    # panda.srdf disables hand-link5 ("Default") and link3-link5 ("Never").
    assert selection.reason('panda_link5', 'panda_hand') == 'srdf'
    assert selection.reason('panda_link3', 'panda_link5') in ('srdf', 'adjacent')
    plain = select_pairs(panda, SelfCollisionConfig(srdf=None))
    assert ('panda_link5', 'panda_hand') in plain.enabled
    assert set(selection.enabled) < set(plain.enabled)
    # `auto` (the default) finds it beside the URDF, in ../srdf/; ssq_arm ships none.
    assert select_pairs(panda, SelfCollisionConfig()).enabled == selection.enabled
    assert find_srdf(panda.urdf_path).name == 'panda.srdf'
    assert find_srdf(load_robot(config_path('robot.yaml')).urdf_path) is None


@pytest.mark.parametrize('robot_file', ['robot.yaml', 'panda.yaml', 'ur5.yaml'])
def test_home_is_clear_of_self_collision(robot_file):
    arm = load_robot(config_path(robot_file) if robot_file == 'robot.yaml' else
                     DATA / robot_file)
    safe = SafeSet(arm, load_safe_set_config(config_path('safe_set.yaml')))
    assert len(safe.self_collision) > 0
    home = safe.margins(arm.home, np.zeros(arm.dof))[0, safe.self_collision_columns]
    assert home.min() > 0.0


def test_vectorised_margins_agree_with_a_naive_loop(robot, safe_set):
    selection = select_pairs(robot, safe_set.config.self_collision)
    clearance = safe_set.config.self_collision.clearance
    radii = inflated_radii(robot)
    rng = np.random.default_rng(0)
    q = rng.uniform(robot.position_lower, robot.position_upper, (60, 7))
    spheres = safe_set.kinematics.sphere_positions(q)
    fast = safe_set.margins(q, np.zeros_like(q))[:, safe_set.self_collision_columns]
    slow = naive_margins(robot, selection.enabled, selection.sphere_pairs, radii, clearance,
                         spheres)
    assert np.abs(fast - slow).max() < 1e-5 and np.all(fast <= slow)  # float32, rounded down
    assert (slow < 0).any() and (slow > 0).any()
    full = PairMargins(robot, list(selection.enabled), radii, clearance)
    pairs = all_sphere_pairs(robot, selection.enabled)
    whole = naive_margins(robot, selection.enabled, pairs, radii, clearance, spheres)
    assert np.abs(full(spheres) - whole).max() < 1e-5
    assert np.allclose(full.sphere_pair_margins(spheres).min(axis=1), whole.min(axis=1))
    # Checking only the sphere pairs that ever come close never loosens a margin past them:
    # at the very postures the selection sampled, the dropped ones never overlap.
    assert np.all(whole <= slow + 1e-9)


def test_sphere_pairs_left_out_never_overlap_in_the_samples(robot, safe_set):
    config = safe_set.config.self_collision
    selection = select_pairs(robot, config)
    radii = inflated_radii(robot)
    rng = np.random.default_rng(config.seed)
    q = rng.uniform(robot.position_lower, robot.position_upper, (config.samples, 7))
    spheres = Kinematics(robot).sphere_positions(q[:3000])
    for pair, kept in zip(selection.enabled, selection.sphere_pairs, strict=True):
        dropped = sorted(set(all_sphere_pairs(robot, [pair])[0]) - set(kept))
        if dropped:
            i, j = np.array(dropped).T
            bare = np.linalg.norm(spheres[:, i] - spheres[:, j], axis=-1) - radii[i] - radii[j]
            assert bare.min() >= 0.0, pair


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.floats(-1.0, 1.0), min_size=7, max_size=7),
       st.floats(0.0, 0.1))
def test_margins_are_symmetric_and_negative_exactly_when_spheres_overlap(fractions, clearance):
    robot = load_robot(config_path('robot.yaml'))
    lower, upper = robot.position_lower, robot.position_upper
    q = (lower + upper) / 2 + np.array(fractions) * (upper - lower) / 2
    spheres = Kinematics(robot).sphere_positions(q)
    radii = inflated_radii(robot)
    pairs = [('ssq_link1', 'ssq_hand'), ('ssq_link5', 'ssq_hand'), ('ssq_link2', 'ssq_link7'),
             ('ssq_link3', 'ssq_link5')]
    forward = PairMargins(robot, pairs, radii, clearance)(spheres)[0]
    backward = PairMargins(robot, [(b, a) for a, b in pairs], radii, clearance)(spheres)[0]
    assert np.allclose(forward, backward, atol=1e-5)
    for k, sphere_pairs in enumerate(all_sphere_pairs(robot, pairs)):
        gaps = [np.linalg.norm(spheres[0, i] - spheres[0, j]) - radii[i] - radii[j] - clearance
                for i, j in sphere_pairs]
        if abs(min(gaps)) > 1e-5:  # away from the float32 rounding at the boundary
            assert (forward[k] < 0) == any(g < 0 for g in gaps)
        assert forward[k] == pytest.approx(min(gaps), abs=1e-5)


def test_clearance_must_leave_room_for_the_sample_gap(tmp_path):
    setup = make_setup()
    config = load_safe_set_config(write_safe_set(tmp_path, clearance=0.015))
    with pytest.raises(ConfigError, match='sample_gap_limit'):
        SupportCheck(SafeSet(setup.robot, config), setup.support.config,
                     setup.support.period)


# Folding the arm into itself from home. Wrist: joints 6 and 7 turn the hand back onto the
# forearm (link5). Elbow: joint 4 folds the forearm in while joint 6 bends the hand down onto
# the shoulder (link1). MuJoCo's geoms touch after about 1 and 0.5 rad of travel; nothing else
# (zones, table, limits) is met on the way.
FOLDS = {'wrist': (np.array([0, 0, 0, 0, 0, -0.6, -0.6]), ('ssq_link5|ssq_hand',)),
         'elbow': (np.array([0, 0, 0, -0.4, 0, -0.4, 0]),
                   ('ssq_link1|ssq_hand', 'ssq_link2|ssq_hand'))}


@pytest.fixture(scope='module')
def fold_setup():
    setup = make_setup()
    physics = replace(setup.config.physics, referee_stride=1)  # judge every 2 ms step
    return setup, physics


def fold(setup, physics, command, steps, shield):
    """Sends `command` for `steps` control periods (hold where the shield refuses it); returns
    (refused, referee self-collision unsafe states, worst referee self-collision margin,
    worst safe-set self-collision margin over the control steps, other referee-unsafe states,
    final posture)."""
    sim = ArmSimulator(setup.robot, setup.scene, physics)
    sim.reset(setup.robot.home)
    referee, safe_set, support = sim.referee, setup.safe_set, setup.support
    self_columns = [i for i, n in enumerate(referee.names) if n.startswith('self_collision:')]
    refused = self_unsafe = other_unsafe = 0
    worst_referee = worst_model = np.inf
    for _ in range(steps):
        q, qdot = sim.q, sim.qdot
        send = command
        if shield and not support.is_safe(q, qdot, command[None])[0]:
            refused += 1
            send = np.zeros(7)
            assert support.hold_is_safe(q, qdot)
        verdict = sim.step(send)  # the worst of the period, judged at every physics step
        margins = referee.margins(sim.data)
        worst_referee = min(worst_referee, margins[self_columns].min())
        self_unsafe += bool(verdict.unsafe and verdict.constraint.startswith('self_collision'))
        other_unsafe += bool(verdict.unsafe and not verdict.constraint.startswith('self'))
        model = safe_set.margins(sim.q, sim.qdot)[0, safe_set.self_collision_columns]
        worst_model = min(worst_model, model.min())
    return refused, self_unsafe, worst_referee, worst_model, other_unsafe, sim.q


@pytest.mark.parametrize('kind', sorted(FOLDS))
def test_the_shield_keeps_the_arm_from_folding_into_itself(fold_setup, kind):
    setup, physics = fold_setup
    command, pairs = FOLDS[kind]
    steps = 70
    refused, self_unsafe, worst_referee, worst_model, other, q = fold(
        setup, physics, command, steps, shield=True)
    # The command is accepted until the fold comes close, then refused from there on.
    assert 0 < refused < steps
    assert self_unsafe == 0 and other == 0 and worst_referee > 0.0
    assert worst_model > 0.0  # the sphere model with its clearance, at every control step
    final = setup.safe_set.margins(q, np.zeros(7))[0]
    assert setup.safe_set.names[int(np.argmin(final))] in [f'self_collision:{p}' for p in pairs]
    # Unshielded, the same command drives the links into each other: MuJoCo's own geometry
    # penetrates and the referee counts it.
    _, self_unsafe, worst_referee, _, _, _ = fold(setup, physics, command, steps, shield=False)
    assert self_unsafe > 0 and worst_referee < 0.0
    print(f'{kind}: shield refused {refused} of {steps} steps; unshielded, the referee counted '
          f'{self_unsafe} self-collision periods, deepest {worst_referee * 1000:.1f} mm')


@pytest.mark.parametrize('samples', [(3, 4), (2, 2)])
def test_accepted_paths_keep_self_collision_margins_between_samples(safe_set, samples):
    """Near the wrist fold, moving toward it, commands the check accepts keep every state of a
    100x denser path within the sample gap of the self-collision constraints: the doubled gap
    bound for two moving spheres (also with fewer samples, where the gap is larger)."""
    from ssq_ros.safety.support import SupportConfig, swept_path
    support = SupportCheck(safe_set, replace(SupportConfig(), period_samples=samples[0],
                                             braking_samples=samples[1]), 0.05)
    columns = safe_set.self_collision_columns
    worst, accepted_count = np.inf, 0
    for seed in range(8):
        rng = np.random.default_rng(seed)
        # Hand turned toward the forearm: link5|hand about 1 cm from its boundary.
        q = safe_set.robot.home + np.array([0, 0, 0, 0, 0, -0.56, -0.56]) + rng.uniform(
            -0.02, 0.02, 7)
        assert 0.0 < safe_set.margins(q, np.zeros(7))[0, columns].min() < 0.02
        qdot = rng.uniform(-0.1, 0.1, 7) * safe_set.velocity_limit
        qdot[5:] = -np.abs(qdot[5:])  # already folding
        commands = rng.uniform(-0.3, 0.3, (48, 7)) * safe_set.velocity_limit
        accepted = commands[support.is_safe(q, qdot, commands)]
        accepted_count += len(accepted)
        if len(accepted):
            positions, velocities, _ = swept_path(q, qdot, accepted, 0.05, support.rate, 300,
                                                  400)
            dense = safe_set.margins(positions.reshape(-1, 7), velocities.reshape(-1, 7))
            worst = min(worst, dense[:, columns].min())
    assert accepted_count > 0 and worst < 0.02  # paths that come close were accepted
    assert worst >= -support.config.sample_gap_limit
