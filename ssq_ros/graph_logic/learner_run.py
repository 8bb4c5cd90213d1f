"""The q_learner node's logic without ROS: schedule, log, checkpoints, evaluation, metrics.

Transitions arrive one at a time. In the train phase each one is stored and trained on with the
schedule of `ssq-train` (learning_starts, updates_per_step, extract_every, checkpoint_every);
when `schedule.steps` transitions are in, the run moves to extract, then to the held-out
evaluation of the policy (the executor acts) and of mu (value calibration), and finally writes
metrics.json with the keys `ssq-train` writes, log.jsonl records `ssq-report` reads, and plots.
Methods return `Events` saying what the node has to publish.

Run folder (the same names as ssq-train's where they mean the same):
    config.yaml                   the validated config (a resume must match it)
    log.jsonl                     episode / train / eval records
    checkpoints/graph_learner.pt  learner + run counters, atomic, every checkpoint_every
    policy.pt                     the latest exported policy
    metrics.json, plots/*.png     at the end
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from ssq_ros.config import ConfigError, to_dict
from ssq_ros.deploy.export import export_policy
from ssq_ros.graph_logic.phases import PhaseAnnouncement, RunPhase
from ssq_ros.graph_logic.transitions import EpisodeSummary, Transition
from ssq_ros.learning.critic import load_checkpoint
from ssq_ros.learning.evaluation import discounted_returns_to_go, value_calibration_error
from ssq_ros.learning.storage import atomic_write
from ssq_ros.training.config import TrainConfig
from ssq_ros.training.learner import OnlineLearner, TaskSpaces

CHECKPOINT = Path('checkpoints') / 'graph_learner.pt'
LOG = 'log.jsonl'
_KIND = 'ssq_ros.GraphLearnerRun/1'
# A training record is logged every this many transitions (as ssq-train does).
REPORT_EVERY = 250


@dataclass
class Events:
    """What the node must do after a call: publish a policy, announce a phase, stop."""

    policy: bytes | None = None
    phase: PhaseAnnouncement | None = None
    checkpoint: bool = False
    finished: bool = False


@dataclass
class SafetyTotals:
    """The independent monitor's counts, as last reported (NaN margin: none reported yet)."""

    unsafe_train: int = 0
    unsafe_eval: int = 0
    min_margin_train: float = math.nan
    min_margin_eval: float = math.nan
    safe_set_unsafe_train: int = 0
    """States outside the configured safe set S (margins included) while training."""
    safe_set_unsafe_eval: int = 0


@dataclass
class RunCounters:
    episodes_train: int = 0
    update_credit: float = 0.0
    ignored: int = 0
    wall_time_s: float = 0.0
    log_bytes: int = 0


@dataclass
class _EvalEpisodes:
    summaries: list[EpisodeSummary] = field(default_factory=list)
    transitions: dict[int, list[Transition]] = field(default_factory=dict)

    def stats(self) -> dict:
        returns = [s.episode_return for s in self.summaries]
        return {'episodes': len(self.summaries),
                'success_rate': float(np.mean([s.success for s in self.summaries]))
                if self.summaries else math.nan,
                'return': float(np.mean(returns)) if returns else math.nan}


class LearnerRun:
    """One train_sim run in one folder; `resume()` continues from its checkpoint."""

    def __init__(self, config: TrainConfig, spaces: TaskSpaces, run_dir: str | Path):
        self.config = config
        self.schedule = config.schedule
        self.out = Path(run_dir)
        torch.set_num_threads(self.schedule.torch_threads)
        self.learner = OnlineLearner(spaces, config.learner, self.schedule.seed)
        self.counters = RunCounters()
        self.safety = SafetyTotals()
        self.executor_statuses: dict[str, int] = {}
        self.behavior_fallbacks = 0
        self.phase = RunPhase.TRAIN
        self._losses: list[dict] = []
        self._started = time.monotonic()
        self._wall_before = 0.0
        self._eval = {RunPhase.EVAL_POLICY: _EvalEpisodes(),
                      RunPhase.EVAL_BEHAVIOR: _EvalEpisodes()}
        self.metrics: dict | None = None
        self.last_fit: dict[str, float] = {}

    # ------------------------------------------------------------------ persistence
    def prepare_folder(self) -> bool:
        """Create or check the run folder, resume from its checkpoint; True if resumed."""
        self.out.mkdir(parents=True, exist_ok=True)
        config_file = self.out / 'config.yaml'
        mine = to_dict(self.config)
        if config_file.exists():
            if yaml.safe_load(config_file.read_text()) != mine:
                raise ConfigError(f'{config_file}: this run folder was started with another '
                                  'config; use a new run_dir or the same config and steps')
        else:
            atomic_write(config_file, lambda f: f.write(yaml.safe_dump(mine).encode()))
        path = self.out / CHECKPOINT
        if not path.exists():
            return False
        state = load_checkpoint(path)
        if state.get('kind') != _KIND:
            raise ConfigError(f'{path}: not a train_sim learner checkpoint')
        self.learner.load_state_dict(state['learner'], str(path))
        self.counters = RunCounters(**state['counters'])
        self._wall_before = self.counters.wall_time_s
        log = self.out / LOG
        # Records logged after the checkpoint describe transitions that are lost with the kill.
        if log.exists() and log.stat().st_size > self.counters.log_bytes:
            with open(log, 'r+b') as file:
                file.truncate(self.counters.log_bytes)
        return True

    def save_checkpoint(self) -> Path:
        self.counters.wall_time_s = self.wall_time()
        log = self.out / LOG
        self.counters.log_bytes = log.stat().st_size if log.exists() else 0
        state = {'kind': _KIND, 'learner': self.learner.state_dict(),
                 'counters': dict(vars(self.counters))}
        return atomic_write(self.out / CHECKPOINT, lambda f: torch.save(state, f))

    def wall_time(self) -> float:
        return self._wall_before + time.monotonic() - self._started

    def log(self, record: dict) -> None:
        with open(self.out / LOG, 'a') as file:
            file.write(json.dumps(record) + '\n')

    # ------------------------------------------------------------------ training
    @property
    def steps(self) -> int:
        return self.learner.transitions

    def _due(self, every: int) -> bool:
        return self.steps % every == 0

    def on_transition(self, t: Transition) -> Events:
        """Store/train on a train-phase transition, or keep an evaluation one."""
        if t.phase in self._eval and t.phase is self.phase:
            self._eval[t.phase].transitions.setdefault(t.episode, []).append(t)
            return Events()
        if t.phase is not RunPhase.TRAIN or self.phase is not RunPhase.TRAIN:
            self.counters.ignored += 1  # collected after the budget was reached
            return Events()
        self.learner.add_transition(t.obs, t.action, t.reward, t.next_obs, float(t.done),
                                    t.next_support)
        events = Events()
        if self.steps >= self.schedule.learning_starts:
            self.counters.update_credit += self.schedule.updates_per_step
            count = int(self.counters.update_credit)
            if count:
                self.counters.update_credit -= count
                self._losses.append(self.learner.train(count))
        if self._due(REPORT_EVERY) and self._losses:
            mean = {k: float(np.mean([x[k] for x in self._losses])) for k in self._losses[0]}
            self._losses.clear()
            self.log({'type': 'train', 'step': self.steps, 'updates': self.learner.updates,
                      **mean})
        learning = self.steps >= self.schedule.learning_starts
        if learning and self._due(self.schedule.extract_every):
            events.policy = self._extract(self.schedule.extract_steps)
        if self.steps >= self.schedule.steps:
            self.phase = RunPhase.EXTRACT
            events.phase = PhaseAnnouncement(RunPhase.EXTRACT)
        if self._due(self.schedule.checkpoint_every) or self.phase is RunPhase.EXTRACT:
            self.save_checkpoint()
            events.checkpoint = True
        return events

    def _extract(self, steps: int) -> bytes:
        stats = self.learner.extract(steps)
        self.log({'type': 'extract', 'step': self.steps,
                  'policy_version': self.learner.policy_version, 'steps': steps, **stats})
        self.last_fit = {key: stats[key] for key in ('fit_kl', 'fit_agreement')}
        data = export_policy(self.learner, to_dict(self.config))
        atomic_write(self.out / 'policy.pt', lambda f: f.write(data))
        return data

    def final_extract(self) -> Events:
        """The final extraction; then the executor evaluates this policy version."""
        if self.phase is not RunPhase.EXTRACT:
            raise RuntimeError(f'final_extract in phase {self.phase.value}')
        data = self._extract(self.schedule.final_extract_steps)
        self.phase = RunPhase.EVAL_POLICY
        return Events(policy=data, phase=PhaseAnnouncement(RunPhase.EVAL_POLICY,
                                                           self.learner.policy_version))

    # ------------------------------------------------------------------ episodes, evaluation
    def on_episode(self, summary: EpisodeSummary) -> Events:
        if summary.phase is RunPhase.TRAIN and self.phase is RunPhase.TRAIN:
            self.counters.episodes_train += 1
            self.log({'type': 'episode', 'step': self.steps,
                      'episode': self.counters.episodes_train,
                      'return': summary.episode_return, 'length': summary.length,
                      'success': summary.success, 'min_margin': self.safety.min_margin_train,
                      'unsafe_total': self.safety.unsafe_train})
            return Events()
        if summary.phase is not self.phase or summary.phase not in self._eval:
            self.counters.ignored += 1
            return Events()
        episodes = self._eval[self.phase]
        if any(s.episode == summary.episode for s in episodes.summaries):
            return Events()  # delivered twice
        episodes.summaries.append(summary)
        if len(episodes.summaries) < self.schedule.final_eval_episodes:
            return Events()
        if self.phase is RunPhase.EVAL_POLICY:
            self.phase = RunPhase.EVAL_BEHAVIOR
            return Events(phase=PhaseAnnouncement(RunPhase.EVAL_BEHAVIOR))
        self.finish()
        self.phase = RunPhase.DONE
        return Events(phase=PhaseAnnouncement(RunPhase.DONE), finished=True)

    def calibration(self, phase: RunPhase) -> tuple[float, np.ndarray, np.ndarray]:
        """Relative |Q - G| on the held-out episodes of `phase` (eval_policy: the executor's
        actions; eval_behavior: mu's) that reached the goal (their returns are complete; a
        time-limited episode's are not) and whose transitions all arrived; with the (Q, G)
        pairs it rests on."""
        episodes = self._eval[phase]
        gamma = self.config.learner.critic.gamma
        q_all, g_all = [], []
        for summary in episodes.summaries:
            steps = sorted(episodes.transitions.get(summary.episode, []), key=lambda t: t.seq)
            if not summary.success or len(steps) != summary.length:
                continue
            obs = np.array([t.obs for t in steps])
            actions = np.array([t.action for t in steps])
            q_all.append(self.learner.q_values(obs, actions))
            g_all.append(discounted_returns_to_go([t.reward for t in steps], gamma))
        if not q_all:
            return math.nan, np.zeros(0), np.zeros(0)
        q, g = np.concatenate(q_all), np.concatenate(g_all)
        return value_calibration_error(q, g), q, g

    def finish(self) -> dict:
        """metrics.json (ssq-train's keys), the final eval record, plots."""
        policy = self._eval[RunPhase.EVAL_POLICY].stats()
        behavior = self._eval[RunPhase.EVAL_BEHAVIOR].stats()
        calibration, q_behavior, g_behavior = self.calibration(RunPhase.EVAL_BEHAVIOR)
        calibration_policy, q_policy, g_policy = self.calibration(RunPhase.EVAL_POLICY)
        # The same file ssq-train writes, so the plots include the calibration scatter.
        np.savez(self.out / 'calibration.npz', q_behavior=q_behavior, g_behavior=g_behavior,
                 q_policy=q_policy, g_policy=g_policy)
        safety = self.safety
        record = {'type': 'eval', 'step': self.steps,
                  'policy_version': self.learner.policy_version, **policy,
                  'unsafe': safety.unsafe_eval, 'min_margin': safety.min_margin_eval,
                  'statuses': dict(self.executor_statuses), 'behavior': behavior,
                  'value_calibration_error': calibration,
                  'value_calibration_error_policy': calibration_policy, 'final': True}
        self.log(record)
        self.metrics = {
            'unsafe_states_train': safety.unsafe_train,
            'unsafe_states_eval': safety.unsafe_eval,
            'success_rate_behavior': behavior['success_rate'],
            'success_rate_policy': policy['success_rate'],
            'return_behavior': behavior['return'],
            'return_policy': policy['return'],
            'value_calibration_error': calibration,
            'value_calibration_error_policy': calibration_policy,
            'env_steps': self.steps,
            'updates': self.learner.updates,
            'wall_time_s': self.wall_time(),
            'episodes_train': self.counters.episodes_train,
            'eval_episodes': policy['episodes'],
            'min_margin_train': safety.min_margin_train,
            'min_margin_eval': safety.min_margin_eval,
            'behavior_fallbacks_train': self.behavior_fallbacks,
            'executor_statuses': dict(self.executor_statuses),
            'policy_version': self.learner.policy_version,
            'policy_fit_kl': self.last_fit.get('fit_kl', math.nan),
            'policy_fit_agreement': self.last_fit.get('fit_agreement', math.nan),
            'action_kind': self.config.action_kind,
            'seed': self.schedule.seed,
            'transitions_ignored': self.counters.ignored,
            'calibration_pairs': int(q_behavior.size),
            'calibration_pairs_policy': int(q_policy.size),
            'safe_set_unsafe_states_train': safety.safe_set_unsafe_train,
            'safe_set_unsafe_states_eval': safety.safe_set_unsafe_eval,
            'runner': 'train_sim graph',
        }
        metrics = self.metrics
        atomic_write(self.out / 'metrics.json',
                     lambda f: f.write(json.dumps(metrics, indent=2).encode()))
        from ssq_ros.training.plots import write_plots
        write_plots(self.out)
        return metrics

    def progress_line(self, rate: float) -> str:
        """steps, rate, ETA, unsafe count: the periodic progress line."""
        if self.phase in self._eval:
            done = len(self._eval[self.phase].summaries)
            return (f'[{self.phase.value}] {done}/{self.schedule.final_eval_episodes} held-out '
                    f'episodes, unsafe states '
                    f'{self.safety.unsafe_train + self.safety.unsafe_eval}')
        left = max(self.schedule.steps - self.steps, 0)
        eta = f'{left / rate:.0f} s' if rate > 0 else '-'
        return (f'[{self.phase.value}] {self.steps}/{self.schedule.steps} steps, '
                f'{rate:.1f} steps/s, ETA {eta}, updates {self.learner.updates}, '
                f'policy v{self.learner.policy_version}, unsafe states '
                f'{self.safety.unsafe_train + self.safety.unsafe_eval}')
