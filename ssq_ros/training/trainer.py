"""`ssq-train`'s loop: mu collects in MuJoCo, the learner trains online, the policy is extracted
and evaluated behind the shield; everything needed to resume is checkpointed atomically.

Run folder layout:
    config.yaml            the validated config of the run (a resume must match it)
    log.jsonl              one JSON record per episode / training report / evaluation, appended
                           as it happens (a killed run can still be reported)
    checkpoints/trainer.pt learner + trainer state, written atomically at episode ends
    policy.pt              the latest exported policy (TorchScript bytes, `load_exported_policy`)
    calibration.npz        Q(s_t, a_t) and G_t of the final evaluation
    metrics.json           the final numbers (written last)
    tb/                    TensorBoard (charts/, losses/)
    plots/*.png            see ssq_ros.training.plots
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from ssq_ros.config import ConfigError, to_dict
from ssq_ros.deploy.executor import ShieldedExecutor
from ssq_ros.deploy.export import export_policy, load_exported_policy
from ssq_ros.learning.critic import load_checkpoint
from ssq_ros.learning.evaluation import value_calibration_error
from ssq_ros.learning.storage import atomic_write
from ssq_ros.training.config import TrainConfig, with_overrides
from ssq_ros.training.evaluate import RolloutStats, rollout, training_episode_seed
from ssq_ros.training.learner import OnlineLearner
from ssq_ros.training.plots import write_plots
from ssq_ros.training.problem import build_problem, support_of

_TRAINER_KIND = 'ssq_ros.Trainer/1'
CHECKPOINT = Path('checkpoints') / 'trainer.pt'
LOG = 'log.jsonl'
# A training record is logged every this many environment steps.
_REPORT_EVERY = 250


@dataclass
class TrainerState:
    """Counters of the run; checkpointed with the learner."""

    env_steps: int = 0
    episodes: int = 0
    update_credit: float = 0.0
    unsafe_train: int = 0
    behavior_fallbacks: int = 0
    min_margin_train: float = math.inf
    unsafe_eval: int = 0
    evaluations: int = 0
    wall_time_s: float = 0.0
    log_bytes: int = 0
    last_eval: dict = field(default_factory=dict)
    last_fit: dict = field(default_factory=dict)


def _read_checkpoint(path: Path, config: TrainConfig) -> dict:
    state = load_checkpoint(path)
    if state.get('kind') != _TRAINER_KIND or state.get('config') != to_dict(config):
        raise ConfigError(f'{path}: not a checkpoint of this run\'s config')
    return state


def load_run_learner(config: TrainConfig, out: str | Path) -> OnlineLearner:
    """The learner (critic, policy, replay) of a run folder's last checkpoint, read only:
    unlike `Trainer.load_checkpoint`, which resumes the run and so drops the log records
    written after the checkpoint, this leaves the folder as it is."""
    path = Path(out) / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f'{path}: no trainer checkpoint')
    learner = OnlineLearner(build_problem(config).spaces, config.learner, config.schedule.seed)
    learner.load_state_dict(_read_checkpoint(path, config)['learner'], str(path))
    return learner


class Trainer:
    """One run in one folder; `run()` starts it or resumes it from the last checkpoint."""

    def __init__(self, config: TrainConfig, out: str | Path, progress: bool = True):
        self.config = with_overrides(config)
        self.out = Path(out)
        self.progress = progress
        schedule = self.config.schedule
        torch.set_num_threads(schedule.torch_threads)
        self.problem = build_problem(self.config)
        self.eval_problem = build_problem(self.config, self.problem.setup)
        self.learner = OnlineLearner(self.problem.spaces, self.config.learner, schedule.seed)
        self.executor = ShieldedExecutor(seed=schedule.seed)
        self.rng = np.random.default_rng(schedule.seed)
        self.state = TrainerState()
        self.writer = None
        self._checkpoint_due = False

    # ----------------------------------------------------------------- persistence
    def _check_run_folder(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        config_file = self.out / 'config.yaml'
        mine = to_dict(self.config)
        if config_file.exists():
            theirs = yaml.safe_load(config_file.read_text())
            if theirs != mine:
                raise ConfigError(f'{config_file}: this run folder was started with another '
                                  'config; use a new --out or the same config and overrides')
        else:
            atomic_write(config_file, lambda f: f.write(yaml.safe_dump(mine).encode()))

    def save_checkpoint(self) -> None:
        self.state.log_bytes = (self.out / LOG).stat().st_size if (self.out / LOG).exists() \
            else 0
        state = {'kind': _TRAINER_KIND, 'config': to_dict(self.config),
                 'learner': self.learner.state_dict(), 'rng': self.rng.bit_generator.state,
                 'trainer': asdict(self.state),
                 'last_eval_json': json.dumps(self.state.last_eval)}
        state['trainer'].pop('last_eval')  # nested JSON, stored as text for weights_only load
        atomic_write(self.out / CHECKPOINT, lambda f: torch.save(state, f))

    def load_checkpoint(self) -> bool:
        """Resume from the run folder's checkpoint if there is one; False if there is none."""
        path = self.out / CHECKPOINT
        if not path.exists():
            return False
        state = _read_checkpoint(path, self.config)
        self.learner.load_state_dict(state['learner'], str(path))
        self.rng.bit_generator.state = state['rng']
        self.state = TrainerState(**state['trainer'],
                                  last_eval=json.loads(state['last_eval_json']))
        # Records logged after the checkpoint belong to steps that will be run again.
        log = self.out / LOG
        if log.exists() and log.stat().st_size > self.state.log_bytes:
            with open(log, 'r+b') as file:
                file.truncate(self.state.log_bytes)
        if self.learner.policy_version:
            self.executor.set_policy(load_exported_policy(export_policy(self.learner)))
        return True

    def log(self, record: dict) -> None:
        with open(self.out / LOG, 'a') as file:
            file.write(json.dumps(record) + '\n')

    def _scalar(self, tag: str, value: float) -> None:
        if self.writer is not None and math.isfinite(value):
            self.writer.add_scalar(tag, value, self.state.env_steps)

    # ----------------------------------------------------------------- pieces of the loop
    def extract(self, steps: int) -> dict:
        stats = self.learner.extract(steps)
        data = export_policy(self.learner, to_dict(self.config))
        atomic_write(self.out / 'policy.pt', lambda f: f.write(data))
        self.executor.set_policy(load_exported_policy(data))
        self._scalar('losses/policy_loss', stats['loss'])
        self._scalar('losses/policy_fit_kl', stats['fit_kl'])
        self._scalar('charts/policy_fit_agreement', stats['fit_agreement'])
        self.log({'type': 'extract', 'step': self.state.env_steps,
                  'policy_version': self.learner.policy_version, 'steps': steps, **stats})
        self.state.last_fit = {key: stats[key] for key in ('fit_kl', 'fit_agreement')}
        return stats

    def evaluate(self, episodes: int, final: bool = False) -> dict:
        """The shielded policy on the held-out goals; the final one also runs mu alone and
        measures value calibration."""
        gamma = self.config.learner.critic.gamma
        schedule = self.config.schedule
        calibration = (self.learner.q_values, schedule.calibration_episodes,
                       schedule.calibration_tail) if final else ()
        policy = rollout(self.eval_problem, episodes, self.executor, gamma, *calibration)
        self.state.unsafe_eval += policy.unsafe
        self.state.evaluations += 1
        record = {'type': 'eval', 'step': self.state.env_steps,
                  'policy_version': self.learner.policy_version, **policy.summary()}
        if final:
            behavior = rollout(self.eval_problem, episodes, None, gamma, *calibration)
            self.state.unsafe_eval += behavior.unsafe
            record['behavior'] = behavior.summary()
            record['value_calibration_error'] = _calibration(behavior)
            record['value_calibration_error_policy'] = _calibration(policy)
            np.savez(self.out / 'calibration.npz', q_behavior=np.array(behavior.q),
                     g_behavior=np.array(behavior.g), q_policy=np.array(policy.q),
                     g_policy=np.array(policy.g))
        record['final'] = final
        self.log(record)
        self.state.last_eval = record
        self._scalar('charts/eval_success_rate', policy.success_rate)
        self._scalar('charts/eval_return', policy.mean_return)
        self._scalar('charts/eval_unsafe', policy.unsafe)
        return record

    def _due(self, every: int) -> bool:
        return self.state.env_steps % every == 0

    # ----------------------------------------------------------------- the run
    def run(self) -> dict:
        """Collect, train, extract, evaluate until the budget is spent; write metrics.json."""
        self._check_run_folder()
        metrics_file = self.out / 'metrics.json'
        if metrics_file.exists():  # finished before: running it again changes nothing
            return json.loads(metrics_file.read_text())
        resumed = self.load_checkpoint()
        self.writer = SummaryWriter(str(self.out / 'tb'), purge_step=self.state.env_steps
                                    if resumed else None)
        schedule = self.config.schedule
        started = time.monotonic()
        wall_before = self.state.wall_time_s
        bar = tqdm(total=schedule.steps, initial=self.state.env_steps, unit='step',
                   disable=not self.progress, dynamic_ncols=True,
                   desc='resumed' if resumed else 'train')
        updates_at_start, time_at_start = self.learner.updates, time.monotonic()
        try:
            while self.state.env_steps < schedule.steps:
                self._episode(bar)
                self.state.wall_time_s = wall_before + time.monotonic() - started
                if self._checkpoint_due or self.state.env_steps >= schedule.steps:
                    self.save_checkpoint()
                    self._checkpoint_due = False
                elapsed = max(time.monotonic() - time_at_start, 1e-9)
                bar.set_postfix(upd_s=f'{(self.learner.updates - updates_at_start) / elapsed:.0f}',
                                unsafe=self.state.unsafe_train,
                                eval=_eval_text(self.state.last_eval))
            bar.close()
            self.extract(schedule.final_extract_steps)
            final = self.evaluate(schedule.final_eval_episodes, final=True)
            self.state.wall_time_s = wall_before + time.monotonic() - started
            metrics = self._metrics(final)
            atomic_write(metrics_file,
                         lambda f: f.write(json.dumps(metrics, indent=2).encode()))
        finally:
            bar.close()
            self.writer.close()
        write_plots(self.out)
        return metrics

    def _episode(self, bar: tqdm) -> None:
        """One episode of mu (cut short only by the step budget), training as it goes."""
        problem, learner, state = self.problem, self.learner, self.state
        schedule = self.config.schedule
        obs, info = problem.env.reset(seed=training_episode_seed(schedule.seed, state.episodes))
        state.unsafe_train += int(info['unsafe'])
        decision = problem.behavior(self.rng)
        total, length, min_margin, success = 0.0, 0, info['min_margin'], False
        losses: list[dict] = []
        while state.env_steps < schedule.steps:
            next_obs, reward, terminated, truncated, info = problem.env.step(decision.action)
            state.env_steps += 1
            state.unsafe_train += int(info['unsafe'])
            state.behavior_fallbacks += int(decision.fallback)
            min_margin = min(min_margin, info['min_margin'])
            # mu at s' is both the next action and the support the target averages over.
            next_decision = problem.behavior(self.rng)
            learner.add_transition(obs, decision.action, reward, next_obs, float(terminated),
                                   support_of(next_decision))
            obs, decision = next_obs, next_decision
            total += reward
            length += 1
            success = success or terminated
            bar.update(1)
            if state.env_steps >= schedule.learning_starts:
                state.update_credit += schedule.updates_per_step
                count = int(state.update_credit)
                if count:
                    state.update_credit -= count
                    losses.append(learner.train(count))
            self._periodic(losses)
            if terminated or truncated:
                break
        state.episodes += 1
        state.min_margin_train = min(state.min_margin_train, min_margin)
        self.log({'type': 'episode', 'step': state.env_steps, 'episode': state.episodes,
                  'return': total, 'length': length, 'success': success,
                  'min_margin': min_margin, 'unsafe_total': state.unsafe_train})
        self._scalar('charts/episodic_return', total)
        self._scalar('charts/episodic_success', float(success))
        self._scalar('charts/min_safety_margin', min_margin)
        self._scalar('charts/unsafe_states_train', state.unsafe_train)

    def _periodic(self, losses: list[dict]) -> None:
        schedule, state = self.config.schedule, self.state
        if self._due(_REPORT_EVERY) and losses:
            mean = {k: float(np.mean([x[k] for x in losses])) for k in losses[0]}
            losses.clear()
            self.log({'type': 'train', 'step': state.env_steps,
                      'updates': self.learner.updates, **mean})
            for key, value in mean.items():
                self._scalar(f'losses/{key}', value)
        # The final extraction and evaluation follow the last step; no periodic ones there.
        learning = schedule.learning_starts <= state.env_steps < schedule.steps
        if learning and self._due(schedule.extract_every):
            self.extract(schedule.extract_steps)
        if learning and self._due(schedule.eval_every):
            if self.learner.policy_version == 0:
                self.extract(schedule.extract_steps)
            self.evaluate(schedule.eval_episodes)
        if self._due(schedule.checkpoint_every):
            self._checkpoint_due = True

    def _metrics(self, final: dict) -> dict:
        state = self.state
        behavior = final['behavior']
        return {
            'unsafe_states_train': state.unsafe_train,
            'unsafe_states_eval': state.unsafe_eval,
            'success_rate_behavior': behavior['success_rate'],
            'success_rate_policy': final['success_rate'],
            'return_behavior': behavior['return'],
            'return_policy': final['return'],
            'value_calibration_error': final['value_calibration_error'],
            'value_calibration_error_policy': final['value_calibration_error_policy'],
            'env_steps': state.env_steps,
            'updates': self.learner.updates,
            'wall_time_s': state.wall_time_s,
            'episodes_train': state.episodes,
            'eval_episodes': final['episodes'],
            'min_margin_train': state.min_margin_train,
            'min_margin_eval': min(final['min_margin'], behavior['min_margin']),
            'behavior_fallbacks_train': state.behavior_fallbacks,
            'executor_statuses': final['statuses'],
            'policy_version': self.learner.policy_version,
            'policy_fit_kl': state.last_fit.get('fit_kl', float('nan')),
            'policy_fit_agreement': state.last_fit.get('fit_agreement', float('nan')),
            'action_kind': self.config.action_kind,
            'seed': self.config.schedule.seed,
        }


def _calibration(stats: RolloutStats) -> float:
    if not stats.q:
        return float('nan')
    return value_calibration_error(np.array(stats.q), np.array(stats.g))


def _eval_text(record: dict) -> str:
    if not record:
        return '-'
    return f'{record["success_rate"]:.0%}'


def default_out(config_path: str | Path, seed: int) -> Path:
    return Path('runs') / f'{Path(config_path).stem}-seed{seed}'

