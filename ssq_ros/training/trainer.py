"""`ssq-train`'s driver of the run engine: mu (or, for a share of the episodes, the critic's
induced policy inside mu's support: `schedule.induced_collection`) collects in MuJoCo in this
process and feeds every transition to `ssq_ros.training.run.Run`, which does the rest
(schedule, checkpoints, extraction, metrics). The run folder is described there; the
checkpoint is `checkpoints/trainer.pt`, taken at the first episode end after every
`checkpoint_every` steps so no episode is cut.
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ssq_ros.config import ConfigError
from ssq_ros.deploy.executor import ShieldedExecutor
from ssq_ros.deploy.export import export_policy, load_exported_policy
from ssq_ros.learning.critic import load_checkpoint
from ssq_ros.learning.exploration import VisitCounts
from ssq_ros.training.config import TrainConfig
from ssq_ros.training.evaluate import (
    EvalStats,
    behavior_actor,
    evaluate_heldout,
    executor_actor,
    induced_actor,
    induced_choice,
    training_episode_seed,
)
from ssq_ros.training.learner import OnlineLearner
from ssq_ros.training.problem import build_problem, support_of
from ssq_ros.training.run import PROGRESS_PERIOD, Run, is_checkpoint_of

CHECKPOINT = Path('checkpoints') / 'trainer.pt'


def load_run_learner(config: TrainConfig, out: str | Path) -> OnlineLearner:
    """The learner (critic, policy, replay) of a run folder's last checkpoint, read only:
    unlike `Trainer.run`, which resumes the run and so drops the log records written after
    the checkpoint, this leaves the folder as it is."""
    path = Path(out) / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f'{path}: no trainer checkpoint')
    run = Run(config, build_problem(config).spaces, out, runner='ssq-train',
              checkpoint_name=CHECKPOINT.name, checkpoint_at_episode_end=True,
              tensorboard=False)
    state = load_checkpoint(path)
    if not is_checkpoint_of(state, run.config):
        raise ConfigError(f'{path}: not a checkpoint of this run\'s config')
    run.learner.load_state_dict(state['learner'], str(path))
    return run.learner


class Trainer:
    """One ssq-train run in one folder; `run()` starts it or resumes it from the checkpoint."""

    def __init__(self, config: TrainConfig, out: str | Path, progress: bool = True):
        self.progress = progress
        self.problem = build_problem(config)
        self.eval_problem = build_problem(config, self.problem.setup)
        # mu's training episodes may run past the task's time limit (issue 14)
        self._train_episode_steps = max(config.schedule.train_episode_steps,
                                        self.problem.env.task.config.max_steps)
        self.engine = Run(config, self.problem.spaces, out, runner='ssq-train',
                          checkpoint_name=CHECKPOINT.name, checkpoint_at_episode_end=True,
                          say=self._say)
        self.config = self.engine.config
        self.out = self.engine.out
        self.learner = self.engine.learner
        schedule = self.config.schedule
        self.executor = ShieldedExecutor(seed=schedule.seed)
        # the same policy executed by sampling, in the final evaluation only
        self.sampling_executor = ShieldedExecutor(greedy=False, seed=schedule.seed)
        self.rng = np.random.default_rng(schedule.seed)
        # the novelty bonus's visits of the hand (schedule.novelty_bonus; None without one)
        self.visits = VisitCounts(schedule.novelty_cell, schedule.novelty_bonus) \
            if schedule.novelty_bonus > 0 else None
        # the collecting induced policy's temperature (None: the critic's alpha)
        self._collection_alpha = schedule.collection_alpha or None
        # draws the hindsight goals; mu's draws (self.rng) stay those of a run without them
        self.hindsight_rng = np.random.default_rng([schedule.seed, 1])
        self._bar: tqdm | None = None

    def _say(self, line: str) -> None:
        if self.progress:
            tqdm.write(line, file=sys.stderr)

    def _driver_state(self) -> dict:
        state = {'rng': self.rng.bit_generator.state,
                 'hindsight_rng': self.hindsight_rng.bit_generator.state}
        if self.visits is not None:
            state['visits'] = self.visits.state_dict()
        return state

    def _restore(self, state: dict) -> None:
        self.rng.bit_generator.state = state['rng']
        if 'hindsight_rng' in state:  # written before hindsight goals existed: none drawn
            self.hindsight_rng.bit_generator.state = state['hindsight_rng']
        if self.visits is not None:
            self.visits.load_state_dict(state['visits'])

    def run(self) -> dict:
        """Collect, train, extract, evaluate until the budget is spent; metrics.json."""
        engine, schedule = self.engine, self.config.schedule
        engine.check_folder()
        finished = engine.finished_metrics()
        if finished is not None:  # finished before: running it again changes nothing
            stale = engine.stale_reason(finished)
            self._say(f'{engine.out} already finished; its metrics.json is reported as it is'
                      + (f' ({stale}: use another --out to measure this code)' if stale
                         else ''))
            return finished
        resumed = engine.open(self._restore)
        if self.learner.policy_version:  # the policy of the checkpoint, not a later policy.pt
            self.executor.set_policy(load_exported_policy(export_policy(self.learner)))
        self._bar = tqdm(total=schedule.steps, initial=engine.steps, unit='step',
                         disable=not self.progress, dynamic_ncols=True,
                         desc='resumed' if resumed else 'train')
        try:
            while not engine.budget_reached:
                self._episode()
            self._bar.close()
            final_policy = load_exported_policy(engine.final_extract())
            self.executor.set_policy(final_policy)
            self.sampling_executor.set_policy(final_policy)
            policy = self.evaluate(schedule.final_eval_episodes, final=True)
            behavior = self.evaluate(schedule.final_eval_episodes, behavior=True)
            induced = self.evaluate(schedule.final_eval_episodes, induced=True)
            sampled = self.evaluate(schedule.final_eval_episodes, sampled=True)
            metrics = engine.finish(policy, behavior, induced=induced, policy_sampled=sampled)
        finally:
            self._bar.close()
            engine.close()
        return asdict(metrics)

    def evaluate(self, episodes: int, final: bool = False, behavior: bool = False,
                 induced: bool = False, sampled: bool = False) -> EvalStats:
        """Held-out episodes of the shielded policy (or of mu alone, of the critic's induced
        policy, or of the shielded policy executed by sampling); the final ones of the first
        three pair Q with the returns. Periodic ones are logged here, the final ones by
        `Run.finish`."""
        schedule, engine = self.config.schedule, self.engine
        if behavior:
            act, who = behavior_actor(self.eval_problem), 'mu'
        elif induced:
            act, who = induced_actor(self.eval_problem, self.learner), 'induced policy'
        elif sampled:
            act = executor_actor(self.eval_problem, self.sampling_executor)
            who = f'policy v{self.learner.policy_version}, sampled'
        else:
            act = executor_actor(self.eval_problem, self.executor)
            who = f'policy v{self.learner.policy_version}'
        calibration = {'q_function': self.learner.q_values,
                       'calibration_episodes': schedule.calibration_episodes,
                       'calibration_tail': schedule.calibration_tail} \
            if final or behavior or induced else {}
        started, last = time.monotonic(), [time.monotonic()]

        def progress(done: int) -> None:
            now = time.monotonic()
            if done == episodes or now - last[0] >= PROGRESS_PERIOD:
                last[0] = now
                self._say(f'evaluation ({who}): {done}/{episodes} held-out episodes, '
                          f'{now - started:.0f} s')

        with engine.evaluation_time():
            stats = evaluate_heldout(self.eval_problem, act, episodes,
                                     self.config.learner.critic.gamma, progress=progress,
                                     **calibration)
        engine.count_eval_safety(stats)
        if not (final or behavior or induced or sampled):
            engine.record_eval(stats)
        return stats

    def _induced_episode(self) -> bool:
        """Whether the critic's induced policy collects the next episode instead of mu
        (`schedule.induced_collection`; never before the critic has trained)."""
        schedule = self.config.schedule
        return (schedule.induced_collection > 0 and self.learner.updates > 0
                and self.rng.random() < schedule.induced_collection)

    def _episode(self) -> None:
        """One training episode (cut short only by the step budget), training as it goes:
        mu's, or one of the induced policy's; either acts only inside mu's support."""
        problem, engine, counters = self.problem, self.engine, self.engine.counters
        obs, info = problem.env.reset(seed=training_episode_seed(self.config.schedule.seed,
                                                                 counters.episodes_train))
        counters.unsafe_train += int(info['unsafe'])
        induced = self._induced_episode()
        decision = problem.behavior(self.rng)
        total, length, min_margin, success = 0.0, 0, info['min_margin'], False
        steps = []  # the episode's transitions, for its hindsight goals
        while not engine.budget_reached:
            action = induced_choice(problem, self.learner, obs, decision, self.rng,
                                    self._collection_alpha).action \
                if induced else decision.action
            next_obs, reward, terminated, truncated, info = problem.env.step(action)
            counters.unsafe_train += int(info['unsafe'])
            counters.behavior_fallbacks_train += int(decision.fallback)
            min_margin = min(min_margin, info['min_margin'])
            # mu at s' is the support the target averages over, and mu's next action or the
            # induced policy's draw over that same support.
            next_decision = problem.behavior(self.rng)
            # the critic learns the task's reward plus the novelty bonus, if any; the logged
            # return and the success are the task's
            hand, support, bonus = problem.env.sim.ee_position(), support_of(next_decision), 0.0
            if self.visits is not None and (engine.novelty_end is None
                                            or engine.steps < engine.novelty_end):
                bonus = self.visits.visit(hand)
            events = engine.add_transition(obs, action, reward, next_obs, terminated, support,
                                           bonus=bonus)
            if self.config.schedule.hindsight_goals:
                steps.append((obs, action, next_obs, support, bonus, hand))
            obs, decision = next_obs, next_decision
            total += reward
            length += 1
            success = success or info['success']
            self._bar.update(1)
            if events.policy is not None:
                self.executor.set_policy(load_exported_policy(events.policy))
            if events.evaluate:
                if self.learner.policy_version == 0:
                    self.executor.set_policy(load_exported_policy(
                        engine.extract(self.config.schedule.extract_steps)))
                self.evaluate(self.config.schedule.eval_episodes)
            if terminated or (truncated and length >= self._train_episode_steps):
                break
        self._store_hindsight(steps)
        counters.min_margin_train = min(counters.min_margin_train, min_margin)
        counters.episodes_induced_train += int(induced)
        engine.end_episode(total, length, success, min_margin, self._driver_state,
                           collector='induced' if induced else 'mu')
        last = counters.last_eval
        self._bar.set_postfix(updates=self.learner.updates, unsafe=counters.unsafe_train,
                              eval=f'{last["success_rate"]:.0%}' if last else '-')

    def _store_hindsight(self, steps: list[tuple]) -> None:
        """schedule.hindsight_goals copies of each of the episode's transitions, each with a
        goal the hand reached at that step or later ('future' goals, Andrychowicz et al. 2017),
        its reward and end the task's for that goal. mu's support at s' is kept: goal-free mu's
        does not depend on the goal (with_overrides refuses other configs)."""
        task = self.problem.env.task
        hands = [step[-1] for step in steps]
        for t, (obs, action, next_obs, support, bonus, hand) in enumerate(steps):
            for later in self.hindsight_rng.integers(t, len(steps),
                                                     size=self.config.schedule.hindsight_goals):
                goal = hands[later]
                reward, reached = task.reward(hand, goal)
                self.learner.add_relabeled(task.with_goal(obs, goal), action, reward,
                                           task.with_goal(next_obs, goal), float(reached),
                                           support, bonus)


def default_out(config_path: str | Path, seed: int) -> Path:
    return Path('runs') / f'{Path(config_path).stem}-seed{seed}'
