"""Peers on the task suite behind mu's support (issue 15), judged on SSQ's test split.

    .venv/bin/python -m bench.bench_tasks_peers tune [--method M] [--tasks wall]  # M's grid
    .venv/bin/python -m bench.bench_tasks_peers test [--method M] --point best [--seeds ..]
    .venv/bin/python -m bench.bench_tasks_peers offline [--methods bc cql iql]  # mu's data
    .venv/bin/python -m bench.bench_tasks_peers baselines   # mu sampled in the continuous tasks
    .venv/bin/python -m bench.bench_tasks_peers table                    # the comparison

The peers get every advantage SSQ has on the discrete task suite:
- DQN (SB3) restricted to mu's support (`MaskedDQN`): it acts and explores only among the
  primitives mu allows at each state, so it trains with 0 unsafe states as SSQ does, and its
  target maxes over the primitives mu allows at s' (as SSQ's target averages over them); its
  observation carries mu's support. It explores uniformly over the allowed primitives
  ('uniform') or with mu's own draw ('mu': mu's prior, goal preference included). SSQ's
  network width, batch, discount, learning rate, warm-up, soft target (tau 0.005) and one
  update per env step.
- The same tuning levers that helped SSQ, as a stated grid (GRID): exploration x n-step
  return (1, 8) x training episode length (the task's 140 steps, or 400 as mu's episodes in
  SSQ's runs): 8 points, each on seed 0 of every task for 10 000 env steps, judged on
  held-out episodes 0-29 (SSQ's settings were chosen on the same episodes). `tune` prints the
  grid's table; the point with the best mean success over the tasks (between equal means, the
  fewest unsafe states in training) is the one to `test`.
- SAC (SB3) trained behind the same support shield on the continuous version of each task
  (`action_kind: continuous`: end-effector velocities, mu = K Gaussian samples checked by the
  support): every action it proposes runs only if mu's support accepts it, else mu's nearest
  safe sample runs, and its replay stores what ran (`ShieldedSAC`), so it also trains with 0
  unsafe states. With mu's prior or without: its warm-up steps take mu's own draw
  ('mu', the replay starts with mu's data) or a uniform action ('uniform'). SSQ's width,
  batch, discount, learning rate and warm-up, SB3's defaults otherwise. Its grid (SAC_GRID)
  has the DQN grid's 8 points with the warm-up in place of the exploration; the same seed,
  tasks and validation episodes.
- SAC behind the shield with HER (`sac_her`; SB3's HerReplayBuffer, one-step targets): the
  lever SSQ has on the costly task (hindsight goals) given to the shielded SAC; its grid
  (SAC_HER_GRID) is TQC+HER's. Not tuned: costly, the task it is for, was tuned for by no
  method, and its test runs name the point by analogy (SAC_HER_GRID's comment).
- Without the shield in training, judged behind it (as every row) and also on their own
  (UNSHIELDED_TRAINING), in the continuous tasks:
  - SAC-Lagrangian (`bench/peers/sac_lagrangian.py`): a cost critic of the referee's unsafe
    states and a learned multiplier, cost limit 0; its grid (LAGRANGIAN_GRID, 8 points): the
    multiplier's learning rate (4 values) x mu's prior for the warm-up, at SAC's tuned n-step
    and episode length.
  - TQC with HER (sb3-contrib; `bench/peers/tqc_her.py`), reward only: the unconstrained
    ceiling; its grid (TQC_HER_GRID, 8 points): mu's prior x (episode length, relabelled
    goals per transition).
- On mu's data, the replay of SSQ's own run of the same task and seed (what SSQ learned
  from), observations standardised, 10 000 updates (SSQ's runs make 9 001), executed greedily
  behind the same shield: behaviour cloning ('bc', a network fitted to mu's actions) and
  d3rlpy's discrete CQL ('cql'). d3rlpy's IQL ('iql') acts in the continuous version of the
  task: its data is mu alone there, the same number of env steps on the training episodes of
  a run of that seed (what SAC's mu prior starts from), with the same updates and
  standardisation, executed behind the continuous shield as SAC is.

`baselines` runs mu alone, sampled, in the continuous version of each task on the test split
(the continuous rows' baseline; the discrete baselines come with SSQ's test outcomes).

`test` and `offline` evaluate on the test split SSQ's runs were judged on (bench_tasks_test:
episodes 131-230, 1-based, i.e. --first 130). Every (phase, method, task, seed) record goes
to runs/tasks_peers/ and is reused only if its code commit and settings hash match (a stale
record is rerun, never reused silently). `table` joins the test records with SSQ's
(--ssq, --ssq-train; by default the files the committed table was made from, so `table` alone
rebuilds it) into bench/results/tasks_peers.json: success per task
with Wilson 95 % intervals, IQM over (task, seed) with stratified-bootstrap intervals, and the
probability that SSQ's run beats the peer's. The records stay on the machine that made them;
a (method, budget, task) that runs/ has no record of is carried over from the table already
in bench/results (its per-seed counts are all the statistics need; `carried` names those
rows and the commit they came from), so a later sitting adds rows without running every
peer again (`--fresh`: runs/ alone). Start two processes with different --tasks to use two
cores.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.peers.common import EvalPolicy, behavior_transitions, evaluate
from bench.peers.ssq import split_episodes, ssq_transitions
from bench.stats import (
    probability_of_improvement,
    stratified_bootstrap_interval,
    wilson_interval,
)
from ssq_ros.config import parse, to_dict
from ssq_ros.training.config import TrainConfig, load_train_config
from ssq_ros.training.evaluate import behavior_actor, evaluate_heldout
from ssq_ros.training.problem import build_problem
from ssq_ros.training.provenance import provenance
from ssq_ros.training.run import read_run_config

TASKS = ('wall', 'ushape', 'window', 'costly')
# The tasks the DQN grid was tuned on (as SSQ's settings were); costly came later, and neither
# method was tuned on it.
TUNED = ('wall', 'ushape', 'window')
RUNS = Path('runs') / 'tasks_peers'
# bench_tasks_train variants whose test outcomes are SSQ's rows: the method each one is.
SSQ_VARIANTS = {'task': 'ssq', 'task_cont': 'ssq_continuous',
                # the same learner, the induced policy collecting half the training episodes
                'task_ic05': 'ssq_induced_collection',
                # mu that knows only safety (goal preference 0), the induced policy collecting
                # every training episode, alpha 0.1: no task prior, as SAC behind the shield
                'task_gp0_ic1_a01': 'ssq_goal_free',
                # ... new runs of it, deployed as the geometric mean of the exports at 20 000,
                # 25 000 and 30 000 (the wall, U and window yamls now)
                'task_gp0_ic1_a01_avg': 'ssq_goal_free_avg',
                # ... with a novelty bonus and hindsight goals (costly.yaml until f38ea06: the
                # bonus for the first half of 150 000 steps; before, 70 % of 100 000)
                'task_gp0_ic1_a01_her4_nb1_u05': 'ssq_goal_free_explore',
                'task_gp0_ic1_a01_her4_nb1_u07': 'ssq_goal_free_explore_u07',
                # ... and the tray observed, mu keeping the hand's heading (costly.yaml now)
                'task_gp0_ic1_a01_her4_nb1_u05_oc_p4': 'ssq_goal_free_explore_p4',
                # ... the same runs, deployed as the geometric mean of the exports from step
                # 100 000 on (ssq-select --average; costly.yaml now)
                'task_gp0_ic1_a01_her4_nb1_u05_oc_p4_keep': 'ssq_goal_free_explore_p4_avg'}
# The executor each SSQ row deploys, where it is not the induced policy's most likely action
# ('policy'): chosen on the validation episodes before the test split was run.
SSQ_DEPLOYED = {'task_gp0_ic1_a01_her4_nb1_u05_oc_p4': 'policy_sampled',
                'task_gp0_ic1_a01_her4_nb1_u05_oc_p4_keep': 'policy_sampled'}
SSQ_RUNS = Path('runs') / 'suite'
RESULTS = Path(__file__).resolve().parent / 'results' / 'tasks_peers.json'
SSQ_TEST = Path(__file__).resolve().parent / 'results' / 'tasks_test_induced.json'
SSQ_TRAIN = SSQ_TEST.with_name('tasks_induced.json')
STEPS = 10_000
LONG_RUN = 50_000  # env steps from which a run shows its own progress bar
VALIDATION = (0, 30)   # (first, episodes): the held-out episodes SSQ's settings were chosen on
TEST = (130, 100)      # bench_tasks_test's split, used once by SSQ's runs
GRID = {f'{explore}_n{n}_e{length}': {'explore': explore, 'n_steps': n,
                                       'train_episode_steps': length}
        for explore in ('uniform', 'mu') for n in (1, 8) for length in (140, 400)}
SAC_GRID = {f'{warmup}_n{n}_e{length}': {'warmup': warmup, 'n_steps': n,
                                         'train_episode_steps': length}
            for warmup in ('uniform', 'mu') for n in (1, 8) for length in (140, 400)}
# SAC-Lagrangian trains without the shield (its safety is learned): its own levers, the
# multiplier's learning rate (4 values; the first 4 points had 3e-4 and 3e-3, the slower one
# better, so the grid extends downward) and mu's prior for the warm-up, at SAC's tuned n-step
# (8) and episode length (400); cost limit 0 (no unsafe state is acceptable). 8 points, as SAC.
LAGRANGIAN_GRID = {f'{warmup}_lr{rate}': {'warmup': warmup, 'multiplier_lr': float(rate),
                                          'cost_limit': 0.0, 'n_steps': 8,
                                          'train_episode_steps': 400}
                   for warmup in ('uniform', 'mu') for rate in ('3e-5', '1e-4', '3e-4', '3e-3')}
# TQC with HER, no shield and no cost: the reward-only ceiling. SB3's HER takes one-step
# targets only, so its grid is mu's prior x episode length x relabelled goals per transition
# ('future' goals): the first 4 points had 4 goals and episodes of 140 or 400 steps, the
# longer better; the other 4 add 8 goals and 1000-step episodes. 8 points, as SAC.
TQC_HER_GRID = {f'{warmup}_e{length}' + ('' if goals == 4 else f'_k{goals}'): {
                    'warmup': warmup, 'train_episode_steps': length, 'n_sampled_goal': goals}
                for warmup in ('uniform', 'mu')
                for length, goals in ((140, 4), (400, 4), (400, 8), (1000, 4))}
# SAC behind mu's support with HER: SAC's shield and the hindsight goals SSQ has on the costly
# task, the fairer SAC there. HER takes one-step targets, so its grid is TQC+HER's levers. Not
# tuned (costly was tuned for by no method): its test runs name the point, uniform_e400, SAC's
# tuned warm-up and episode length (its tuned n-step, 8, is not available with HER) with the
# 4 goals SSQ's costly runs relabel.
SAC_HER_GRID = dict(TQC_HER_GRID)
GRIDS = {'dqn': GRID, 'sac': SAC_GRID, 'sac_lagrangian': LAGRANGIAN_GRID,
         'tqc_her': TQC_HER_GRID, 'sac_her': SAC_HER_GRID}
# The online peers that train without mu's support shield: judged behind it (as deployed) and
# also on their own, where the referee counts their unsafe states.
UNSHIELDED_TRAINING = ('sac_lagrangian', 'tqc_her')
# What DQN shares with SSQ's task runs (config/tasks/*.yaml: critic and schedule).
EXPLORATION = {'exploration_fraction': 0.3, 'exploration_final_eps': 0.05}
# Offline peers on mu's data: as many updates as SSQ's 10 000-step runs make (9 001).
OFFLINE_UPDATES = 10_000
OFFLINE = ('bc', 'cql', 'iql')
# d3rlpy's algorithm for each offline peer that uses one (mu's data is discrete in the task,
# continuous in its continuous version)
OFFLINE_ALGORITHMS = {'cql': 'discrete_cql', 'iql': 'iql'}
D3RLPY_NAMES = {'cql': 'DiscreteCQL', 'iql': 'IQL'}


def task_config(task: str):
    return load_train_config(f'config/tasks/{task}.yaml')


def dqn_settings(task: str, point: str, steps: int = STEPS) -> dict:
    """SB3 DQN hyperparameters for grid point `point` on `task` (SSQ's shared settings)."""
    config = task_config(task)
    critic, schedule = config.learner.critic, config.schedule
    grid = GRID[point]
    return {'point': point, **grid, 'steps': steps, 'hyper': {
        'batch_size': critic.batch_size, 'gamma': critic.gamma, 'learning_rate': critic.lr,
        'learning_starts': schedule.learning_starts, 'train_freq': 1, 'gradient_steps': 1,
        'tau': critic.tau, 'target_update_interval': 1, 'n_steps': grid['n_steps'],
        'max_grad_norm': critic.grad_clip,
        'policy_kwargs': {'net_arch': list(critic.hidden_sizes)}, **EXPLORATION}}


def continuous_task_config(task: str):
    """The task with continuous end-effector velocities (what SAC acts in)."""
    data = to_dict(task_config(task))
    data['action_kind'] = 'continuous'
    return parse(TrainConfig, data, f'config/tasks/{task}.yaml, continuous')


def sac_settings(task: str, point: str, steps: int = STEPS, method: str = 'sac') -> dict:
    """SB3 SAC's (or SAC-Lagrangian's, TQC+HER's: `method`) hyperparameters for its grid's
    point `point` on `task` (SSQ's shared settings)."""
    from bench.peers.sb3_sac import sac_hyperparameters  # the bench extra's SB3

    config = continuous_task_config(task)
    critic, schedule = config.learner.critic, config.schedule
    grid = GRIDS[method][point]
    hyper = {**sac_hyperparameters(critic.batch_size, list(critic.hidden_sizes), critic.gamma,
                                   schedule.learning_starts), 'learning_rate': critic.lr}
    if 'n_steps' in grid:
        hyper['n_steps'] = grid['n_steps']
    return {'point': point, **grid, 'steps': steps, 'action_kind': 'continuous',
            'hyper': hyper}


def record_path(runs: Path, phase: str, method: str, task: str, steps: int, seed: int) -> Path:
    return runs / phase / f'{task}-{method}-{steps}-s{seed}.json'


def settings_hash(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


@functools.cache
def code_at_start() -> dict:
    """The code commit this process runs (read once: a commit made while it runs is not
    the code it runs)."""
    return provenance()


def cached(path: Path, settings: dict) -> dict | None:
    """The record at `path` if it was made by this code commit with these settings."""
    here = code_at_start()
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    if (record.get('settings_sha256') == settings_hash(settings) and not here['code_dirty']
            and record.get('code_commit') == here['code_commit']
            and not record.get('code_dirty')):
        return record
    print(f'{path}: made by another commit or settings; running it again', flush=True)
    return None


def saved_records(runs: Path, phase: str) -> list[dict]:
    """Every record of `phase` ('tune' or 'test') under `runs`."""
    return [json.loads(path.read_text()) for path in sorted((runs / phase).glob('*.json'))]


def save(path: Path, record: dict) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record) + '\n')
    return record


def peer_settings(method: str, task: str, point: str, steps: int = STEPS) -> dict:
    """The online peer `method`'s (a GRIDS key) settings at its grid's `point` on `task`."""
    if method == 'dqn':
        return dqn_settings(task, point, steps)
    return sac_settings(task, point, steps, method)


def peer_config(method: str, task: str):
    """The task as the peer acts in it: DQN the discrete task, the others its continuous
    version."""
    return (task_config if method == 'dqn' else continuous_task_config)(task)


def train_peer(method: str, problem, seed: int, steps: int, settings: dict,
               label: str) -> tuple[EvalPolicy, dict]:
    """Train the online peer in `problem` (peer_config's), behind mu's support unless it is one
    of UNSHIELDED_TRAINING; (its policy, training numbers)."""
    torch.manual_seed(seed)
    # `each` prints a line per finished job; a job this long also shows its own bar
    progress = steps >= LONG_RUN
    mu_prior = settings.get('warmup') == 'mu'
    episodes = settings['train_episode_steps']
    if method == 'dqn':
        from bench.peers.sb3_dqn import train_dqn
        return train_dqn(problem, seed, steps, settings['hyper'], label, progress=progress,
                         shielded=True, masked=True,
                         explore_with_mu=settings['explore'] == 'mu',
                         train_episode_steps=episodes)
    if method == 'sac':
        from bench.peers.sb3_sac import train_sac
        return train_sac(problem, seed, steps, settings['hyper'], label=label, progress=progress,
                         shielded=True, warmup_with_mu=mu_prior, train_episode_steps=episodes)
    if method == 'sac_her':
        from bench.peers.sb3_sac import train_sac
        return train_sac(problem, seed, steps, settings['hyper'], label=label, progress=progress,
                         shielded=True, warmup_with_mu=mu_prior, train_episode_steps=episodes,
                         her_goals=settings['n_sampled_goal'])
    if method == 'sac_lagrangian':
        from bench.peers.sac_lagrangian import train_sac_lagrangian
        return train_sac_lagrangian(problem, seed, steps, settings['hyper'],
                                    settings['cost_limit'], settings['multiplier_lr'],
                                    label=label, progress=progress, warmup_with_mu=mu_prior,
                                    train_episode_steps=episodes)
    if method == 'tqc_her':
        from bench.peers.tqc_her import train_tqc_her
        return train_tqc_her(problem, seed, steps, settings['hyper'],
                             settings['n_sampled_goal'], label=label, progress=progress,
                             warmup_with_mu=mu_prior, train_episode_steps=episodes)
    raise ValueError(f'unknown online peer {method!r}; known: {", ".join(GRIDS)}')


def run_online(method: str, phase: str, task: str, point: str, seed: int, steps: int = STEPS,
               runs: Path = RUNS) -> dict:
    """The online peer `method` at `point`, trained on `task` for `steps` and judged on the
    validation episodes ('tune') or the test split ('test'); cached."""
    settings = {**peer_settings(method, task, point, steps), 'task': task, 'seed': seed,
                'split': list(VALIDATION if phase == 'tune' else TEST)}
    name = f'{method}_{point}'
    path = record_path(runs, phase, name, task, steps, seed)
    if (record := cached(path, settings)) is not None:
        return record
    config = peer_config(method, task)
    problem = build_problem(config)
    policy, training = train_peer(method, problem, seed, steps, settings, name)
    first, episodes = settings['split']
    # a masked DQN's network reads mu's support at `problem`'s state (train_dqn): evaluated
    # on that same problem
    gamma = config.learner.critic.gamma
    result = evaluate(problem, policy, episodes, True, gamma, first=first)
    alone = (evaluate(problem, policy, episodes, False, gamma, first=first)
             if method in UNSHIELDED_TRAINING and phase == 'test' else None)
    return save(path, _record(name, task, seed, settings, training, result, alone))


# Baselines measured here (steps 0, one record per task): the name the table gives each.
BASELINE_RECORDS = {'mu_continuous': 'behavior_continuous'}


def run_mu_continuous(task: str, runs: Path = RUNS, split: tuple[int, int] = TEST) -> dict:
    """mu alone, sampled, in the continuous version of `task` on held-out episodes `split`:
    what the SAC rows start from (it does not depend on a seed or a budget)."""
    settings = {'method': 'mu_continuous', 'task': task, 'split': list(split),
                'action_kind': 'continuous', 'steps': 0}
    path = record_path(runs, 'test', 'mu_continuous', task, 0, 0)
    if (record := cached(path, settings)) is not None:
        return record
    config = continuous_task_config(task)
    problem = build_problem(config)
    first, episodes = split
    started = time.monotonic()
    stats = evaluate_heldout(problem, behavior_actor(problem), episodes,
                             config.learner.critic.gamma, first=first)
    result = {'episodes': stats.episodes, 'success_rate': stats.success_rate,
              'outcomes': [int(o) for o in stats.outcomes], 'return': stats.mean_return,
              'unsafe_states': stats.unsafe, 'steps': stats.steps}
    training = {'unsafe_states_train': 0, 'wall_time_train_s': 0.0,
                'wall_time_eval_s': time.monotonic() - started}
    return save(path, _record('mu_continuous', task, 0, settings, training, result))


class BehaviorCloning(nn.Module):
    """Logits over the primitives from standardised observations."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, actions: int, hidden: list[int]):
        super().__init__()
        self.register_buffer('mean', torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer('std', torch.as_tensor(std, dtype=torch.float32))
        layers, width = [], mean.size
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.net = nn.Sequential(*layers, nn.Linear(width, actions))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net((obs - self.mean) / self.std)


def fit_behavior_cloning(observations: np.ndarray, actions: np.ndarray, action_count: int,
                         hidden: list[int], batch_size: int, lr: float, updates: int,
                         seed: int) -> tuple[BehaviorCloning, dict]:
    """Cross-entropy fit of mu's actions; (model, its accuracy and loss on the data)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    mean, std = observations.mean(axis=0), observations.std(axis=0) + 1e-6
    model = BehaviorCloning(mean, std, action_count, hidden)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    x = torch.as_tensor(observations, dtype=torch.float32)
    y = torch.as_tensor(actions, dtype=torch.int64)
    loss = torch.tensor(float('nan'))
    for _ in range(updates):
        batch = torch.as_tensor(rng.integers(0, len(x), batch_size))
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        logits = model(x)
        accuracy = float((logits.argmax(dim=1) == y).float().mean())
        full_loss = float(nn.functional.cross_entropy(logits, y))
    return model, {'accuracy_on_data': accuracy, 'loss_on_data': full_loss}


def run_offline(method: str, task: str, seed: int, runs: Path = RUNS,
                ssq_runs: Path = SSQ_RUNS, steps: int = STEPS, split: tuple[int, int] = TEST,
                updates: int = OFFLINE_UPDATES) -> dict:
    """`method` (OFFLINE) on mu's data, executed greedily behind mu's support on held-out
    episodes `split` (first, count). 'bc' and 'cql' learn from the replay of SSQ's run
    `ssq_runs`/<task>-task-<steps>-s<seed> (what SSQ learned from); 'iql', whose actions are
    continuous, from `steps` env steps of mu in the continuous version of the task, on the
    training episodes of run `seed` (what SAC's mu prior starts from)."""
    if method not in OFFLINE:
        raise ValueError(f'unknown offline method {method!r} (known: {", ".join(OFFLINE)})')
    continuous = method == 'iql'
    if continuous:
        config = continuous_task_config(task)
        episode_steps = max(config.schedule.train_episode_steps, config.sim.task.max_steps)
        source = (f'mu sampled, {steps} env steps on the training episodes of run {seed}, up '
                  f'to {episode_steps} steps each')
    else:
        folder = ssq_runs / f'{task}-task-{steps}-s{seed}'
        if not (folder / 'metrics.json').exists():
            raise FileNotFoundError(f'{folder}: no finished SSQ run to learn mu\'s data from '
                                    f'(bench.bench_tasks_train --tasks {task} --variants task '
                                    f'--seeds {seed} --steps {steps})')
        config = read_run_config(folder)
        source = str(folder)
    critic = config.learner.critic
    settings = {'method': method, 'task': task, 'seed': seed, 'steps': steps,
                'split': list(split), 'data': source, 'hidden': list(critic.hidden_sizes),
                'batch_size': critic.batch_size, 'gamma': critic.gamma, 'updates': updates,
                'normalised_observations': True,
                'lr': critic.lr if method == 'bc' else f'd3rlpy {D3RLPY_NAMES[method]} default'}
    if continuous:
        settings['action_kind'] = 'continuous'
    path = record_path(runs, 'test', method, task, steps, seed)
    if (record := cached(path, settings)) is not None:
        return record
    started = time.monotonic()
    problem = build_problem(config)  # after the cache check: building a task takes a second
    if continuous:
        data, unsafe_train = behavior_transitions(problem, seed, steps, episode_steps)
    else:
        data = ssq_transitions(config, folder)
        unsafe_train = json.loads((folder / 'metrics.json').read_text())['unsafe_states_train']
    if method == 'bc':
        model, fit = fit_behavior_cloning(data['obs'], data['action'].astype(np.int64).ravel(),
                                          problem.spaces.action_size, settings['hidden'],
                                          critic.batch_size, critic.lr, updates, seed)

        @torch.no_grad()
        def scores(obs: np.ndarray) -> np.ndarray:
            return model(torch.as_tensor(obs, dtype=torch.float32)[None])[0].numpy()

        policy = EvalPolicy('bc', True, scores=scores)
    else:
        import d3rlpy

        from bench.peers.d3rlpy_offline import (
            make_algorithm,
            make_dataset,
            offline_policy,
            train_offline,
        )
        torch.manual_seed(seed)
        d3rlpy.seed(seed)
        actions = problem.env.actions
        action_size = actions.low.size if continuous else problem.spaces.action_size
        dataset = make_dataset(split_episodes(data), not continuous, action_size)
        algo = make_algorithm(OFFLINE_ALGORITHMS[method], critic.batch_size, settings['hidden'],
                              critic.gamma, *((actions.low, actions.high) if continuous else ()),
                              normalise_observations=True)
        fit = train_offline(algo, dataset, updates, f'{task} {method} s{seed}', progress=False)
        policy = offline_policy(algo, method, not continuous, action_size)
    training = {**fit, 'transitions': int(len(data['obs'])),
                'wall_time_train_s': time.monotonic() - started,
                'unsafe_states_train': int(unsafe_train)}
    first, episodes = split
    result = evaluate(problem, policy, episodes, True, critic.gamma, first=first)
    return save(path, _record(method, task, seed, settings, training, result))


def _record(method: str, task: str, seed: int, settings: dict, training: dict,
            result: dict, unshielded: dict | None = None) -> dict:
    """A (method, task, seed) record; `unshielded`: the same episodes run without the shield
    (the peers that train without it)."""
    record = {'method': method, 'task': task, 'seed': seed,
              'steps': settings.get('steps', STEPS), 'settings': settings,
              'settings_sha256': settings_hash(settings), **code_at_start(),
              'training': training, 'eval_shielded': result}
    if unshielded is not None:
        record['eval_unshielded'] = unshielded
    if result['unsafe_states']:  # every action here passed mu's support: this would be a bug
        raise AssertionError(f'{method} {task} s{seed}: {result["unsafe_states"]} unsafe states')
    print(f'{task} {method} s{seed}: {sum(result["outcomes"])}/{result["episodes"]} '
          f'(episodes {settings["split"][0] + 1}-{sum(settings["split"])}), unsafe in training '
          f'{training["unsafe_states_train"]}, train {training["wall_time_train_s"]:.0f} s'
          + ('' if unshielded is None else f'; without the shield {sum(unshielded["outcomes"])}'
             f'/{unshielded["episodes"]}, {unshielded["unsafe_states"]} unsafe states'),
          flush=True)
    return record


def each(jobs: list, run) -> list[dict]:
    """`run(*job)` for every job, with a progress line (rate and ETA) after each."""
    started, out = time.monotonic(), []
    for k, job in enumerate(jobs):
        out.append(run(*job))
        elapsed = time.monotonic() - started
        print(f'[{k + 1}/{len(jobs)}, {elapsed / 60:.1f} min, ETA '
              f'{elapsed / (k + 1) * (len(jobs) - k - 1) / 60:.1f} min]', flush=True)
    return out


def tune_table(records: list[dict], method: str = 'dqn') -> list[dict]:
    """`method`'s grid points measured in `records`, best mean success first."""
    rows = []
    for point in GRIDS[method]:
        mine = {r['task']: r for r in records if r['method'] == f'{method}_{point}'}
        if not mine:
            continue
        rates = {t: float(np.mean(r['eval_shielded']['outcomes'])) for t, r in mine.items()}
        rows.append({'method': method, 'point': point, 'per_task': rates,
                     'mean': float(np.mean(list(rates.values()))),
                     'unsafe_states_train': int(sum(r['training']['unsafe_states_train']
                                                    for r in mine.values())),
                     'complete': set(TUNED) <= set(mine)})
    return sorted(rows, key=tuning_rank)


def tuning_rank(row: dict) -> tuple[float, float]:
    """A grid point's rank: the best mean success first and, between equal means, the fewest
    unsafe states in its training runs (a point measured before they were kept ranks last)."""
    return -row['mean'], row.get('unsafe_states_train', float('inf'))


def grid_rows(runs: Path, previous: dict | None) -> list[dict]:
    """Every method's tuned grid points, best first within each method: those with tune
    records under `runs`, and the previous table's other points (a grid extended in a later
    sitting keeps the points an earlier one measured), each carried row naming the commit of
    the table it came from."""
    records = saved_records(runs, 'tune')
    here = [row for method in GRIDS for row in tune_table(records, method)]
    measured = {(row['method'], row['point']) for row in here}
    carried_from = (previous or {}).get('machine', {}).get('code_commit')
    carried = [{**row, 'carried_from': row.get('carried_from', carried_from)}
               for row in (previous or {}).get('grid', [])
               if (row['method'], row['point']) not in measured]
    order = list(GRIDS)
    return sorted(here + carried, key=lambda r: (order.index(r['method']), *tuning_rank(r)))


def ssq_test_outcomes(paths: list[Path]) -> tuple[dict, dict, list[str]]:
    """SSQ's deployed policy per method (SSQ_VARIANTS) and (steps, task, seed), the per-task
    baselines, and the code commits, from bench_tasks_test outputs made on the test split."""
    ssq: dict[str, dict] = {}
    baselines, commits = {}, []
    for path in paths:
        data = json.loads(path.read_text())
        if (data['first_episode'], data['episodes']) != TEST:
            raise ValueError(f'{path} was made on episodes {data["first_episode"]}+'
                             f'{data["episodes"]}, not the test split {TEST}')
        for r in data['runs']:
            if r['variant'] in SSQ_VARIANTS and r['task'] in TASKS:
                ssq.setdefault(SSQ_VARIANTS[r['variant']], {})[
                    (r['steps'], r['task'], r['seed'])] = \
                    r['outcomes'][SSQ_DEPLOYED.get(r['variant'], 'policy')]
        baselines.update(data['baselines'])
        commits.append(data['machine']['code_commit'])
    return ssq, baselines, commits


def ssq_training(paths: list[Path]) -> dict[str, dict]:
    """SSQ's training numbers per method (SSQ_VARIANTS) and (steps, task, seed) from
    bench_tasks_train outputs. Training time leaves out the run's own evaluations where the
    run recorded them (wall_time_eval_s); 'includes_eval' says where it could not."""
    out: dict[str, dict] = {}
    for path in paths:
        for r in json.loads(path.read_text())['runs']:
            if r['variant'] in SSQ_VARIANTS and r['task'] in TASKS:
                evaluation = r.get('wall_time_eval_s')
                out.setdefault(SSQ_VARIANTS[r['variant']], {})[
                    (r['steps'], r['task'], r['seed'])] = {
                    'unsafe_states_train': r['unsafe_states_train'],
                    'wall_time_train_s': r['wall_time_s'] - (evaluation or 0.0),
                    'includes_eval': evaluation is None}
    return out


def carried_records(previous: dict, local: list[dict]) -> list[dict]:
    """Test records rebuilt from the rows of an earlier table (`previous`) for every peer
    (method, budget, task, seed) with no record in `local`: a sitting's records stay under its
    own runs/, its table is what is committed, and a group too costly for one sitting gathers
    its seeds over several (a seed run here replaces the carried one). The table's statistics
    need each seed's success count, its training violations and the group's mean training
    time, which the rows keep; each seed's outcomes come back as its successes, then its
    failures. Rows from before the tables kept seed numbers, commits and unshielded successes
    per seed held seeds 0, 1, ... of one commit, and their unshielded totals are spread over
    the seeds."""
    have = {(r['method'], r['steps'], r['task'], r['seed']) for r in local}
    as_record = {name: method for method, name in BASELINE_RECORDS.items()}
    # a group the earlier table itself carried keeps the commit of the table that had records
    first_seen = {tuple(entry[:3]): entry[3] for entry in previous.get('carried', [])}
    commit = previous.get('machine', {}).get('code_commit')
    out = []
    for row in previous.get('per_task', []):
        method = as_record.get(row['method'], row['method'])
        group = (method, row['steps'], row['task'])
        if (row['method'] in SSQ_VARIANTS.values()
                or (row['steps'] == 0 and method not in BASELINE_RECORDS)):
            continue  # SSQ's rows and mu's discrete baselines come from SSQ's own files
        rates = row.get('per_seed', [row['rate']])
        seeds = row.get('seed_ids', list(range(len(rates))))
        commits = [known or first_seen.get(group, commit)
                   for known in row.get('seed_commits', [None] * len(rates))]
        walls = row.get('wall_time_train_s_per_seed',
                        [row.get('wall_time_train_s')] * len(rates))
        episodes = row['episodes'] // len(rates)
        unsafe = row.get('unsafe_states_train_per_seed') or [None] * len(rates)
        alone = row.get('unshielded')
        for i, (seed, rate) in enumerate(zip(seeds, rates, strict=True)):
            if (*group, seed) in have:
                continue
            wins = round(rate * episodes)
            record = {'method': method, 'task': row['task'], 'seed': seed,
                      'steps': row['steps'], 'carried_from': commits[i],
                      'training': {'unsafe_states_train': unsafe[i],
                                   'wall_time_train_s': walls[i]},
                      'eval_shielded': {'outcomes': [1] * wins + [0] * (episodes - wins)}}
            if alone:
                if 'successes_per_seed' in alone:
                    alone_wins = alone['successes_per_seed'][i]
                else:
                    share, extra = divmod(alone['successes'], len(rates))
                    alone_wins = share + (i < extra)
                alone_episodes = alone['episodes'] // len(rates)
                record['eval_unshielded'] = {
                    'outcomes': [1] * alone_wins + [0] * (alone_episodes - alone_wins),
                    'episodes': alone_episodes,
                    'unsafe_states': alone['unsafe_states_per_seed'][i]}
            out.append(record)
    return out


def table(ssq_paths: list[Path], runs: Path = RUNS,
          ssq_train_paths: list[Path] = (), previous: dict | None = None) -> dict:
    """SSQ's test-split outcomes beside every peer record under `runs`/test (and those of the
    earlier table `previous` that `runs` lacks: carried_records), per budget; training
    violations and wall time per (method, budget) where known (SSQ's from the
    bench_tasks_train outputs `ssq_train_paths`). The IQM across tasks is over the tuned
    tasks (TUNED); a later task (costly) is reported per task only."""
    methods, baselines, commits = ssq_test_outcomes(ssq_paths)
    training = ssq_training(list(ssq_train_paths))
    measured_baselines, alone, origin = {}, {}, {}
    records = saved_records(runs, 'test')
    carried = carried_records(previous, records) if previous else []
    for r in records + carried:
        if r['method'] in BASELINE_RECORDS:
            measured_baselines.setdefault(r['task'], {})[BASELINE_RECORDS[r['method']]] = \
                r['eval_shielded']['outcomes']
            continue
        key = (r['steps'], r['task'], r['seed'])
        methods.setdefault(r['method'], {})[key] = r['eval_shielded']['outcomes']
        origin.setdefault(r['method'], {})[key] = r.get('carried_from', r.get('code_commit'))
        if 'eval_unshielded' in r:
            alone.setdefault(r['method'], {})[key] = r['eval_unshielded']
        if r['training']['unsafe_states_train'] is not None:
            training.setdefault(r['method'], {})[key] = {
                'unsafe_states_train': r['training']['unsafe_states_train'],
                'wall_time_train_s': r['training']['wall_time_train_s']}
    per_task, across = [], []
    for name, outcomes in methods.items():
        for steps in sorted({k[0] for k in outcomes}):
            scores = []
            for task in TASKS:
                keys = [k for k in sorted(outcomes) if k[:2] == (steps, task)]
                if not keys:
                    continue
                lists = [outcomes[k] for k in keys]
                wins, n = int(sum(map(sum, lists))), int(sum(map(len, lists)))
                per_seed = [float(np.mean(x)) for x in lists]
                row = {'method': name, 'steps': steps, 'task': task, 'seeds': len(lists),
                       'successes': wins, 'episodes': n, 'rate': wins / n,
                       'wilson95': wilson_interval(wins, n), 'per_seed': per_seed,
                       'seed_ids': [k[2] for k in keys],
                       'seed_commits': [origin.get(name, {}).get(k) for k in keys]}
                runs_alone = [v for k, v in sorted(alone.get(name, {}).items())
                              if k[:2] == (steps, task)]
                trained = training.get(name, {})
                row['unsafe_states_train_per_seed'] = [
                    trained[k]['unsafe_states_train'] for k in sorted(outcomes)
                    if k[:2] == (steps, task) and k in trained]
                row['wall_time_train_s_per_seed'] = [
                    trained[k]['wall_time_train_s'] if k in trained else None for k in keys]
                walls = [w for w in row['wall_time_train_s_per_seed'] if w is not None]
                row['wall_time_train_s'] = float(np.mean(walls)) if walls else None
                if runs_alone:  # the same episodes without the shield
                    row['unshielded'] = {
                        'successes': int(sum(sum(v['outcomes']) for v in runs_alone)),
                        'episodes': int(sum(v['episodes'] for v in runs_alone)),
                        'successes_per_seed': [int(sum(v['outcomes'])) for v in runs_alone],
                        'unsafe_states_per_seed': [v['unsafe_states'] for v in runs_alone]}
                per_task.append(row)
                if task in TUNED:
                    scores.append(per_seed)
            if scores:  # over the tuned tasks this (method, budget) ran on
                point, low, high = stratified_bootstrap_interval(scores)
                known = [v for k, v in training.get(name, {}).items()
                         if k[0] == steps and k in outcomes]  # every task's runs
                across.append({'method': name, 'steps': steps, 'iqm': point,
                               'tasks': [t for t in TUNED if any(
                                   k[:2] == (steps, t) for k in outcomes)],
                               'bootstrap95': (low, high), 'scores': scores,
                               'runs': sum(k[0] == steps for k in outcomes),
                               'training_runs_known': len(known),
                               'unsafe_states_train': sum(v['unsafe_states_train']
                                                          for v in known),
                               'unsafe_states_train_per_run': [v['unsafe_states_train']
                                                               for v in known],
                               'wall_time_train_s': float(np.mean(
                                   [v['wall_time_train_s'] for v in known]))
                               if known else None,
                               'wall_time_includes_eval': any(v.get('includes_eval')
                                                              for v in known)})
    learned = [r for r in per_task if r['steps']]  # the baselines join below, at steps 0
    for task, measured in measured_baselines.items():
        baselines.setdefault(task, {}).update(measured)
    for task in [t for t in TASKS if t in baselines]:
        for name in [n for n in ('behavior_greedy', 'behavior', 'oracle',
                                 *BASELINE_RECORDS.values()) if n in baselines[task]]:
            wins = int(sum(baselines[task][name]))
            n = len(baselines[task][name])
            per_task.append({'method': name, 'steps': 0, 'task': task, 'seeds': 1,
                             'successes': wins, 'episodes': n, 'rate': wins / n,
                             'wilson95': wilson_interval(wins, n)})
    ssq_at = {(a['method'], a['steps']): a for a in across
              if a['method'] in SSQ_VARIANTS.values()}
    for entry in across:  # against SSQ at the same budget, on the same tasks only
        for reference in SSQ_VARIANTS.values():
            here = ssq_at.get((reference, entry['steps']))
            if entry['method'] != reference and here and here['tasks'] == entry['tasks']:
                entry[f'probability_{reference}_beats'] = probability_of_improvement(
                    here['scores'], entry['scores'])
    return {'machine': {**provenance(), 'cpus': os.cpu_count()}, 'versions': versions(),
            'ssq_sources': [str(p) for p in ssq_paths], 'ssq_code_commits': commits,
            'ssq_train_sources': [str(p) for p in ssq_train_paths],
            'test_split': TEST, 'validation_split': VALIDATION,
            'grid': grid_rows(runs, previous),
            'carried': sorted({(r['method'], r['steps'], r['task'], r['carried_from'])
                               for r in carried}),
            # groups whose seeds come partly from runs/ and partly from the earlier table
            'mixed': sorted({(r['method'], r['steps'], r['task']) for r in carried}
                            & {(r['method'], r['steps'], r['task']) for r in records}),
            'per_task': per_task, 'across_tasks': across,
            'to_success': budget_to_success(learned, training)}


# The success rate `budget_to_success` asks of a budget (issue 15: steps and time to 90 %).
TARGET_SUCCESS = 0.9


def budget_to_success(per_task: list[dict], training: dict[str, dict],
                      target: float = TARGET_SUCCESS) -> list[dict]:
    """Per (method, task): the smallest budget measured whose pooled test success reaches
    `target` (None if none did) with its mean training wall time per run, and every budget
    measured (a method measured at one budget only says little about fewer steps)."""
    out = []
    for method, task in sorted({(r['method'], r['task']) for r in per_task}):
        rows = sorted((r for r in per_task if (r['method'], r['task']) == (method, task)),
                      key=lambda r: r['steps'])
        reached = next((r for r in rows if r['rate'] >= target), None)
        wall = None
        if reached is not None:
            times = [v['wall_time_train_s'] for k, v in training.get(method, {}).items()
                     if k[:2] == (reached['steps'], task)]
            wall = float(np.mean(times)) if times else None
        out.append({'method': method, 'task': task, 'target': target,
                    'budgets': [r['steps'] for r in rows],
                    'steps': None if reached is None else reached['steps'],
                    'wall_time_train_s': wall})
    return out


def versions() -> dict[str, str | None]:
    """The versions of the libraries the rows ran on (None: not installed here)."""
    out = {}
    for name in ('torch', 'mujoco', 'stable-baselines3', 'sb3-contrib', 'd3rlpy'):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def print_table(result: dict) -> None:
    for row in result['per_task']:
        low, high = row['wilson95']
        alone = row.get('unshielded')
        print(f"{row['task']:7} {row['method']:18} {row['steps']:6} "
              f"{row['successes']:4}/{row['episodes']:<4} {100 * row['rate']:5.1f} % "
              f"({100 * low:.0f}-{100 * high:.0f})" + ('' if alone is None else
              f"  unshielded {alone['successes']}/{alone['episodes']}, unsafe states per "
              f"seed {alone['unsafe_states_per_seed']}"))
    for a in result['across_tasks']:
        low, high = a['bootstrap95']
        against = ''.join(f"  P({m} run beats it) {a[f'probability_{m}_beats']:.2f}"
                          for m in SSQ_VARIANTS.values() if f'probability_{m}_beats' in a)
        print(f"IQM {a['method']:18} {a['steps']:6} {100 * a['iqm']:5.1f} % "
              f"({100 * low:.0f}-{100 * high:.0f}){against}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('phase', choices=('tune', 'test', 'offline', 'baselines', 'table'))
    parser.add_argument('--methods', nargs='+', default=list(OFFLINE), choices=OFFLINE,
                        help='offline: the peers on mu\'s data')
    parser.add_argument('--tasks', nargs='+', choices=TASKS,
                        help=f'default: {" ".join(TUNED)} for tune, {" ".join(TASKS)} else')
    parser.add_argument('--method', choices=sorted(GRIDS), default='dqn',
                        help='tune, test: the peer trained online (its grid: GRIDS)')
    parser.add_argument('--points', nargs='+', help='tune: the grid points to run (default: '
                        'all of the method\'s grid)')
    parser.add_argument('--point', help='test: a grid point, or best: the best one tune '
                        'measured')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument('--steps', type=int, default=STEPS,
                        help='test, offline: env steps of the runs (offline: of SSQ\'s run)')
    parser.add_argument('--ssq', type=Path, nargs='+',
                        help='table: bench_tasks_test outputs with SSQ\'s test-split outcomes '
                        f'(default: those of --previous, else {SSQ_TEST.name})')
    parser.add_argument('--ssq-train', type=Path, nargs='+',
                        help='table: bench_tasks_train outputs with SSQ\'s training numbers '
                        f'(default: those of --previous, else {SSQ_TRAIN.name})')
    parser.add_argument('--out', type=Path, default=RESULTS)
    parser.add_argument('--previous', type=Path, default=RESULTS,
                        help='table, tune, test --point best: the earlier table whose rows '
                        'and grid points runs/ has no records for are carried over (default: '
                        'the committed one)')
    parser.add_argument('--fresh', action='store_true',
                        help='only the records under runs/, nothing carried over')
    args = parser.parse_args(argv)
    args.tasks = args.tasks or list(TUNED if args.phase == 'tune' else TASKS)
    grid, run = GRIDS[args.method], functools.partial(run_online, args.method)
    for point in args.points or []:
        if point not in grid:
            parser.error(f'--points: {point!r} is not in the {args.method} grid '
                         f'({", ".join(grid)})')
    if args.point not in (None, 'best', *grid):
        parser.error(f'--point: {args.point!r} is neither best nor in the {args.method} grid '
                     f'({", ".join(grid)})')
    torch.set_num_threads(1)
    earlier = json.loads(args.previous.read_text()) if args.previous.exists() else {}
    # the grid as measured: runs/'s tune records and the points the earlier table carries
    tuned = [row for row in grid_rows(RUNS, None if args.fresh else earlier)
             if row['method'] == args.method]
    if args.phase == 'tune':
        each([('tune', t, p, 0) for p in args.points or grid for t in args.tasks], run)
        tuned = [row for row in grid_rows(RUNS, None if args.fresh else earlier)
                 if row['method'] == args.method]
        for row in tuned:
            print(f"{row['point']:16} mean {100 * row['mean']:5.1f} %  " + '  '.join(
                f'{t} {100 * v:.0f} %' for t, v in row['per_task'].items())
                + ('' if row['complete'] else '  (not every task yet)')
                + (f"  (carried from {row['carried_from'][:7]})" if 'carried_from' in row
                   else ''))
    elif args.phase == 'test':
        if args.point is None:
            parser.error('test needs --point (a grid point, or best: the one tune chose)')
        if args.point == 'best':
            tuned = [row for row in tuned if row['complete']]
            if not tuned:
                parser.error('--point best: no grid point was tuned on every task (run tune)')
            args.point = tuned[0]['point']
            print(f"the tuned {args.method} grid's best point: {args.point} "
                  f"({100 * tuned[0]['mean']:.1f} % on the validation episodes)", flush=True)
        each([('test', t, args.point, s, args.steps) for s in args.seeds for t in args.tasks],
             run)
    elif args.phase == 'baselines':
        each([(t,) for t in args.tasks], run_mu_continuous)
    elif args.phase == 'offline':
        each([(m, t, s, RUNS, SSQ_RUNS, args.steps) for m in args.methods
              for s in args.seeds for t in args.tasks], run_offline)
    else:
        ssq = args.ssq or [Path(p) for p in earlier.get('ssq_sources', [SSQ_TEST])]
        ssq_train = args.ssq_train or [Path(p) for p in earlier.get('ssq_train_sources',
                                                                    [SSQ_TRAIN])]
        result = table(ssq, RUNS, ssq_train, None if args.fresh else earlier)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + '\n')
        print_table(result)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
