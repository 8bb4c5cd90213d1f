"""The q_learner node's logic without ROS: the run engine fed from the graph's topics.

`ssq_ros.training.run.Run` does what ssq-train does (schedule, log, checkpoints, extraction,
metrics.json, plots); this adapter only turns the graph's messages into its calls and walks the
run through its phases. Transitions arrive one at a time; when `schedule.steps` of the train
phase are in, the run moves to extract, then to the held-out evaluation of the policy (the
executor acts) and of mu, whose episode summaries and transitions fill the same `EvalStats` the
in-process evaluation returns (same success, return and value-calibration rules); the unsafe
counts are the independent monitor's. Methods return `Events` saying what the node publishes.

Its checkpoint is `run_dir/checkpoints/graph_learner.pt`, written every `checkpoint_every`
transitions (at once: the episodes run in other processes) and when the budget is reached.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ssq_ros.config import ConfigError
from ssq_ros.graph_logic.phases import PhaseAnnouncement, RunPhase
from ssq_ros.graph_logic.transitions import EpisodeSummary, Transition
from ssq_ros.training.config import TrainConfig
from ssq_ros.training.evaluate import EvalStats
from ssq_ros.training.learner import TaskSpaces
from ssq_ros.training.run import Run, RunMetrics

CHECKPOINT = Path('checkpoints') / 'graph_learner.pt'
# Transition numbers remembered: the behavior sends again only what it still holds unacknowledged
# (at most 2 * max_lead + 1000), so the newest of these are enough to know a copy.
SEQS_KEPT = 100_000
SEQS_CHECKPOINTED = 20_000
RUNNER = 'train_sim graph'
_EVAL = (RunPhase.EVAL_POLICY, RunPhase.EVAL_BEHAVIOR)
_MONITOR_FIELDS = ('unsafe_train', 'unsafe_eval', 'min_margin_train', 'min_margin_eval',
                   'safe_set_unsafe_train', 'safe_set_unsafe_eval')


@dataclass
class Events:
    """What the node must do after a call: publish a policy, announce a phase, stop."""

    policy: bytes | None = None
    phase: PhaseAnnouncement | None = None
    checkpoint: bool = False
    finished: bool = False
    duplicate: bool = False  # a transition number had before: only acknowledge it again


@dataclass
class _EvalEpisodes:
    summaries: dict[int, EpisodeSummary] = field(default_factory=dict)
    transitions: dict[int, list[Transition]] = field(default_factory=dict)


class LearnerRun:
    """One train_sim run in one folder; `prepare_folder()` starts or resumes it."""

    def __init__(self, config: TrainConfig, spaces: TaskSpaces, run_dir: str | Path,
                 say: Callable[[str], None] = print):
        if config.schedule.induced_collection > 0:
            # In the graph mu's node collects; a config that asks otherwise must not run as if
            # it had been honoured.
            raise ConfigError('schedule.induced_collection: the train_sim graph collects with '
                              'mu only; the induced policy collects in ssq-train (to run '
                              'this config in the graph, set schedule.induced_collection: 0 '
                              'in a config that extends it; a task of config/tasks/ also '
                              "needs mu's goal preference then: docs/tasks.md)")
        if config.schedule.hindsight_goals > 0:
            raise ConfigError('schedule.hindsight_goals: the train_sim graph stores the '
                              "transitions mu's node sends as they are; hindsight goals are an "
                              'ssq-train setting (to run this config in the graph, set '
                              'schedule.hindsight_goals: 0 in a config that extends it)')
        if config.schedule.novelty_bonus > 0:
            raise ConfigError('schedule.novelty_bonus: the train_sim graph learns from the '
                              "task's reward only; the novelty bonus is an ssq-train setting "
                              '(to run this config in the graph, set schedule.novelty_bonus: 0 '
                              'in a config that extends it)')
        self.engine = Run(config, spaces, run_dir, runner=RUNNER,
                          checkpoint_name=CHECKPOINT.name, checkpoint_at_episode_end=False,
                          say=say)
        self.config = self.engine.config
        self.schedule = self.config.schedule
        self.out = self.engine.out
        self.learner = self.engine.learner
        self.executor_statuses: dict[str, int] = {}
        self.phase = RunPhase.TRAIN
        self._eval = {phase: _EvalEpisodes() for phase in _EVAL}
        self.metrics: RunMetrics | None = None
        self._monitor_started: str | None = None
        self._monitor_base: dict[str, float | int | None] = {}
        # The numbers of the transitions had, kept in the checkpoint: a learner restarted from
        # it knows a transition the behavior sends again because the acknowledgement of the
        # killed learner never reached it (trained once, not twice).
        self._seqs: set[int] = set()
        self._seq_order: deque[int] = deque()

    @property
    def counters(self):
        return self.engine.counters

    @property
    def steps(self) -> int:
        return self.engine.steps

    def prepare_folder(self) -> bool:
        """Create or check the run folder, resume from its checkpoint; True if resumed."""
        return self.engine.open(driver_state=self._restore)

    def save_checkpoint(self) -> Path:
        return self.engine.save_checkpoint(self._driver_state())

    def _driver_state(self) -> dict:
        return {'transition_seqs': list(self._seq_order)[-SEQS_CHECKPOINTED:]}

    def _restore(self, state: dict) -> None:
        for seq in state.get('transition_seqs', []):
            self._remember(int(seq))

    def _remember(self, seq: int) -> None:
        self._seqs.add(seq)
        self._seq_order.append(seq)
        if len(self._seq_order) > SEQS_KEPT:
            self._seqs.discard(self._seq_order.popleft())

    # ------------------------------------------------------------------ monitor, diagnostics
    def on_safety(self, values: dict[str, str]) -> None:
        """The monitor's /ssq/safety/status key/values (its totals); ValueError if malformed."""
        counters = self.counters
        started = values.get('monitor_started')
        if started is not None and started != self._monitor_started:
            if self._monitor_started is not None:
                # A new monitor process counts from 0: keep what its predecessors counted.
                self._monitor_base = {name: getattr(counters, name)
                                      for name in _MONITOR_FIELDS}
            self._monitor_started = started
        parsed = {}
        for key, name, kind in (
                ('unsafe_states_train', 'unsafe_train', int),
                ('unsafe_states_eval', 'unsafe_eval', int),
                ('min_margin_train', 'min_margin_train', float),
                ('min_margin_eval', 'min_margin_eval', float),
                ('safe_set_unsafe_states_train', 'safe_set_unsafe_train', int),
                ('safe_set_unsafe_states_eval', 'safe_set_unsafe_eval', int)):
            if key in values:
                parsed[name] = kind(values[key])
        for name, value in parsed.items():
            base = self._monitor_base.get(name)
            if base is None:
                pass
            elif name.startswith('min_margin'):
                value = value if np.isnan(base) else base if np.isnan(value) else min(base, value)
            else:
                value += base
            setattr(counters, name, value)

    def on_diagnostics(self, name: str, counts: dict[str, int]) -> None:
        """Reaction counts of the executor (its statuses) and of mu (its hold fallbacks)."""
        if name.endswith('policy_executor'):
            self.executor_statuses = {k: v for k, v in counts.items() if k.isupper()}
        elif name.endswith('safe_behavior'):
            self.counters.behavior_fallbacks_train = counts.get('NO_SAFE_ACTION_STOP', 0)

    # ------------------------------------------------------------------ training
    def on_transition(self, t: Transition) -> Events:
        """Store/train on a train-phase transition, or keep an evaluation one; a number had
        before (also before a restart from the checkpoint) only comes back `duplicate`."""
        if t.seq in self._seqs:
            return Events(duplicate=True)
        self._remember(t.seq)
        if t.phase in self._eval and t.phase is self.phase:
            self._eval[t.phase].transitions.setdefault(t.episode, []).append(t)
            return Events()
        if t.phase is not RunPhase.TRAIN or self.phase is not RunPhase.TRAIN:
            self.counters.transitions_ignored += 1
            # mu's, collected after the budget was reached (it runs ahead of the learner)
            self.counters.transitions_after_budget += t.phase is RunPhase.TRAIN
            return Events()
        step = self.engine.add_transition(t.obs, t.action, t.reward, t.next_obs, t.done,
                                          t.next_support, driver=self._driver_state)
        events = Events(policy=step.policy, checkpoint=step.checkpoint)
        if step.budget_reached:
            self.phase = RunPhase.EXTRACT
            events.phase = PhaseAnnouncement(RunPhase.EXTRACT)
        return events

    def final_extract(self) -> Events:
        """The final extraction; then the executor evaluates this policy version."""
        if self.phase is not RunPhase.EXTRACT:
            raise RuntimeError(f'final_extract in phase {self.phase.value}')
        data = self.engine.final_extract()
        self.phase = RunPhase.EVAL_POLICY
        return Events(policy=data, phase=PhaseAnnouncement(RunPhase.EVAL_POLICY,
                                                           self.learner.policy_version))

    # ------------------------------------------------------------------ episodes, evaluation
    def on_episode(self, summary: EpisodeSummary) -> Events:
        if summary.phase is RunPhase.TRAIN and self.phase is RunPhase.TRAIN:
            # The monitor's margin so far: the learner never sees the states themselves.
            self.engine.end_episode(summary.episode_return, summary.length, summary.success,
                                    self.counters.min_margin_train)
            return Events()
        if summary.phase is not self.phase or summary.phase not in self._eval:
            return Events()  # a training episode that ended after the budget, or a late one
        episodes = self._eval[self.phase]
        if summary.episode in episodes.summaries:
            return Events()  # delivered twice
        episodes.summaries[summary.episode] = summary
        if len(episodes.summaries) < self.schedule.final_eval_episodes:
            return Events()
        if self.phase is RunPhase.EVAL_POLICY:
            self.phase = RunPhase.EVAL_BEHAVIOR
            return Events(phase=PhaseAnnouncement(RunPhase.EVAL_BEHAVIOR))
        self.finish()
        self.phase = RunPhase.DONE
        return Events(phase=PhaseAnnouncement(RunPhase.DONE), finished=True)

    def eval_stats(self, phase: RunPhase) -> EvalStats:
        """The held-out episodes of `phase` as `EvalStats`: success and return from the
        summaries; (Q, G) pairs, by `EvalStats.add_calibration` as in ssq-train, from the first
        calibration_episodes whose transitions all arrived. The graph's episodes end at the
        time limit, so a time-limited one has incomplete returns and makes the calibration
        NaN rather than a number over the goal-reaching episodes only (docs/training.md)."""
        episodes, schedule = self._eval[phase], self.schedule
        stats = EvalStats()
        for index, summary in enumerate(sorted(episodes.summaries.values(),
                                               key=lambda s: s.episode)):
            stats.add_episode(summary.episode_return, summary.success, summary.length)
            steps = sorted(episodes.transitions.get(summary.episode, []), key=lambda t: t.seq)
            if index >= schedule.calibration_episodes or len(steps) != summary.length \
                    or not steps:
                continue
            q = self.learner.q_values(np.array([t.obs for t in steps]),
                                      np.array([t.action for t in steps]))
            stats.add_calibration(q, [t.reward for t in steps], summary.success,
                                  self.config.sim.task.max_steps, schedule.calibration_tail,
                                  self.config.learner.critic.gamma)
        return stats

    def finish(self) -> RunMetrics:
        """metrics.json (the engine's `RunMetrics`), the final eval record, plots. The graph's
        executor runs the extracted policy, not the induced one: the `*_induced` keys are NaN."""
        policy, behavior = (self.eval_stats(phase) for phase in _EVAL)
        policy.unsafe = self.counters.unsafe_eval  # the monitor's, both evaluation phases
        policy.min_margin = self.counters.min_margin_eval
        self.metrics = self.engine.finish(policy, behavior, self.executor_statuses)
        return self.metrics

    def progress_line(self, rate: float) -> str:
        """steps, rate, ETA, unsafe count: the periodic progress line."""
        unsafe = self.counters.unsafe_train + self.counters.unsafe_eval
        if self.phase in self._eval:
            done = len(self._eval[self.phase].summaries)
            return (f'[{self.phase.value}] {done}/{self.schedule.final_eval_episodes} held-out '
                    f'episodes, unsafe states {unsafe}')
        if self.phase is RunPhase.EXTRACT:
            return (f'[extract] final extraction of {self.schedule.final_extract_steps} steps, '
                    f'unsafe states {unsafe}')
        left = max(self.schedule.steps - self.steps, 0)
        eta = f'{left / rate:.0f} s' if rate > 0 else '-'
        return (f'[{self.phase.value}] {self.steps}/{self.schedule.steps} steps, '
                f'{rate:.1f} steps/s, ETA {eta}, updates {self.learner.updates}, '
                f'policy v{self.learner.policy_version}, unsafe states {unsafe}')

