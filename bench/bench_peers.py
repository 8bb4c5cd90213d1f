"""Safety and outcome on the reach-avoid task: ssq_ros against SB3 SAC and d3rlpy IQL/CQL.

    .venv/bin/python -m bench.bench_peers [--seeds 0 1] [--steps 30000] [--eval-episodes 30]
                                          [--jobs 2]

Every method gets the same env steps, episode seeds, batch size, network width and discount;
the referee in the simulator counts unsafe states during training and evaluation. Prints the
table and writes bench/results/peers.json (run folders under runs/bench_peers/). SSQ runs need only
ssq_ros; the peers need the `bench` extra and are left out, with a note, without it.

Each (method, seed) runs in a process of its own, `--jobs` at a time with `--torch-threads`
each (default 2 x 1, one per core of the 2-core reference machine); its output and progress
bar go to runs/bench_peers/logs/<method>-seed<N>.log, and a status line here shows each
running task's latest progress (rate, ETA) every minute.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import multiprocessing.connection
import sys
import time
import traceback
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from bench.peers.common import evaluate, machine_info
from bench.peers.ssq import (
    split_episodes,
    ssq_config,
    ssq_curve,
    ssq_eval_curve,
    ssq_policy,
    ssq_transitions,
    train_ssq,
)
from ssq_ros.config import ConfigError, parse, spec, to_dict
from ssq_ros.task.reach_avoid import TASK_REVISION
from ssq_ros.training.config import TrainConfig
from ssq_ros.training.problem import build_problem

RESULTS = Path(__file__).resolve().parent / 'results' / 'peers.json'
METHODS = ('ssq_discrete', 'ssq_continuous', 'sac', 'sac_shielded', 'sac_penalized', 'dqn',
           'dqn_shielded', 'iql', 'cql', 'discrete_cql')
LIBRARY = {'sac': 'stable_baselines3', 'sac_shielded': 'stable_baselines3',
           'sac_penalized': 'stable_baselines3', 'dqn': 'stable_baselines3',
           'dqn_shielded': 'stable_baselines3', 'iql': 'd3rlpy',
           'cql': 'd3rlpy', 'discrete_cql': 'd3rlpy'}
# Offline methods learn from the replay of this SSQ run.
DATA_SOURCE = {'iql': 'ssq_continuous', 'cql': 'ssq_continuous', 'discrete_cql': 'ssq_discrete'}
# Start order when several tasks are ready: the longest chain (continuous SSQ, then CQL on its
# data) first, the shortest tasks last to fill the gaps.
SCHEDULE_ORDER = ('ssq_continuous', 'cql', 'ssq_discrete', 'iql', 'sac_shielded',
                  'sac_penalized', 'sac', 'dqn_shielded', 'dqn',
                  'discrete_cql')
# Seconds between the status lines while tasks run.
STATUS_PERIOD_S = 60.0


@dataclass
class PeerBenchConfig:
    """The benchmark's budget; the learners' shared settings come from config/train_sim.yaml."""

    seeds: tuple[int, ...] = spec((0,), low=0, high=2**31 - 1,
                                  doc='training seeds; every method runs every seed')
    steps: int = spec(30_000, low=10, high=10_000_000,
                      doc='environment steps per online run (SSQ, SAC)')
    eval_episodes: int = spec(30, low=1, high=10_000,
                              doc='held-out episodes per evaluation (as is, and shielded)')
    penalty: float = spec(10.0, low=0.0, high=1e6,
                          doc='sac_penalized: reward subtracted per unsafe step')
    offline_updates: int = spec(0, low=0, high=10_000_000,
                                doc='gradient steps of IQL/CQL; 0 = as many as the SSQ run '
                                    'whose data they use made')
    methods: tuple[str, ...] = spec(METHODS, choices=METHODS, doc='methods to run')
    torch_threads: int = spec(1, low=1, high=256, doc='torch CPU threads for every method')
    jobs: int = spec(2, low=1, high=64,
                     doc='tasks (method, seed) run at once, each in a process of its own; '
                         'jobs x torch_threads should not exceed the cores')


def parse_args(argv: list[str] | None) -> tuple[PeerBenchConfig, argparse.Namespace]:
    defaults = PeerBenchConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=list(defaults.seeds))
    parser.add_argument('--steps', type=int, default=defaults.steps)
    parser.add_argument('--eval-episodes', type=int, default=defaults.eval_episodes)
    parser.add_argument('--penalty', type=float, default=defaults.penalty)
    parser.add_argument('--offline-updates', type=int, default=defaults.offline_updates)
    parser.add_argument('--methods', nargs='+', default=list(defaults.methods))
    parser.add_argument('--torch-threads', type=int, default=defaults.torch_threads)
    parser.add_argument('--jobs', type=int, default=defaults.jobs)
    parser.add_argument('--ssq-config', help='training YAML both SSQ runs start from (a path '
                        'or a config/ name); default: train_sim.yaml and '
                        'train_sim_continuous.yaml')
    parser.add_argument('--runs', type=Path, default=Path('runs') / 'bench_peers',
                        help='where the SSQ run folders and logs/ (one log per task) go')
    parser.add_argument('--out', type=Path, default=RESULTS, help='results JSON')
    parser.add_argument('--no-progress', action='store_true')
    args = parser.parse_args(argv)
    values = {k: getattr(args, k) for k in ('seeds', 'steps', 'eval_episodes', 'penalty',
                                            'offline_updates', 'methods', 'torch_threads',
                                            'jobs')}
    return parse(PeerBenchConfig, values, 'command line'), args


def available(method: str) -> bool:
    library = LIBRARY.get(method)
    return library is None or importlib.util.find_spec(library) is not None


@dataclass(frozen=True)
class Task:
    """One method on one seed, run in a process of its own."""

    method: str
    seed: int

    @property
    def name(self) -> str:
        return f'{self.method}-seed{self.seed}'

    @property
    def source(self) -> Task | None:
        """The SSQ run whose replay an offline method learns from."""
        return Task(DATA_SOURCE[self.method], self.seed) if self.method in DATA_SOURCE else None


def plan(cfg: PeerBenchConfig) -> list[Task]:
    """Every task the selected methods need (an offline method adds the SSQ run that collects
    its data), longest chain first: a free worker takes the first ready task, so CQL, the
    slowest peer, starts as soon as its data exists and the workers finish close together."""
    tasks = {Task(m, seed) for seed in cfg.seeds for m in cfg.methods}
    tasks |= {t.source for t in tasks if t.source is not None}
    return sorted(tasks, key=lambda t: (SCHEDULE_ORDER.index(t.method), t.seed))


def run_task(cfg: PeerBenchConfig, task: Task, runs: Path, progress: bool,
             ssq_base: str | None = None) -> dict | None:
    """Train and evaluate one method on one seed; its record (None for an SSQ run made only
    to collect an offline method's data)."""
    if task.method.startswith('ssq_'):
        return _run_ssq(cfg, task, runs, progress, ssq_base)
    if LIBRARY.get(task.method) == 'stable_baselines3':
        return _run_sb3(cfg, task, progress, ssq_base)
    return _run_offline(cfg, task, runs, progress, ssq_base)


def _eval_schedule(cfg: PeerBenchConfig) -> dict:
    return {'final_eval_episodes': cfg.eval_episodes, 'eval_episodes': min(cfg.eval_episodes, 20)}


def _ssq_run_config(cfg: PeerBenchConfig, method: str, seed: int,
                    ssq_base: str | None) -> TrainConfig:
    return ssq_config(method.split('_')[1], seed, cfg.steps, _eval_schedule(cfg), ssq_base)


def _run_ssq(cfg: PeerBenchConfig, task: Task, runs: Path, progress: bool,
             ssq_base: str | None) -> dict | None:
    config = _ssq_run_config(cfg, task.method, task.seed, ssq_base)
    out = runs / task.name
    print(f'[seed {task.seed}] {task.method}: ssq-train -> {out}', flush=True)
    metrics = train_ssq(config, out, progress)
    if task.method not in cfg.methods:
        return None
    problem = build_problem(config)
    policy = ssq_policy(out, task.method)
    return _record(task.method, task.seed, config.action_kind, problem, policy, config, cfg, {
        'unsafe_states_train': metrics['unsafe_states_train'],
        'env_steps': metrics['env_steps'], 'updates': metrics['updates'],
        'min_margin_train': metrics['min_margin_train'],
        'wall_time_train_s': metrics['wall_time_s'],
        'success_rate_behavior': metrics['success_rate_behavior'],
        'curve': ssq_curve(out).as_dict(), 'eval_curve': ssq_eval_curve(out)},
        calibration=metrics['value_calibration_error_policy'],
        extra={'trainer_metrics': metrics})


def _run_sb3(cfg: PeerBenchConfig, task: Task, progress: bool, ssq_base: str | None) -> dict:
    """SAC (continuous actions) or DQN (the discrete primitives), with the networks, batch,
    discount and warm-up of the SSQ run of the same action kind; `_shielded` trains behind
    mu's support, `sac_penalized` pays cfg.penalty per unsafe step."""
    algorithm = task.method.split('_')[0]
    kind = 'continuous' if algorithm == 'sac' else 'discrete'
    config = _ssq_run_config(cfg, f'ssq_{kind}', task.seed, ssq_base)
    critic = config.learner.critic
    penalty = cfg.penalty if task.method == 'sac_penalized' else 0.0
    shielded = task.method.endswith('_shielded')
    print(f'[seed {task.seed}] {task.method}: SB3 {algorithm.upper()}, penalty {penalty}, '
          f'{"behind" if shielded else "without"} the support shield', flush=True)
    train_problem = build_problem(config)
    shared = (critic.batch_size, list(critic.hidden_sizes), critic.gamma,
              config.schedule.learning_starts)
    if algorithm == 'sac':
        from bench.peers.sb3_sac import sac_hyperparameters, train_sac
        hyper = sac_hyperparameters(*shared)
        policy, training = train_sac(train_problem, task.seed, cfg.steps, hyper, penalty,
                                     task.method, progress, shielded)
    else:
        from bench.peers.sb3_dqn import dqn_hyperparameters, train_dqn
        hyper = dqn_hyperparameters(*shared)
        policy, training = train_dqn(train_problem, task.seed, cfg.steps, hyper, task.method,
                                     progress, shielded)
    problem = build_problem(config, train_problem.setup)
    return _record(task.method, task.seed, kind, problem, policy, config, cfg, training,
                   extra={'hyperparameters': hyper, 'penalty': penalty,
                          'shielded_training': shielded})


def _run_offline(cfg: PeerBenchConfig, task: Task, runs: Path, progress: bool,
                 ssq_base: str | None) -> dict:
    from bench.peers.d3rlpy_offline import (
        make_algorithm,
        make_dataset,
        offline_policy,
        train_offline,
    )
    source = task.source
    config = _ssq_run_config(cfg, source.method, task.seed, ssq_base)
    out = runs / source.name
    metrics = json.loads((out / 'metrics.json').read_text())
    critic = config.learner.critic
    problem = build_problem(config)
    discrete = problem.discrete
    rows = split_episodes(ssq_transitions(config, out))
    dataset = make_dataset(rows, discrete, problem.spaces.action_size)
    updates = cfg.offline_updates or metrics['updates']
    print(f'[seed {task.seed}] {task.method}: d3rlpy, {updates} updates on '
          f'{len(rows["rewards"])} rows of {source.method}', flush=True)
    torch.manual_seed(task.seed)
    d3rlpy_seed(task.seed)
    actions = problem.env.actions
    algo = make_algorithm(task.method, critic.batch_size, list(critic.hidden_sizes),
                          critic.gamma, None if discrete else actions.low,
                          None if discrete else actions.high)
    training = train_offline(algo, dataset, updates, task.method, progress)
    training.update({'unsafe_states_train': metrics['unsafe_states_train'],
                     'env_steps': metrics['env_steps'],
                     'min_margin_train': metrics['min_margin_train'],
                     'data_source': source.method,
                     'curve': ssq_curve(out).as_dict()})
    policy = offline_policy(algo, task.method, discrete, problem.spaces.action_size)
    return _record(task.method, task.seed, 'discrete' if discrete else 'continuous', problem,
                   policy, config, cfg, training)


class TaskFailedError(RuntimeError):
    pass


def _task_process(cfg: PeerBenchConfig, task: Task, runs: Path, progress: bool,
                  ssq_base: str | None, log: Path, record_file: Path) -> None:
    """A worker process: one task, its output (progress bars included) into `log`, its record
    into `record_file`; exit status 1 with the traceback in the log when it fails."""
    torch.set_num_threads(cfg.torch_threads)
    with open(log, 'w', buffering=1) as stream, redirect_stdout(stream), \
            redirect_stderr(stream):
        try:
            record = run_task(cfg, task, runs, progress, ssq_base)
        except BaseException:
            traceback.print_exc()
            sys.exit(1)
    record_file.write_text(json.dumps(record) + '\n')


def _last_progress(log: Path, size: int = 4096) -> str:
    """The newest progress-bar state (or line) a task wrote to its log."""
    try:
        with open(log, 'rb') as stream:
            stream.seek(max(0, log.stat().st_size - size))
            tail = stream.read().decode(errors='replace')
    except OSError:
        return ''
    parts = [p.strip() for p in tail.replace('\r', '\n').split('\n') if p.strip()]
    return parts[-1][:200] if parts else ''


def run_tasks(cfg: PeerBenchConfig, tasks: list[Task], runs: Path, progress: bool,
              ssq_base: str | None = None) -> list[dict]:
    """`tasks` (in `plan` order), `cfg.jobs` at a time, each in a fresh (spawned) process so
    torch threads, MuJoCo and library state never leak between methods. Logs go to
    runs/logs/<task>.log; a failed task stops the others and raises TaskFailedError."""
    logs = runs / 'logs'
    logs.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context('spawn')
    waiting, finished, records = list(tasks), set(), []
    running: dict[int, tuple[Task, multiprocessing.Process, float]] = {}
    started = time.monotonic()

    def stamp() -> str:
        return f'[bench_peers {(time.monotonic() - started) / 60:5.1f} min]'

    while waiting or running:
        ready = [t for t in waiting if t.source is None or t.source in finished]
        if not ready and not running:
            raise ValueError('tasks wait for data sources that are not among them: '
                             + ', '.join(f'{t.name} needs {t.source.name}' for t in waiting))
        for task in ready:
            if len(running) >= cfg.jobs:
                break
            files = (logs / f'{task.name}.log', logs / f'{task.name}.json')
            files[1].unlink(missing_ok=True)
            process = context.Process(target=_task_process, name=task.name,
                                      args=(cfg, task, runs, progress, ssq_base, *files))
            process.start()
            running[process.sentinel] = (task, process, time.monotonic())
            waiting.remove(task)
            print(f'{stamp()} started {task.name} (log {files[0]})', flush=True)
        ended = multiprocessing.connection.wait(list(running), timeout=STATUS_PERIOD_S)
        if not ended and progress:
            print(f'{stamp()} {len(finished)}/{len(tasks)} done; ' + '; '.join(
                f'{t.name}: {_last_progress(logs / f"{t.name}.log")}'
                for t, _, _ in running.values()), flush=True)
        for sentinel in ended:
            task, process, since = running.pop(sentinel)
            process.join()
            log, record_file = logs / f'{task.name}.log', logs / f'{task.name}.json'
            if process.exitcode != 0:
                for _, other, _ in running.values():
                    other.terminate()
                    other.join()
                raise TaskFailedError(f'{task.name} failed (exit status {process.exitcode}); '
                                      f'the end of {log}:\n' + log.read_text()[-3000:])
            finished.add(task)
            record = json.loads(record_file.read_text())
            summary = '' if record is None else ': ' + row_text(summarise([record])[0])
            print(f'{stamp()} {task.name} done in {(time.monotonic() - since) / 60:.1f} min'
                  f'{summary}', flush=True)
            if record is not None:
                records.append(record)
    return sorted(records, key=lambda r: (r['seed'], METHODS.index(r['method'])))


def d3rlpy_seed(seed: int) -> None:
    import d3rlpy
    d3rlpy.seed(seed)


def _record(method, seed, kind, problem, policy, train_config, cfg, training, calibration=None,
            extra=None) -> dict:
    """Evaluate `policy` as is and shielded; one JSON-ready record."""
    gamma = train_config.learner.critic.gamma
    tail = train_config.schedule.calibration_tail
    started = time.monotonic()
    as_is = evaluate(problem, policy, cfg.eval_episodes, False, gamma, tail)
    shielded = evaluate(problem, policy, cfg.eval_episodes, True, gamma)
    if calibration is None:
        calibration = as_is.pop('value_calibration_error', None)
    record = {'method': method, 'seed': seed, 'action_kind': kind, 'training': training,
              'eval_as_is': as_is, 'eval_shielded': shielded,
              'value_calibration_error': calibration,
              'eval_wall_time_s': time.monotonic() - started}
    record.update(extra or {})
    print(f'[seed {seed}] {method}: ' + row_text(summarise([record])[0]), flush=True)
    return record


def summarise(records: list[dict]) -> list[dict]:
    """One row per method: unsafe counts summed over seeds, the rest averaged."""
    rows = []
    for method in METHODS:
        mine = [r for r in records if r['method'] == method]
        if not mine:
            continue
        calibration = [r['value_calibration_error'] for r in mine
                       if r['value_calibration_error'] is not None]
        rows.append({
            'method': method, 'action_kind': mine[0]['action_kind'], 'seeds': len(mine),
            'unsafe_train': sum(r['training']['unsafe_states_train'] for r in mine),
            'env_steps_train': sum(r['training']['env_steps'] for r in mine),
            'success': _mean(r['eval_as_is']['success_rate'] for r in mine),
            'return': _mean(r['eval_as_is']['return'] for r in mine),
            'unsafe_eval': sum(r['eval_as_is']['unsafe_states'] for r in mine),
            'success_shielded': _mean(r['eval_shielded']['success_rate'] for r in mine),
            'return_shielded': _mean(r['eval_shielded']['return'] for r in mine),
            'unsafe_eval_shielded': sum(r['eval_shielded']['unsafe_states'] for r in mine),
            'shield_interventions': _mean(r['eval_shielded']['intervention_rate']
                                          for r in mine),
            'value_calibration_error': _mean(calibration) if calibration else None,
            'wall_time_train_s': _mean(r['training']['wall_time_train_s'] for r in mine),
        })
    return rows


def _mean(values) -> float:
    return float(np.mean(list(values)))


COLUMNS = (('method', '{}'), ('action_kind', '{}'), ('unsafe_train', '{}'),
           ('success', '{:.0%}'), ('return', '{:.1f}'), ('unsafe_eval', '{}'),
           ('success_shielded', '{:.0%}'), ('return_shielded', '{:.1f}'),
           ('unsafe_eval_shielded', '{}'), ('shield_interventions', '{:.1%}'),
           ('value_calibration_error', '{:.3f}'), ('wall_time_train_s', '{:.0f}'))


def row_text(row: dict) -> str:
    return '  '.join(f'{key}={fmt.format(row[key]) if row[key] is not None else "-"}'
                     for key, fmt in COLUMNS[2:])


def print_table(rows: list[dict]) -> None:
    cells = [[key for key, _ in COLUMNS]] + [
        [fmt.format(row[key]) if row[key] is not None else '-' for key, fmt in COLUMNS]
        for row in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    for line in cells:
        print('  '.join(c.rjust(w) for c, w in zip(line, widths, strict=True)))


def main(argv: list[str] | None = None) -> int:
    try:
        cfg, args = parse_args(argv)
    except ConfigError as exc:
        print(f'bench_peers: {exc}', file=sys.stderr)
        return 2
    torch.set_num_threads(cfg.torch_threads)
    skipped = [m for m in cfg.methods if not available(m)]
    if skipped:
        print(f'bench_peers: leaving out {", ".join(skipped)}: install the bench extra '
              "(pip install -e '.[bench]')", file=sys.stderr)
        cfg = parse(PeerBenchConfig, {**to_dict(cfg), 'methods': [m for m in cfg.methods
                                                                   if m not in skipped]})
    try:  # a bad --ssq-config fails here, not in every worker
        for kind in ('discrete', 'continuous'):
            ssq_config(kind, cfg.seeds[0], cfg.steps, None, args.ssq_config)
    except (OSError, ValueError, ConfigError) as exc:
        print(f'bench_peers: --ssq-config: {exc}', file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        records = run_tasks(cfg, plan(cfg), args.runs, not args.no_progress, args.ssq_config)
    except TaskFailedError as exc:
        print(f'bench_peers: {exc}', file=sys.stderr)
        return 1
    rows = summarise(records)
    versions = {name: version(name) for name in ('torch', 'mujoco', 'gymnasium',
                                                 'stable-baselines3', 'd3rlpy')
                if importlib.util.find_spec(name.replace('-', '_')) is not None}
    command = ['.venv/bin/python -m bench.bench_peers'] + (sys.argv[1:] if argv is None
                                                           else argv)
    # The task every method ran on; make_benchmarks_doc flags a table made on another one.
    task = to_dict(ssq_config('discrete', cfg.seeds[0], cfg.steps, None, args.ssq_config).sim)
    result = {'command': ' '.join(command),
              'config': to_dict(cfg), 'task': task, 'task_revision': TASK_REVISION,
              'skipped': skipped,
              'machine': machine_info(cfg.torch_threads), 'versions': versions,
              'total_wall_time_s': time.monotonic() - started, 'table': rows,
              'runs': records}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + '\n')
    print_table(rows)
    print(f'wrote {args.out} ({result["total_wall_time_s"]:.0f} s)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
