"""The experiment config: what `ssq-train` and every node of a graph run.

Every field is declared once, here and in the classes it names, and its default is the shipped,
tuned value (docs/results.md gives the measurements): `TrainConfig()` is config/train_sim.yaml's
experiment. An experiment YAML lists only what it changes, optionally on top of another one
(`extends:`, ssq_ros.config); unknown keys and out-of-range values are errors naming the key.
`resolve_config_file` is re-exported here for the callers that always found it here.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from ssq_ros.config import ConfigError, load, parse, resolve_config_file, spec, to_dict
from ssq_ros.task.config import SimConfig
from ssq_ros.training.learner import LearnerConfig


@dataclass
class ScheduleConfig:
    """When the trainer collects, trains, extracts, evaluates and checkpoints."""

    # Why these values (the package arm, 2-core CPU; docs/results.md): 30k steps are ~125
    # episodes of mu, 6.2 min per seed with two runs side by side. learning_starts: 5 episodes
    # of mu before the first update. One update per step: an update costs about one env step
    # (6.6 vs 5.5 ms); other ratios not measured. Each extraction continues the previous policy;
    # with 500 steps the final fit ranked the critic's best action first on 85 % of states and
    # the policy reached 20 % of the goals, 10k more steps: 95 %, 65 %. 20 held-out episodes
    # cost 4000 env steps (~30 s). calibration_tail 400: 0.98^400 = 0.03 %, the return past the
    # tail is negligible. A checkpoint (100k-slot replay) takes 0.5 s. One torch thread: two
    # cores, and the simulator needs one of them.
    steps: int = spec(30_000, low=1, high=100_000_000, doc='environment steps of mu in total')
    learning_starts: int = spec(1_000, low=1, high=100_000_000,
                                doc='environment steps collected before the first update')
    updates_per_step: float = spec(1.0, low=0.0, high=64.0,
                                   doc='critic updates per environment step (fractions add up)')
    extract_every: int = spec(5_000, low=1, high=100_000_000,
                              doc='environment steps between two extractions')
    extract_steps: int = spec(2_000, low=1, high=10_000_000,
                              doc='policy gradient steps per periodic extraction')
    final_extract_steps: int | None = spec(
        None, low=1, high=10_000_000, doc='policy gradient steps of the final extraction (null: '
        'follows steps, see ScheduleConfig.resolved)')
    eval_every: int = spec(10_000, low=1, high=100_000_000,
                           doc='environment steps between two evaluations (after an extraction)')
    eval_episodes: int | None = spec(
        None, low=1, high=100_000, doc='held-out goals of every evaluation, the same set each '
        'time (null: follows steps)')
    final_eval_episodes: int | None = spec(
        None, low=1, high=100_000, doc='held-out goals of the final evaluation (null: follows '
        'steps)')
    calibration_episodes: int | None = spec(
        None, low=0, high=100_000, doc='final evaluation: episodes (of each of mu and the '
        "policy) whose Q(s, a) is compared with the return (null: a third of "
        'final_eval_episodes)')
    calibration_tail: int = spec(400, low=0, high=100_000,
                                 doc='final evaluation: steps run past the time limit so the '
                                     'discounted returns of the last counted steps are complete')
    checkpoint_every: int = spec(5_000, low=1, high=100_000_000,
                                 doc='environment steps between checkpoints (taken at the next '
                                     'episode end, so no episode is cut)')
    # Issue 14: on the hard tasks sampled mu reaches almost no goal within the task's 140 steps
    # but most within 250 (docs/tasks.md): longer training episodes give the critic mu's ways
    # over the wall. A time-limit cut bootstraps, so Q does not depend on it; the held-out
    # evaluation keeps task.max_steps. ssq-train only (the graph's episodes follow the task).
    train_episode_steps: int = spec(0, low=0, high=1_000_000,
                                    doc="ssq-train: steps of mu's training episodes before the "
                                        'time-limit cut (at least the task\'s max_steps); the '
                                        'evaluation keeps task.max_steps')
    # Issue 14: mu's data alone never takes some ways (the costly task), and the induced
    # policy reaches states mu's replay barely covers (the window). A training episode may be
    # collected by the critic's induced policy pi ∝ mu exp(Q/alpha), sampled: its support is
    # mu's, so it is safe exactly as mu is (METHOD.md, the safety lemma), and the soft target
    # (advantage-corrected when n-step) does not depend on who collected. ssq-train only.
    induced_collection: float = spec(
        0.0, low=0.0, high=1.0,
        doc="ssq-train: share of the training episodes after learning_starts that the critic's "
            'induced policy collects (sampled inside mu\'s support) instead of mu, drawn per '
            'episode; 0 = mu collects everything')
    # Issue 14, the alpha check: at alpha 0.03 the induced policy that collects is nearly
    # greedy, so the runs cover fewer states than at 0.1 and the held-out success fell. The
    # collecting policy's temperature may differ from the critic's: any policy inside mu's
    # support is as safe as mu, and the soft target does not depend on who collected.
    collection_alpha: float = spec(
        0.0, low=0.0, high=1e6,
        doc="ssq-train: temperature of the induced policy that collects training episodes, "
            'pi ∝ mu exp(Q/collection_alpha); 0 = the critic\'s alpha (the target, the '
            'evaluation and the deployed policy always use the critic\'s)')
    # Issue 14, the costly task: the way round runs against the distance reward, and neither
    # mu nor the induced policy takes it. A count-based bonus on the hand's cell (ssq_ros.
    # learning.exploration) joins the reward the critic learns from, never the logged return
    # or the evaluation; it decays as the cell is visited. ssq-train only.
    novelty_bonus: float = spec(
        0.0, low=0.0, high=100.0,
        doc='ssq-train: bonus scale / sqrt(n) added to the training reward, n the visits so '
            'far to the grid cell the hand ends the step in; 0 = none')
    novelty_cell: float = spec(0.05, low=0.001, high=1.0,
                               doc='edge of the novelty bonus\'s grid cells [m]')
    # A bonus left in the replay stays in Q: the evaluated policy then still seeks cells that
    # were rare (costly seed 0, nb1: held-out return -70 against -50 without the bonus).
    novelty_until: float = spec(
        1.0, low=0.0, high=1.0,
        doc='share of schedule.steps after which no novelty bonus is given and the bonus '
            "given so far is taken out of the replay's rewards, so the critic learns the "
            "task's reward alone to the end; 1 = the bonus is kept to the end")
    # Issue 14, the costly task: the hand reaches the goals' region (with the bonus) but the
    # critic sees too few goals reached to learn reaching them. Each transition is stored again
    # with goals the hand reached later in its episode ('future' hindsight goals): the reward
    # and the end are the task's for that goal. Exact only where mu's support does not depend
    # on the goal (goal-free discrete mu), so other configs are refused. ssq-train only.
    hindsight_goals: int = spec(
        0, low=0, high=16,
        doc="ssq-train: copies of each training transition stored with a goal the hand "
            'reached later in the same episode (reward and end recomputed for it); needs '
            'discrete actions and sim.behavior.goal_preference 0; 0 = none')
    # Issue 14, the costly task: late in a run the greedy success swings 20-35 points between
    # two evaluations 10 000 steps apart, so the last export is a draw among good and weak
    # networks. Keeping every export lets ssq-select choose among them on validation episodes.
    keep_policies: bool = spec(False, doc='keep every exported policy as '
                                          'policies/policy-STEP.pt beside policy.pt (for '
                                          'ssq-select); false = only the latest')
    # Issue 14, the costly task: the geometric mean of the last third's exports reached 98.2 %
    # on a never-used test split where the last export reached 91.2 % (docs/results.md). For
    # exact induced policies it is the induced policy of the mean critic, so it keeps mu's
    # support. The final evaluation, metrics.json and policy.pt are then the average's.
    average_exports_from: float = spec(
        1.0, low=0.0, high=1.0,
        doc='deploy as policy.pt the normalised geometric mean of the exports made at or '
            'after this share of schedule.steps (the final one included; they are kept in '
            'policies/ as with keep_policies); discrete actions only; 1 = the final export '
            'alone')
    seed: int = spec(0, low=0, high=2**31 - 1, doc='seed of mu, the networks and the episodes')
    torch_threads: int = spec(1, low=1, high=256, doc='torch CPU threads')

    def resolved(self) -> ScheduleConfig:
        """The schedule with every budget left null filled in from `steps`.

        Tuned at BUDGET_TUNED_AT steps (docs/training.md); other budgets scale with
        r = steps / BUDGET_TUNED_AT: the final extraction is proportional, r * 20 000 steps but
        at least 1 000; the evaluations are proportional with a floor and never above their
        tuned size: eval_episodes r * 20 in [5, 20], final_eval_episodes r * 30 in [10, 30];
        calibration_episodes is a third of final_eval_episodes, rounded up. A value given in
        the YAML is kept as it is.
        """
        r = self.steps / BUDGET_TUNED_AT
        values = {
            'final_extract_steps': max(1_000, round(20_000 * r)),
            'eval_episodes': min(20, max(5, round(20 * r))),
            'final_eval_episodes': min(30, max(10, round(30 * r))),
        }
        values = {k: v if getattr(self, k) is None else getattr(self, k)
                  for k, v in values.items()}
        if self.calibration_episodes is None:
            values['calibration_episodes'] = math.ceil(values['final_eval_episodes'] / 3)
        return dataclasses.replace(self, **values)


BUDGET_TUNED_AT = 30_000
"""schedule.steps at which the budgets that follow steps were tuned (docs/training.md)."""


@dataclass
class TrainConfig:
    """The whole training run."""

    robot: str = spec('robot.yaml', doc='robot yaml: a file in config/ or a path')
    safe_set: str = spec('safe_set.yaml', doc='safe set + support yaml: a file in config/ or a '
                         'path')
    action_kind: str = spec('discrete', choices=('discrete', 'continuous'),
                            doc='discrete end-effector primitives with an exact masked backup, '
                                'or continuous actions with K samples of mu')
    sim: SimConfig = spec(default_factory=SimConfig,
                          doc='physics, task, actions and the behavior controller mu '
                              '(sigma, K, weights)')
    learner: LearnerConfig = spec(default_factory=LearnerConfig,
                                  doc='critic, extraction, replay capacity')
    schedule: ScheduleConfig = spec(default_factory=ScheduleConfig, doc='budgets and periods')


def load_train_config(path: str | Path) -> TrainConfig:
    """Load and validate a training config; unknown keys and bad values name the key."""
    return with_overrides(load(TrainConfig, path))


def with_overrides(config: TrainConfig, *, seed: int | None = None,
                   steps: int | None = None) -> TrainConfig:
    """The config with command-line overrides applied and everything re-validated."""
    data = to_dict(config)
    if seed is not None:
        data['schedule']['seed'] = seed
    if steps is not None:
        data['schedule']['steps'] = steps
    config = parse(TrainConfig, data, 'command line')
    schedule = config.schedule
    if schedule.hindsight_goals and (config.action_kind != 'discrete'
                                     or config.sim.behavior.goal_preference > 0):
        raise ConfigError('schedule.hindsight_goals: a relabelled goal keeps the stored mu '
                          "only where mu's support does not depend on the goal: set "
                          'action_kind: discrete and sim.behavior.goal_preference: 0, or '
                          'schedule.hindsight_goals: 0')
    if schedule.collection_alpha > 0 and schedule.induced_collection == 0:
        raise ConfigError('schedule.collection_alpha: no training episode is collected by the '
                          'induced policy (schedule.induced_collection is 0); set '
                          'induced_collection above 0, or collection_alpha: 0')
    if schedule.average_exports_from < 1.0 and config.action_kind != 'discrete':
        raise ConfigError('schedule.average_exports_from: only discrete policies can be '
                          'averaged; set action_kind: discrete, or average_exports_from: 1')
    if schedule.learning_starts > schedule.steps:
        raise ConfigError(f'schedule.learning_starts ({schedule.learning_starts}) exceeds '
                          f'schedule.steps ({schedule.steps}): nothing would be learned')
    return config


DEFAULT_CONFIG = 'train_sim.yaml'
"""The experiment every node reads when its config_file parameter is ''."""


def load_run_config(config_file: str | Path, steps: int | None = None) -> TrainConfig:
    """The experiment config every node reads ('' is the package's train_sim.yaml), with the
    launch's step budget applied and the budgets that follow it resolved; errors name the
    key."""
    path = resolve_config_file(str(config_file) or DEFAULT_CONFIG)
    config = load_train_config(path)
    if steps is not None:
        config = with_overrides(config, steps=steps)
    return resolve_budgets(config)


def resolve_budgets(config: TrainConfig) -> TrainConfig:
    """The config with the schedule's budgets that follow `steps` filled in
    (`ScheduleConfig.resolved`): what a run actually does, and what its config hash covers."""
    return dataclasses.replace(config, schedule=config.schedule.resolved())
