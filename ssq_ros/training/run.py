"""The run engine: one training run in one folder, whoever feeds it the transitions.

`ssq-train` (`ssq_ros.training.trainer`) steps the env in-process and feeds the engine; the
`q_learner` node (`ssq_ros.graph_logic.learner_run`) feeds it the transitions that arrive over
ROS. Everything else is here, once: the run folder and its config check, the schedule (update
credit, training reports, periodic extraction, checkpoints), checkpoint/resume after a kill,
extraction and export, the evaluation records and the metrics record `RunMetrics`.

Run folder:
    config.yaml                the resolved config of the run (a resume must match it)
    log.jsonl                  one JSON record per episode / training report / extraction /
                               evaluation, appended as it happens (a killed run can be reported)
    checkpoints/<name>.pt      learner + run counters + the driver's own state, atomic
                               (ssq-train: trainer.pt, the graph: graph_learner.pt)
    policy.pt                  the latest exported policy (TorchScript bytes); at the end, with
                               schedule.average_exports_from < 1, the mean of the last exports
    policies/policy-STEP.pt    every exported policy, by the step it was made at
                               (schedule.keep_policies or average_exports_from < 1; ssq-select
                               chooses among them)
    calibration.npz            Q(s_t, a_t) and G_t of the final evaluation (mu, policy, induced)
    metrics.json               `RunMetrics` (written last)
    tb/                        TensorBoard (charts/, losses/)
    plots/*.png                see ssq_ros.training.plots
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from ssq_ros.config import ConfigError, parse, to_dict
from ssq_ros.deploy.export import average_policies, export_policy, load_exported_policy
from ssq_ros.learning.critic import load_checkpoint
from ssq_ros.storage import atomic_write
from ssq_ros.training.config import TrainConfig, resolve_budgets, with_overrides
from ssq_ros.training.evaluate import (
    EvalStats,
    evaluate_heldout,
    greedy_behavior_actor,
    oracle_actor,
)
from ssq_ros.training.learner import OnlineLearner, TaskSpaces
from ssq_ros.training.provenance import provenance

LOG = 'log.jsonl'
KEPT_POLICIES = 'policies'
_KEPT_NAME = re.compile(r'policy-(\d+)\.pt')
_KIND = 'ssq_ros.Run/1'
# A training record is logged every this many transitions.
REPORT_EVERY = 250
# Seconds between two progress lines of a long phase (the final extraction).
PROGRESS_PERIOD = 10.0


@dataclass
class RunCounters:
    """What the run has counted so far; checkpointed with the learner."""

    episodes_train: int = 0
    update_credit: float = 0.0
    wall_time_s: float = 0.0
    wall_time_eval_s: float = 0.0
    log_bytes: int = 0
    unsafe_train: int = 0
    unsafe_eval: int = 0
    min_margin_train: float = math.inf
    min_margin_eval: float = math.inf
    behavior_fallbacks_train: int = 0
    episodes_induced_train: int = 0
    safe_set_unsafe_train: int | None = None
    safe_set_unsafe_eval: int | None = None
    evaluations: int = 0
    transitions_ignored: int = 0
    transitions_after_budget: int = 0
    last_fit: dict = field(default_factory=dict)
    last_eval: dict = field(default_factory=dict)


@dataclass
class RunMetrics:
    """metrics.json: the final numbers of a run, the same keys for ssq-train and the graph."""

    unsafe_states_train: int
    """referee verdicts 'unsafe' while mu trained (the graph: the independent monitor's count)"""
    unsafe_states_eval: int
    """referee verdicts 'unsafe' in every held-out evaluation (policy, mu and the greedy-mu and
    oracle baselines), every state the arm entered, calibration tails included"""
    success_rate_behavior: float
    """share of the final evaluation's held-out goals mu alone reached within task.max_steps"""
    success_rate_policy: float
    """the same for the shielded policy"""
    success_rate_behavior_greedy: float
    """the same for mu executed greedily (the most probable primitive it allows), a baseline
    run in the process that finishes the run, on the discrete problem (`Run.evaluate_baselines`)"""
    success_rate_oracle: float
    """the same for the scripted oracle (ssq_ros/control/oracle.py: a planner over hand
    positions, acting only with primitives mu allows), run beside greedy mu"""
    return_behavior: float
    """mean undiscounted return of mu over the first task.max_steps of the held-out episodes"""
    return_policy: float
    """the same for the shielded policy"""
    value_calibration_error: float
    """mean |Q - G| / mean |G| on mu's held-out calibration episodes: Q(s_t, a_t) of mu's
    actions against mu's discounted return G_t, for the steps whose G_t is complete
    (`ssq_ros.training.evaluate.complete_returns`); NaN without any such step, and NaN when a
    calibration episode ended before its returns were complete (the graph's time-limited
    episodes: keeping only those that reached the goal would select mu's lucky outcomes)"""
    value_calibration_error_policy: float
    """the same on the shielded policy's own held-out episodes"""
    calibration_pairs: int
    """(Q, G) pairs value_calibration_error rests on"""
    calibration_pairs_policy: int
    """(Q, G) pairs value_calibration_error_policy rests on"""
    success_rate_induced: float
    """the same for the critic's exact induced policy pi ∝ mu exp(Q/alpha), sampled inside mu's
    support (`ssq_ros.training.evaluate.induced_actor`, no extraction); NaN in the graph, whose
    executor runs the extracted policy"""
    return_induced: float
    """mean undiscounted return of the induced policy, as return_behavior; NaN in the graph"""
    calibration_bias_induced: float
    """mean (Q - G) in return units on the induced policy's calibration episodes, G_t its soft
    return r_t + sum_{k>t} gamma^(k-t) (r_k - alpha KL(pi || mu)(s_k)), the quantity Q_alpha
    predicts (`ssq_ros.learning.evaluation.soft_returns_to_go`); NaN in the graph"""
    calibration_error_induced: float
    """mean |Q - G| / mean |G| on the same pairs"""
    calibration_pairs_induced: int
    """(Q, G) pairs the induced calibration rests on"""
    success_rate_policy_sampled: float
    """the shielded extracted policy executed by sampling inside mu's support (the
    policy_executor node's `greedy: false`) instead of taking its most likely action; a greedy
    policy can loop between two states where a sampled one leaves; NaN in the graph, whose
    executor runs one of the two"""
    return_policy_sampled: float
    """mean undiscounted return of the sampled policy, as return_policy; NaN in the graph"""
    env_steps: int
    """transitions of mu trained on (the budget, schedule.steps)"""
    updates: int
    """critic updates made"""
    wall_time_s: float
    """seconds the run took, summed over resumes"""
    wall_time_eval_s: float
    """seconds of wall_time_s spent in held-out evaluation in this process (ssq-train's
    periodic and final evaluations, every run's baselines): training alone took wall_time_s
    minus this"""
    episodes_train: int
    """training episodes completed (mu's and the induced policy's)"""
    eval_episodes: int
    """held-out episodes of the final evaluation (of each of the policy and mu)"""
    min_margin_train: float
    """smallest referee margin seen while training [m or rad]"""
    min_margin_eval: float
    """smallest referee margin seen in the evaluations [m or rad]"""
    behavior_fallbacks_train: int
    """training steps where mu's support was empty and mu held the arm"""
    episodes_induced_train: int
    """of episodes_train, those the critic's induced policy collected
    (schedule.induced_collection; 0 in the graph)"""
    executor_statuses: dict
    """how often each SafetyStatus was the executor's reaction in the final evaluation"""
    policy_version: int
    """extractions made (the exported policy's version)"""
    final_extract_steps: int
    """policy gradient steps of the final extraction (schedule, resolved)"""
    policy_fit_kl: float
    """final extraction: mean KL(pi_Q, pi_theta) on 4096 replayed states"""
    policy_fit_agreement: float
    """final extraction: share of those states where pi_Q and pi_theta rank the same action
    first (continuous: as distributions over mu's K samples)"""
    action_kind: str
    """discrete or continuous"""
    seed: int
    """schedule.seed"""
    transitions_ignored: int
    """transitions that arrived after the budget or in the wrong phase (the graph; 0 in
    ssq-train)"""
    transitions_after_budget: int
    """of those, mu's training transitions that arrived once the budget was reached (the
    graph: mu runs ahead of the learner by up to max_lead; 0 in ssq-train)"""
    safe_set_unsafe_states_train: int | None
    """states outside the configured safe set S (margins included) while training, by the
    monitor (the graph; None in ssq-train, which has only the referee)"""
    safe_set_unsafe_states_eval: int | None
    """the same in the evaluation"""
    runner: str
    """'ssq-train' or 'train_sim graph'"""
    code_commit: str
    """git commit of the code (git rev-parse HEAD), 'unknown' outside a checkout"""
    code_dirty: bool | None
    """tracked files differed from code_commit (None: unknown)"""
    config_sha256: str
    """sha256 of the resolved config's canonical JSON (config.yaml holds that config)"""


@dataclass
class StepEvents:
    """What the driver has to do after a transition."""

    policy: bytes | None = None
    """a periodic extraction exported this policy"""
    evaluate: bool = False
    """a periodic evaluation is due (ssq-train runs it; the graph has none)"""
    checkpoint: bool = False
    """a checkpoint was written"""
    budget_reached: bool = False
    """schedule.steps transitions are in: the final extraction is next"""


class Run:
    """One run in one folder. `open()` starts or resumes it; feed it with `add_transition`."""

    def __init__(self, config: TrainConfig, spaces: TaskSpaces, out: str | Path, *,
                 runner: str, checkpoint_name: str, checkpoint_at_episode_end: bool,
                 say: Callable[[str], None] = print, tensorboard: bool = True):
        self.config = resolve_budgets(with_overrides(config))
        self.schedule = self.config.schedule
        self.out = Path(out)
        self.runner = runner
        self.checkpoint_path = self.out / 'checkpoints' / checkpoint_name
        self.checkpoint_at_episode_end = checkpoint_at_episode_end
        self.say = say
        self.tensorboard = tensorboard
        torch.set_num_threads(self.schedule.torch_threads)
        self.learner = OnlineLearner(spaces, self.config.learner, self.schedule.seed)
        self.counters = RunCounters()
        self.provenance = provenance(self.config)
        self.writer = None
        self._losses: list[dict] = []
        self._checkpoint_due = False
        self._started = time.monotonic()
        self._wall_before = 0.0

    # ------------------------------------------------------------------ folder, checkpoints
    @property
    def steps(self) -> int:
        return self.learner.transitions

    @property
    def budget_reached(self) -> bool:
        return self.steps >= self.schedule.steps

    def finished_metrics(self) -> dict | None:
        """metrics.json of a run that already finished in this folder, else None."""
        path = self.out / 'metrics.json'
        return json.loads(path.read_text()) if path.exists() else None

    def stale_reason(self, metrics: dict) -> str | None:
        """Why a finished run's metrics may not be what this code would measure (another or
        an unknown code commit, or uncommitted changes on either side), else None. The
        config is the same: `check_folder` refuses a folder of another config."""
        mine = provenance(self.config)
        theirs = metrics.get('code_commit', 'unknown')
        if theirs == 'unknown' or mine['code_commit'] == 'unknown':
            return 'made by an unknown version of the code'
        if theirs != mine['code_commit']:
            return f'made by code {theirs[:12]}, this is {mine["code_commit"][:12]}'
        if metrics.get('code_dirty') or mine['code_dirty']:
            return f'made or read with uncommitted changes to {theirs[:12]}'
        return None

    def check_folder(self) -> None:
        """Create the folder with config.yaml, or refuse one started with another config."""
        self.out.mkdir(parents=True, exist_ok=True)
        config_file = self.out / 'config.yaml'
        mine = to_dict(self.config)
        if config_file.exists():
            try:
                theirs = resolve_budgets(read_run_config(self.out))
            except ConfigError:
                theirs = None  # not even a config of this version
            if theirs != self.config:
                raise ConfigError(f'{config_file}: this run folder was started with another '
                                  'config; use a new run folder or the same config and '
                                  'overrides')
        else:
            atomic_write(config_file, lambda f: f.write(yaml.safe_dump(mine).encode()))

    def open(self, driver_state: Callable[[dict], None] | None = None) -> bool:
        """Check the folder, resume from its checkpoint if there is one (the driver's own saved
        state goes to `driver_state`), open TensorBoard; True if resumed."""
        self.check_folder()
        resumed = self.checkpoint_path.exists()
        if resumed:
            state = load_checkpoint(self.checkpoint_path)
            if state.get('kind') != _KIND or not is_checkpoint_of(state, self.config):
                raise ConfigError(f'{self.checkpoint_path}: not a checkpoint of this run\'s '
                                  'config (or written by an older version of ssq_ros)')
            self.learner.load_state_dict(state['learner'], str(self.checkpoint_path))
            self.counters = RunCounters(**json.loads(state['counters_json']))
            self._wall_before = self.counters.wall_time_s
            if driver_state is not None:
                driver_state(state['driver'])
        # Records logged after the checkpoint (or before the first one) belong to steps that
        # will be run again.
        log = self.out / LOG
        if log.exists() and log.stat().st_size > self.counters.log_bytes:
            with open(log, 'r+b') as file:
                file.truncate(self.counters.log_bytes)
        if self.tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(self.out / 'tb'), purge_step=self.steps)
        return resumed

    def save_checkpoint(self, driver: dict | None = None) -> Path:
        """Learner, counters and the driver's own state, written atomically."""
        self.counters.wall_time_s = self.wall_time()
        log = self.out / LOG
        self.counters.log_bytes = log.stat().st_size if log.exists() else 0
        state = {'kind': _KIND, 'config': to_dict(self.config),
                 'learner': self.learner.state_dict(),
                 'counters_json': json.dumps(asdict(self.counters)), 'driver': driver or {}}
        self._checkpoint_due = False
        return atomic_write(self.checkpoint_path, lambda f: torch.save(state, f))

    @contextlib.contextmanager
    def evaluation_time(self):
        """Counts the time inside as held-out evaluation (wall_time_eval_s), so a run's
        training time is known apart from its evaluations'."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.counters.wall_time_eval_s += time.monotonic() - started

    def wall_time(self) -> float:
        return self._wall_before + time.monotonic() - self._started

    def log(self, record: dict) -> None:
        with open(self.out / LOG, 'a') as file:
            file.write(json.dumps(record) + '\n')

    def scalar(self, tag: str, value: float) -> None:
        if self.writer is not None and value is not None and math.isfinite(value):
            self.writer.add_scalar(tag, value, self.steps)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    # ------------------------------------------------------------------ the schedule
    def _due(self, every: int) -> bool:
        return self.steps % every == 0

    @property
    def novelty_end(self) -> int | None:
        """The step after which no novelty bonus is given and the given one is taken out of
        the replay (schedule.novelty_until), or None when it is kept to the end."""
        if self.schedule.novelty_bonus == 0 or self.schedule.novelty_until == 1.0:
            return None
        return round(self.schedule.novelty_until * self.schedule.steps)

    def add_transition(self, obs, action, reward, next_obs, done, next_support,
                       driver: Callable[[], dict] | None = None,
                       bonus: float = 0.0) -> StepEvents:
        """Store one transition of mu (learned with reward + `bonus`, the driver's novelty
        bonus), train with the schedule's update credit, and run what falls due at this
        step. `driver()` gives the driver's state if a checkpoint is written here (only when
        not `checkpoint_at_episode_end`)."""
        if self.budget_reached:
            raise RuntimeError('add_transition: the budget is spent')
        schedule = self.schedule
        self.learner.add_transition(obs, action, reward, next_obs, float(done), next_support,
                                    bonus)
        if self.steps == self.novelty_end:
            removed = self.learner.remove_bonus()
            self.log({'type': 'novelty_end', 'step': self.steps, 'bonus_removed': removed})
            self.say(f'novelty bonus ends at step {self.steps}: {removed:.1f} taken out of the '
                     "replay's rewards")
        events = StepEvents()
        if self.steps >= schedule.learning_starts:
            self.counters.update_credit += schedule.updates_per_step
            count = int(self.counters.update_credit)
            if count:
                self.counters.update_credit -= count
                self._losses.append(self.learner.train(count))
        if self._due(REPORT_EVERY) and self._losses:
            mean = {k: float(np.mean([x[k] for x in self._losses])) for k in self._losses[0]}
            self._losses.clear()
            self.log({'type': 'train', 'step': self.steps, 'updates': self.learner.updates,
                      **mean})
            for key, value in mean.items():
                self.scalar(f'losses/{key}', value)
        # The final extraction and evaluation follow the last step; no periodic ones there.
        learning = schedule.learning_starts <= self.steps < schedule.steps
        if learning and self._due(schedule.extract_every):
            events.policy = self.extract(schedule.extract_steps)
        if learning and self._due(schedule.eval_every):
            events.evaluate = True
        if self._due(schedule.checkpoint_every):
            self._checkpoint_due = True
        events.budget_reached = self.budget_reached
        if not self.checkpoint_at_episode_end and (self._checkpoint_due or
                                                   events.budget_reached):
            self.save_checkpoint(driver() if driver is not None else None)
            events.checkpoint = True
        return events

    def end_episode(self, episode_return: float, length: int, success: bool,
                    min_margin: float, driver: Callable[[], dict] | None = None,
                    collector: str = 'mu') -> bool:
        """Log a finished training episode (`min_margin`: the smallest referee margin the
        driver knows of for it; `collector`: 'mu' or 'induced', who acted); with
        `checkpoint_at_episode_end`, write the checkpoint that fell due during it (or at the
        end of the budget). True if written."""
        counters = self.counters
        counters.episodes_train += 1
        self.log({'type': 'episode', 'step': self.steps, 'episode': counters.episodes_train,
                  'return': episode_return, 'length': length, 'success': success,
                  'min_margin': min_margin, 'unsafe_total': counters.unsafe_train,
                  'collector': collector})
        self.scalar('charts/episodic_return', episode_return)
        self.scalar('charts/episodic_success', float(success))
        self.scalar('charts/min_safety_margin', min_margin)
        self.scalar('charts/unsafe_states_train', counters.unsafe_train)
        if self.checkpoint_at_episode_end and (self._checkpoint_due or self.budget_reached):
            self.save_checkpoint(driver() if driver is not None else None)
            return True
        return False

    # ------------------------------------------------------------------ extraction
    def extract(self, steps: int, final: bool = False) -> bytes:
        """Extract the policy for `steps` gradient steps, export it to policy.pt, log the fit;
        the final one prints a progress line every PROGRESS_PERIOD seconds. The exported
        bytes."""
        progress = _ProgressLine(self.say, 'final extraction', 'steps') if final else None
        stats = self.learner.extract(steps, progress)
        data = export_policy(self.learner, to_dict(self.config))
        atomic_write(self.out / 'policy.pt', lambda f: f.write(data))
        if self.keeps_exports:
            kept = self.out / KEPT_POLICIES / f'policy-{self.steps:07d}.pt'
            kept.parent.mkdir(exist_ok=True)
            atomic_write(kept, lambda f: f.write(data))
        self.scalar('losses/policy_loss', stats['loss'])
        self.scalar('losses/policy_fit_kl', stats['fit_kl'])
        self.scalar('charts/policy_fit_agreement', stats['fit_agreement'])
        self.log({'type': 'extract', 'step': self.steps,
                  'policy_version': self.learner.policy_version, 'steps': steps, **stats})
        self.counters.last_fit = {key: stats[key] for key in ('fit_kl', 'fit_agreement')}
        if final and self.learner.deploys_induced:
            self.say(f'final policy v{self.learner.policy_version}: the exact induced policy '
                     '(discrete_policy: induced), nothing fitted')
        elif final:
            self.say(f'final extraction: {steps} steps in {progress.elapsed():.0f} s, policy '
                     f'v{self.learner.policy_version}, fit agreement '
                     f'{stats["fit_agreement"]:.0%}, KL {stats["fit_kl"]:.3g}')
        return data

    @property
    def keeps_exports(self) -> bool:
        return self.schedule.keep_policies or self.schedule.average_exports_from < 1.0

    def final_extract(self) -> bytes:
        """The final extraction's export; with schedule.average_exports_from < 1, policy.pt
        becomes the normalised geometric mean of the exports made from that share of the steps
        on, this one included (kept on disk, so a resumed run averages the same ones)."""
        data = self.extract(self.schedule.final_extract_steps, final=True)
        share = self.schedule.average_exports_from
        if share >= 1.0:
            return data
        chosen = exports_from(self.out, share, self.schedule.steps)
        if len(chosen) < 2:
            return data
        data = average_policies([load_exported_policy(path) for _, path in chosen])
        atomic_write(self.out / 'policy.pt', lambda f: f.write(data))
        self.log({'type': 'average', 'step': self.steps,
                  'exports': [path.name for _, path in chosen]})
        self.say(f'deployed policy: the geometric mean of the {len(chosen)} exports of steps '
                 f'{chosen[0][0]}-{chosen[-1][0]} (schedule.average_exports_from {share:g})')
        return data

    # ------------------------------------------------------------------ evaluation, metrics
    def count_eval_safety(self, stats: EvalStats) -> None:
        """Add an in-process evaluation's referee counts to the run's (ssq-train)."""
        self.counters.unsafe_eval += stats.unsafe
        self.counters.min_margin_eval = min(self.counters.min_margin_eval, stats.min_margin)

    def record_eval(self, policy: EvalStats, behavior: EvalStats | None = None,
                    final: bool = False, induced: EvalStats | None = None,
                    policy_sampled: EvalStats | None = None) -> dict:
        """Log an evaluation of the shielded policy (the final one with mu's, the induced
        policy's and calibration)."""
        record = {'type': 'eval', 'step': self.steps,
                  'policy_version': self.learner.policy_version, **policy.summary()}
        if behavior is not None:
            record['behavior'] = behavior.summary()
            record['value_calibration_error'] = behavior.calibration_error
            record['value_calibration_error_policy'] = policy.calibration_error
        if induced is not None:
            record['induced'] = induced.summary()
        if policy_sampled is not None and policy_sampled.episodes:
            record['policy_sampled'] = policy_sampled.summary()
        record['final'] = final
        self.log(record)
        self.counters.evaluations += 1
        self.counters.last_eval = record
        self.scalar('charts/eval_success_rate', policy.success_rate)
        self.scalar('charts/eval_return', policy.mean_return)
        self.scalar('charts/eval_unsafe', policy.unsafe)
        return record

    def evaluate_baselines(self) -> tuple[EvalStats, EvalStats]:
        """Greedy mu and the scripted oracle on the final evaluation's held-out episodes, run
        here in MuJoCo for ssq-train and the graph alike (neither depends on training). Both
        choose among mu's discrete primitives, so they run on the config's discrete problem
        whatever its action_kind. Their referee counts join the evaluation's."""
        # MuJoCo only when a run finishes: the q_learner node imports this module robot-side.
        from ssq_ros.training.problem import build_problem
        problem = build_problem(dataclasses.replace(self.config, action_kind='discrete'))
        episodes, gamma = self.schedule.final_eval_episodes, self.config.learner.critic.gamma
        results = []
        for name, actor in (('greedy mu', greedy_behavior_actor), ('oracle', oracle_actor)):
            started = time.monotonic()
            stats = evaluate_heldout(problem, actor(problem), episodes, gamma)
            self.count_eval_safety(stats)
            self.log({'type': 'baseline', 'executor': name, 'step': self.steps,
                      **stats.summary()})
            self.say(f'baseline ({name}): {stats.successes}/{stats.episodes} held-out goals, '
                     f'{time.monotonic() - started:.0f} s')
            results.append(stats)
        return results[0], results[1]

    def finish(self, policy: EvalStats, behavior: EvalStats,
               executor_statuses: dict[str, int] | None = None,
               induced: EvalStats | None = None,
               policy_sampled: EvalStats | None = None) -> RunMetrics:
        """The final evaluation's record, calibration.npz, metrics.json, plots. `induced`,
        `policy_sampled`: the induced policy's and the sampled executor's evaluations (None
        where the runner has none: their keys are NaN)."""
        induced = EvalStats() if induced is None else induced
        policy_sampled = EvalStats() if policy_sampled is None else policy_sampled
        with self.evaluation_time():
            greedy, oracle = self.evaluate_baselines()
        np.savez(self.out / 'calibration.npz', q_behavior=np.array(behavior.q),
                 g_behavior=np.array(behavior.g), q_policy=np.array(policy.q),
                 g_policy=np.array(policy.g), q_induced=np.array(induced.q),
                 g_induced=np.array(induced.g))
        self.record_eval(policy, behavior, final=True, induced=induced,
                         policy_sampled=policy_sampled)
        counters = self.counters
        statuses = policy.statuses.as_dict() if executor_statuses is None else \
            dict(executor_statuses)
        metrics = RunMetrics(
            unsafe_states_train=counters.unsafe_train,
            unsafe_states_eval=counters.unsafe_eval,
            success_rate_behavior=behavior.success_rate,
            success_rate_policy=policy.success_rate,
            success_rate_behavior_greedy=greedy.success_rate,
            success_rate_oracle=oracle.success_rate,
            return_behavior=behavior.mean_return,
            return_policy=policy.mean_return,
            value_calibration_error=behavior.calibration_error,
            value_calibration_error_policy=policy.calibration_error,
            calibration_pairs=len(behavior.q),
            calibration_pairs_policy=len(policy.q),
            success_rate_induced=induced.success_rate,
            return_induced=induced.mean_return,
            calibration_bias_induced=induced.calibration_bias,
            calibration_error_induced=induced.calibration_error,
            calibration_pairs_induced=len(induced.q),
            success_rate_policy_sampled=policy_sampled.success_rate,
            return_policy_sampled=policy_sampled.mean_return,
            env_steps=self.steps,
            updates=self.learner.updates,
            wall_time_s=self.wall_time(),
            wall_time_eval_s=counters.wall_time_eval_s,
            episodes_train=counters.episodes_train,
            eval_episodes=policy.episodes,
            min_margin_train=counters.min_margin_train,
            min_margin_eval=counters.min_margin_eval,
            behavior_fallbacks_train=counters.behavior_fallbacks_train,
            episodes_induced_train=counters.episodes_induced_train,
            executor_statuses=statuses,
            policy_version=self.learner.policy_version,
            final_extract_steps=self.schedule.final_extract_steps,
            policy_fit_kl=counters.last_fit.get('fit_kl', math.nan),
            policy_fit_agreement=counters.last_fit.get('fit_agreement', math.nan),
            action_kind=self.config.action_kind,
            seed=self.schedule.seed,
            transitions_ignored=counters.transitions_ignored,
            transitions_after_budget=counters.transitions_after_budget,
            safe_set_unsafe_states_train=counters.safe_set_unsafe_train,
            safe_set_unsafe_states_eval=counters.safe_set_unsafe_eval,
            runner=self.runner,
            **self.provenance)
        data = asdict(metrics)
        atomic_write(self.out / 'metrics.json',
                     lambda f: f.write(json.dumps(data, indent=2).encode()))
        self.close()
        from ssq_ros.training.plots import write_plots
        write_plots(self.out)
        return metrics


def metrics_keys() -> list[str]:
    """The keys of metrics.json, in order."""
    return [f.name for f in dataclasses.fields(RunMetrics)]


def is_checkpoint_of(state: dict, config: TrainConfig) -> bool:
    """Whether a checkpoint's stored config is `config`. The stored one is read as a config
    file is, so a field added since (its default keeps the recorded behaviour) takes that
    default, as it does in the run folder's config.yaml (`check_folder`)."""
    if not isinstance(state.get('config'), dict):
        return False
    try:
        stored = parse(TrainConfig, state['config'], 'checkpoint config')
    except ConfigError:
        return False
    return to_dict(stored) == to_dict(config)


def kept_policies(folder: str | Path) -> list[tuple[int, Path]]:
    """A run's kept exports as (step made at, path), by step."""
    folder = Path(folder)
    found = sorted((int(m.group(1)), path) for path in (folder / KEPT_POLICIES).glob('*.pt')
                   if (m := _KEPT_NAME.fullmatch(path.name)))
    if not found:
        raise FileNotFoundError(f'{folder / KEPT_POLICIES}: no kept policies (run with '
                                'schedule.keep_policies: true)')
    return found


def exports_from(folder: str | Path, from_share: float, steps: int) -> list[tuple[int, Path]]:
    """The kept exports made at or after from_share of `steps` (the run's schedule.steps)."""
    if not 0.0 <= from_share <= 1.0:
        raise ValueError(f'from_share must be in [0, 1], got {from_share}')
    chosen = [(step, path) for step, path in kept_policies(folder)
              if step >= from_share * steps]
    if not chosen:
        raise FileNotFoundError(f'{folder}: no kept policy made at or after step '
                                f'{from_share * steps:.0f}')
    return chosen


def read_run_config(folder: str | Path) -> TrainConfig:
    """The resolved config a run folder was made with (its config.yaml)."""
    path = Path(folder) / 'config.yaml'
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f'{path}: not readable ({exc.strerror}); is {folder} a run '
                          'folder?') from exc
    return parse(TrainConfig, yaml.safe_load(text), str(path))


class _ProgressLine:
    """`progress(done, total)` callback printing '<what>: done/total <unit>, rate, ETA' at the
    start and then every PROGRESS_PERIOD seconds."""

    def __init__(self, say: Callable[[str], None], what: str, unit: str):
        self.say, self.what, self.unit = say, what, unit
        self.started = time.monotonic()
        self.last = -math.inf

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_PERIOD:
            return
        if self.last == -math.inf:
            self.last = now
            self.say(f'{self.what}: {total} {self.unit} ...')
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        self.say(f'{self.what}: {done}/{total} {self.unit}, {rate:.0f} {self.unit}/s, '
                 f'ETA {(total - done) / max(rate, 1e-9):.0f} s')

