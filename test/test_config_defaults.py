"""One source for every default: the code's defaults are the shipped, tuned experiment, experiment
YAMLs hold only overrides (with `extends:`), and node parameter files repeat no default."""
import dataclasses
import json
from pathlib import Path

import pytest

from ssq_ros.config import ConfigError, load, load_yaml, to_dict
from ssq_ros.paths import config_path
from ssq_ros.training.config import TrainConfig, load_run_config, load_train_config

DATA = Path(__file__).parent / 'data'


def effective(config: TrainConfig) -> dict:
    """The config a run uses (budgets that follow `steps` filled in where the code has them)."""
    from ssq_ros.training import config as training_config
    resolve = getattr(training_config, 'resolve_budgets', None)
    return to_dict(resolve(config) if resolve else config)


# Fields added after the recording, with the value that keeps the recorded behaviour (a field
# whose default is not this value changes what every run does, and fails the test below).
ADDED_SINCE_ISSUE13 = {
    # issue 16: a servo that is not the support check's model; the defaults are the ideal one
    'sim.physics.actuation_latency': 0.0, 'sim.physics.state_latency': 0.0,
    'sim.physics.state_noise': 0.0, 'sim.physics.timestamp_jitter': 0.0,
    'sim.physics.tracking_time_constant': 0.0, 'sim.physics.payload_mass': 0.0,
    'sim.physics.armature_scale': 1.0,
    # issue 14: goal candidates in a goal box for the task suite; postures is the recorded rule
    'sim.task.goal_sampling': 'postures',
    # issue 14: n-step targets; 1 is the one-step target every recorded run used (the
    # correction only acts when n_step > 1)
    'learner.critic.n_step': 1, 'learner.critic.n_step_correction': 'advantage',
    # issue 14: longer training episodes of mu (0: the task's max_steps, as recorded)
    'schedule.train_episode_steps': 0,
    # issue 14: deploy the exact induced policy (discrete); fitted is what every run used
    'learner.extraction.discrete_policy': 'fitted',
    # issue 14: mu's task-agnostic persistence prior; 0 is the recorded mu
    'sim.behavior.persistence': 0.0,
    # issue 14: the costly task's regions; none (and no cost) is the recorded task
    'sim.task.costly_boxes': [],
    'sim.task.costly_step_cost': 0.0,
    # issue 14: the hand's offset to the costly boxes in the observation; off is the recorded one
    'sim.task.observe_costly': False,
    # issue 14: the induced policy collecting part of the data; 0 is mu collecting everything
    'schedule.induced_collection': 0.0,
    # issue 14: the count-based novelty bonus of the costly task; 0 is no bonus (the cell
    # size then changes nothing)
    'schedule.novelty_bonus': 0.0, 'schedule.novelty_cell': 0.05, 'schedule.novelty_until': 1.0,
    # issue 14: hindsight goals (goal-free mu); 0 stores each transition once, as recorded
    'schedule.hindsight_goals': 0,
    # issue 14: every export kept for ssq-select; false keeps only policy.pt, as recorded
    'schedule.keep_policies': False,
    # issue 14: the collecting induced policy's own temperature; 0 is the critic's, as recorded
    'schedule.collection_alpha': 0.0,
    # issue 14: deploy the mean of the last exports; 1 is the final export alone, as recorded
    'schedule.average_exports_from': 1.0,
}


def without_added_fields(resolved: dict) -> dict:
    """`resolved` without the fields of ADDED_SINCE_ISSUE13, each checked to hold its value."""
    resolved = json.loads(json.dumps(resolved))
    for dotted, neutral in ADDED_SINCE_ISSUE13.items():
        *path, name = dotted.split('.')
        section = resolved
        for key in path:
            section = section[key]
        assert section.pop(name) == neutral, f'{dotted} is not {neutral!r} by default'
    return resolved


@pytest.mark.parametrize('name', ['train_sim.yaml', 'train_sim_continuous.yaml'])
def test_shipped_experiments_resolve_as_before_the_defaults_moved_into_code(name):
    # Issue 13: the YAMLs shrank to their overrides and the tuned values became the code's
    # defaults; the resolved experiments must not have changed (recorded before the move).
    # Fields added since must hold the value that keeps the recorded behaviour.
    before = json.loads((DATA / 'resolved_configs_before_issue13.json').read_text())
    resolved = without_added_fields(effective(load_train_config(config_path(name))))
    assert resolved == before[f'config/{name}']


def test_the_code_defaults_are_train_sim_yaml():
    # ssq-train's default and every node's '' config are the same experiment as TrainConfig().
    assert effective(TrainConfig()) == effective(load_train_config(config_path('train_sim.yaml')))
    assert to_dict(load_run_config('')) == effective(TrainConfig())
    assert load_yaml(config_path('train_sim.yaml')) == {}  # nothing repeated from the code


def test_continuous_differs_from_train_sim_only_in_its_action_kind():
    disc = effective(load_train_config(config_path('train_sim.yaml')))
    cont = effective(load_train_config(config_path('train_sim_continuous.yaml')))
    assert {k for k in disc if disc[k] != cont[k]} == {'action_kind'}


def test_extends_merges_sections_and_keeps_unknown_keys_errors(tmp_path):
    base = tmp_path / 'base.yaml'
    base.write_text('learner: {critic: {alpha: 0.5}}\nschedule: {steps: 2000}\n')
    child = tmp_path / 'child.yaml'
    child.write_text('extends: base.yaml\nlearner: {critic: {gamma: 0.9}}\n')
    config = load_train_config(child)
    assert (config.learner.critic.alpha, config.learner.critic.gamma) == (0.5, 0.9)
    assert config.schedule.steps == 2000
    # a file of the package's config/ is found by name
    packaged = tmp_path / 'packaged.yaml'
    packaged.write_text('extends: train_sim_continuous.yaml\nschedule: {seed: 3}\n')
    assert load_train_config(packaged).action_kind == 'continuous'
    typo = tmp_path / 'typo.yaml'
    typo.write_text('extends: base.yaml\nlearner: {critc: {gamma: 0.9}}\n')
    with pytest.raises(ConfigError, match='learner.critc: unknown key'):
        load_train_config(typo)
    bad_base = tmp_path / 'bad_base.yaml'
    bad_base.write_text('schedule: {stpes: 3}\n')
    (tmp_path / 'on_bad.yaml').write_text('extends: bad_base.yaml\n')
    with pytest.raises(ConfigError, match='schedule.stpes: unknown key'):
        load_train_config(tmp_path / 'on_bad.yaml')
    loop = tmp_path / 'loop.yaml'
    loop.write_text('extends: loop.yaml\n')
    with pytest.raises(ConfigError, match='cycle'):
        load_train_config(loop)
    missing = tmp_path / 'missing.yaml'
    missing.write_text('extends: no_such_file.yaml\n')
    with pytest.raises(ConfigError, match='cannot read'):
        load_train_config(missing)


def node_configs() -> dict:
    from ssq_ros.nodes.episode_server import EpisodeServerConfig
    from ssq_ros.nodes.hardware_interface import HardwareInterfaceConfig
    from ssq_ros.nodes.mujoco_sim import MujocoSimConfig
    from ssq_ros.nodes.policy_executor import PolicyExecutorConfig
    from ssq_ros.nodes.q_learner import QLearnerConfig
    from ssq_ros.nodes.safe_behavior import SafeBehaviorConfig
    from ssq_ros.nodes.safety_monitor import SafetyMonitorConfig
    return {'mujoco_sim': MujocoSimConfig, 'safe_behavior': SafeBehaviorConfig,
            'q_learner': QLearnerConfig, 'policy_executor': PolicyExecutorConfig,
            'safety_monitor': SafetyMonitorConfig, 'episode_server': EpisodeServerConfig,
            'hardware_interface': HardwareInterfaceConfig}


def flat(data: dict, prefix: str = '') -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flat(value, f'{prefix}{key}.'))
        else:
            out[f'{prefix}{key}'] = value
    return out


@pytest.mark.parametrize('name', ['nodes.yaml', 'hardware.yaml'])
def test_node_parameter_files_hold_only_overrides(name):
    configs = node_configs()
    for node, section in load_yaml(config_path(name)).items():
        values = flat(section['ros__parameters'])
        defaults = flat(to_dict(configs[node]()))
        for key, value in values.items():
            assert key in defaults, f'{name}: {node}.{key} is not a parameter of the node'
            assert value != defaults[key], f'{name}: {node}.{key} repeats the default {value!r}'


def test_shared_node_parameters_are_declared_once():
    # Parameters with one meaning in several nodes come from one base class, so they have one
    # name, default and range everywhere (max_state_age was once max_stamp_age by another name,
    # diagnostics_period had three ranges).
    from ssq_ros.nodes.common import JointStateInput, NodeDiagnostics
    shared = {f.name: f for base in (JointStateInput, NodeDiagnostics)
              for f in dataclasses.fields(base)}
    for node, cls in node_configs().items():
        for f in dataclasses.fields(cls):
            if f.name in shared and f.name != 'position_tolerance':
                assert f.metadata == shared[f.name].metadata, (node, f.name)
                assert f.default == shared[f.name].default, (node, f.name)
    assert 'max_state_age' not in {f.name for c in node_configs().values()
                                   for f in dataclasses.fields(c)}


def test_nodes_import_no_constants_from_each_other():
    import ast
    root = Path(__file__).resolve().parents[1] / 'ssq_ros' / 'nodes'
    nodes = {p.stem for p in root.glob('*.py')} - {'__init__', 'common', 'interfaces',
                                                   'transition_msg'}
    for path in root.glob('*.py'):
        for stmt in ast.walk(ast.parse(path.read_text())):
            if isinstance(stmt, ast.ImportFrom) and stmt.module:
                assert stmt.module.rsplit('.', 1)[-1] not in nodes or \
                    not stmt.module.startswith('ssq_ros.nodes'), (path.name, stmt.module)


def test_deploy_sim_actuation_delay_is_the_experiments_control_period(tmp_path):
    from ssq_ros.graph import GRAPHS
    graph = GRAPHS['deploy_sim']
    hw = next(n for n in graph.nodes if n.executable == 'hardware_interface')
    assert hw.parameter_values(graph.resolve_args({}))['actuation_delay'] == \
        load_run_config('').sim.physics.control_period
    slow = tmp_path / 'slow.yaml'
    slow.write_text('sim: {physics: {control_period: 0.1}}\n')
    args = graph.resolve_args({'config': str(slow)})
    assert hw.parameter_values(args)['actuation_delay'] == 0.1


def test_sim_section_overrides_file_loads_alone():
    from ssq_ros.task.config import SimConfig
    assert load(SimConfig, config_path('arms/ur5_sim.yaml')).task.start_margin == 0.02
