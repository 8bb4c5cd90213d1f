"""docs/benchmarks.md (and its plots) generated from bench/results/peers.json, speed.json and
tasks_peers.json (the task suite, where present).

    .venv/bin/python -m bench.make_benchmarks_doc [--peers P] [--speed S] [--tasks-peers T]
                                                  [--out FILE.md]

Nothing in the document is typed by hand: every number comes from the JSON the benchmark
scripts wrote, with the command and the machine that produced it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bench.bench_peers import RESULTS as PEERS_RESULTS
from bench.bench_peers import PeerBenchConfig
from bench.bench_speed import RESULTS as SPEED_RESULTS
from bench.stats import wilson_interval
from ssq_ros.config import ConfigError, parse, to_dict
from ssq_ros.task.config import SimConfig
from ssq_ros.task.reach_avoid import TASK_REVISION
from ssq_ros.training.config import load_train_config, resolve_config_file

DOC = Path(__file__).resolve().parents[1] / 'docs' / 'benchmarks.md'
RUN_ALL_RESULTS = PEERS_RESULTS.with_name('run_all.json')  # written by bench/run_all.sh
HARNESS_RESULTS = PEERS_RESULTS.with_name('harness_check.json')  # bench_harness_check
DQN_HARNESS_RESULTS = HARNESS_RESULTS.with_name('harness_check_dqn.json')  # ... --algo dqn
ITERATION_RESULTS = HARNESS_RESULTS.with_name('iteration.json')  # bench_iteration
HOUR_S = 3600.0
FULL_COMMAND = 'make bench'  # bench/run_all.sh: bench_peers, bench_speed, this document
LABELS = {'ssq_discrete': 'SSQ (discrete, ssq_ros)', 'ssq_continuous': 'SSQ (continuous, ssq_ros)',
          'sac': 'SAC (SB3), reward only',
          'sac_shielded': 'SAC (SB3), trained behind the support shield',
          'sac_penalized': 'SAC (SB3), unsafe penalised',
          'dqn': 'DQN (SB3), reward only', 'dqn_shielded': 'DQN (SB3), trained behind the '
          'support shield',
          'iql': 'IQL (d3rlpy, offline)', 'cql': 'CQL (d3rlpy, offline)',
          'discrete_cql': 'DiscreteCQL (d3rlpy, offline)'}
EXPLORING = ('sac', 'sac_penalized', 'dqn')
SUITE_RESULTS = PEERS_RESULTS.with_name('tasks_peers.json')  # bench_tasks_peers table
SUITE_TASKS = ('wall', 'ushape', 'window', 'costly')
PROTOCOL_SEEDS = 5  # seeds per (method, task) the suite's protocol asks (issue 15)
# The SSQ rows a peer is compared with, in column order, and their column names.
SSQ_REFERENCES = {'ssq': 'SSQ', 'ssq_continuous': 'SSQ continuous',
                  'ssq_induced_collection': 'SSQ, induced collection',
                  'ssq_goal_free': 'SSQ, goal-free mu'}
SUITE_LABELS = {'ssq': "SSQ (ssq_ros): the critic's induced policy, its most likely action; "
                       'the task configs as they were when the runs were made (before 48fa1d2: '
                       'mu collected every training episode)',
                'ssq_continuous': 'SSQ (ssq_ros), continuous actions: its extracted policy, '
                                  'greedy, behind the shield',
                'ssq_induced_collection': "SSQ (ssq_ros), the induced policy collecting half "
                                          "of the training episodes inside mu's support "
                                          '(schedule.induced_collection 0.5)',
                'ssq_goal_free': "SSQ (ssq_ros) from mu that knows only safety (goal "
                                 'preference 0, uniform over its safe primitives), the induced '
                                 'policy collecting every training episode, alpha 0.1',
                'ssq_goal_free_avg': 'the same SSQ learner (new runs), deployed as the '
                                     'geometric mean of its exports at 20 000, 25 000 and '
                                     '30 000 steps (config/tasks/wall, ushape, window.yaml '
                                     'now; adopted by a rule fixed on validation episodes)',
                'ssq_goal_free_explore': "SSQ (ssq_ros) from mu that knows only safety, "
                                         'the induced policy collecting, alpha 0.1, a novelty '
                                         'bonus for the first half of the steps and 4 '
                                         'hindsight goals (costly.yaml until f38ea06)',
                'ssq_goal_free_explore_p4': "SSQ (ssq_ros) from mu that knows only safety and "
                                            "keeps the hand's heading (persistence 4), the "
                                            'tray observed, the induced policy collecting, '
                                            'alpha 0.1, a novelty bonus for the first half of '
                                            'the steps and 4 hindsight goals; the induced '
                                            'policy sampled, the last export',
                'ssq_goal_free_explore_p4_avg': 'the same SSQ runs deployed as the geometric '
                                                'mean of their exports from step 100 000 on '
                                                '(ssq-select --average; config/tasks/'
                                                'costly.yaml). Chosen on this split among '
                                                'three ways to deploy: 98.2 % (491 / 500) on '
                                                'episodes 331-430, never used',
                'ssq_goal_free_explore_u07': "SSQ (ssq_ros) from mu that knows only safety, "
                                             'the induced policy collecting, alpha 0.1, a '
                                             'novelty bonus for the first 70 % of the steps '
                                             'and 4 hindsight goals (costly.yaml before '
                                             '150 000 steps)',
                'behavior_continuous': 'sampled mu, continuous actions',
                'bc': "Behaviour cloning of mu's data",
                'cql': "Discrete CQL (d3rlpy) on mu's data",
                'iql': "IQL (d3rlpy) on mu's data in the continuous task (mu's own env steps), "
                       'behind mu\'s support',
                'behavior_greedy': 'greedy mu (goal preference 2)', 'behavior': 'sampled mu',
                'oracle': 'scripted oracle on mu\'s support'}


def _fmt(value, pattern: str) -> str:
    return '–' if value is None or (isinstance(value, float) and np.isnan(value)) \
        else pattern.format(value)


def outcome_table(rows: list[dict]) -> list[str]:
    lines = ['| method | actions | unsafe states, training | success | return | '
             'unsafe states, eval as is | success, shielded | return, shielded | '
             'unsafe states, eval shielded | shield interventions | value calibration error | '
             'training wall time [s] |', '|' + '---|' * 12]
    for row in rows:
        lines.append('| ' + ' | '.join([
            LABELS.get(row['method'], row['method']), row['action_kind'],
            f'{row["unsafe_train"]} / {row["env_steps_train"]} steps',
            _fmt(row['success'], '{:.0%}'), _fmt(row['return'], '{:.1f}'),
            str(row['unsafe_eval']), _fmt(row['success_shielded'], '{:.0%}'),
            _fmt(row['return_shielded'], '{:.1f}'), str(row['unsafe_eval_shielded']),
            _fmt(row['shield_interventions'], '{:.1%}'),
            _fmt(row['value_calibration_error'], '{:.3f}'),
            _fmt(row['wall_time_train_s'], '{:.0f}')]) + ' |')
    return lines


def caveats(peers: dict, equal_work: bool = False) -> list[str]:
    """What the table does not show, from its own records: the baselines without learning on
    the same held-out episodes, the shielded peers, the tuning and the resolution."""
    lines = ['## Read this before the goals', '']
    runs = {r['method']: r for r in peers['runs'] if r['seed'] == peers['config']['seeds'][0]}
    ssq = runs.get('ssq_discrete') or runs.get('ssq_continuous')
    if ssq is not None and 'trainer_metrics' in ssq:
        m = ssq['trainer_metrics']
        lines.append(
            f'- **Without learning**, on the same held-out episodes (seed '
            f'{ssq["seed"]}, from the SSQ run\'s metrics.json): mu greedy '
            f'{_fmt(m.get("success_rate_behavior_greedy"), "{:.0%}")}, mu sampled '
            f'{_fmt(m.get("success_rate_behavior"), "{:.0%}")}, the scripted oracle '
            f'{_fmt(m.get("success_rate_oracle"), "{:.0%}")}. On this task mu\'s goal '
            'preference does most of the work; the task suite (docs/tasks.md, '
            'docs/results.md) is where learning has to beat it.')
    shielded = [m for m in ('sac_shielded', 'dqn_shielded') if m in runs]
    if shielded:
        lines.append('- **The safety gap is the shield\'s.** Peers trained behind the same '
                     'support shield entered ' + ', '.join(
                         f'{LABELS[m]}: {runs[m]["training"]["unsafe_states_train"]}'
                         for m in shielded) + ' unsafe states: any learner whose actions pass '
                     'the support check is as safe while training as SSQ.')
    episodes = peers['config']['eval_episodes']
    low, high = wilson_interval(round(0.9 * episodes), episodes)
    lines += [f'- **Resolution.** {len(peers["config"]["seeds"])} seed(s) and {episodes} '
              f'episodes per number: 90 % measured is {100 * low:.0f}-{100 * high:.0f} % '
              '(Wilson 95 %).',
              '- **Tuning is not equal.** The peers run their libraries\' defaults with the '
              'batch, widths, discount and warm-up SSQ uses (DQN\'s defaults, e.g. a target '
              'update every 10 000 steps, suit Atari budgets, not 30 000 steps); SSQ\'s defaults '
              'were chosen on these same held-out episodes. The harness check below shows the '
              'SAC configuration itself is sound.',
              '- **The speed ratios compare different work**: one SSQ critic step against '
              'SAC\'s twin critics, actor and entropy update; SSQ\'s extraction and mu\'s '
              'support check per environment step are not counted there (the environment '
              'table has mu\'s cost)' + ('; the equal-work table below times whole training '
                                         'steps instead.' if equal_work else '.'), '']
    return lines


def goals(peers: dict, speed: dict | None, whole: dict | None) -> list[str]:
    """The stated goals, each with the measured numbers and whether it was met."""
    rows = {r['method']: r for r in peers['table']}
    lines = []
    ssq = [rows[m] for m in ('ssq_discrete', 'ssq_continuous') if m in rows]
    if ssq:
        unsafe = sum(r['unsafe_train'] for r in ssq)
        explorers = ', '.join(f'{LABELS[m]}: {rows[m]["unsafe_train"]}' for m in EXPLORING
                              if m in rows) or 'no exploring peer was run'
        lines.append(f'- Zero unsafe states while training: SSQ entered {unsafe} '
                     f'({"met" if unsafe == 0 else "NOT met"}); peers that explore: '
                     f'{explorers}.')
        peer_rows = [r for m, r in rows.items() if not m.startswith('ssq')]
        if peer_rows:
            # Each peer at its better mode (as is or shielded): the strongest comparison.
            best, best_mode = max(((r, mode) for r in peer_rows
                                   for mode in ('success', 'success_shielded')),
                                  key=lambda pair: pair[0][pair[1]])
            mine = max(ssq, key=lambda r: r['success_shielded'])
            gap = 100 * (best[best_mode] - mine['success_shielded'])
            episodes = peers['config']['eval_episodes'] * len(peers['config']['seeds'])
            mode = 'shielded' if best_mode == 'success_shielded' else 'as is'
            lines.append(f'- Success within 5 points of the best peer: best SSQ (shielded, '
                         f'{LABELS[mine["method"]]}) {mine["success_shielded"]:.0%}, best peer '
                         f'({LABELS[best["method"]]}, {mode}) {best[best_mode]:.0%}: '
                         f'{"met" if gap <= 5 else "NOT met"} (gap {gap:+.0f} points; one '
                         f'episode is {100 / episodes:.1f} points at {episodes} episodes).')
    if rows:
        as_is = ', '.join(f'{LABELS[m]} {r["unsafe_eval"]}' for m, r in rows.items())
        shielded = sum(r['unsafe_eval_shielded'] for r in rows.values())
        lines.append(f'- Unsafe states in evaluation, each policy as is: {as_is}; behind the '
                     f'support shield, all methods together: {shielded}.')
    if whole:
        minutes = whole['wall_time_s'] / 60
        lines.append(f'- The whole table by one command on a 2-core CPU in under an hour: '
                     f'`{whole["command"]}` took {minutes:.0f} min '
                     f'({"met" if whole["wall_time_s"] < HOUR_S else "NOT met"}).')
    ratios = (speed or {}).get('ratio_to_sac')
    if ratios:
        for kind, target in (('discrete', 2.0), ('continuous', 1.0)):
            value = ratios[f'ssq_{kind}']
            spread = speed.get('ratio_to_sac_range', {}).get(f'ssq_{kind}')
            rounds = '' if spread is None else \
                f', {spread[0]:.2f}-{spread[1]:.2f}x over the timing rounds'
            lines.append(f'- Learner updates/s, SSQ {kind} / SB3 SAC >= {target:g}x: '
                         f'{value:.2f}x ({"met" if value >= target else "NOT met"}{rounds}).')
    return lines


def speed_tables(speed: dict) -> list[str]:
    rounds = speed.get('updates_per_s_rounds')
    timing = '' if rounds is None else (
        f' Learners were timed in turn over {len(next(iter(rounds.values())))} rounds; '
        'medians, and ratios to SAC as the median of the ratios within a round.')
    lines = [f'Batch {speed["batch_size"]}, hidden layers {speed["hidden_sizes"]} for every '
             f'learner; an update includes drawing its minibatch.{timing}', '',
             '| learner | gradient updates / s |', '|---|---|']
    lines += [f'| {name} | {value:.0f} |' for name, value in speed['updates_per_s'].items()]
    lines += ['', '| environment | per second |', '|---|---|']
    lines += [f'| {name} | {value:,.0f} |' for name, value in speed['env'].items()]
    lines += ['', '| policy, one observation | p50 [µs] | p99 [µs] |', '|---|---|---|']
    lines += [f'| {name} | {v["p50_us"]:.0f} | {v["p99_us"]:.0f} |'
              for name, v in speed['latency'].items()]
    return lines


def _running_mean(values: list[float], window: int) -> np.ndarray:
    cumulative = np.cumsum(np.insert(np.asarray(values, dtype=float), 0, 0.0))
    end = np.arange(1, len(values) + 1)
    start = np.maximum(end - window, 0)
    return (cumulative[end] - cumulative[start]) / (end - start)


def plot_curves(peers: dict, path: Path) -> Path:
    """Return (mean of 20 episodes) and cumulative unsafe states against environment steps."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, (ax_return, ax_unsafe) = plt.subplots(1, 2, figsize=(12, 4.5))
    seed = min(r['seed'] for r in peers['runs'])
    for record in (r for r in peers['runs'] if r['seed'] == seed):
        curve = record['training']['curve']
        if not curve['steps']:
            continue
        offline = 'data_source' in record['training']
        label = LABELS.get(record['method'], record['method'])
        if offline:
            label += f' (data of {record["training"]["data_source"]})'
        style = {'ls': '--' if offline else '-', 'lw': 1.2 if offline else 1.8}
        (line,) = ax_return.plot(curve['steps'], _running_mean(curve['returns'], 20),
                                 label=label, **style)
        ax_unsafe.plot(curve['steps'], curve['unsafe_cumulative'], label=label, **style)
        evals = record['training'].get('eval_curve')
        if evals and evals['steps']:
            ax_return.plot(evals['steps'], evals['returns'], marker='o', ls=':',
                           color=line.get_color(),
                           label=f'{label}: its policy, held-out eval (shielded)')
    ax_return.set(xlabel='environment steps', ylabel='training episode return (mean of 20)',
                  title=f'Return while training (seed {seed})')
    ax_unsafe.set(xlabel='environment steps', ylabel='unsafe states entered (cumulative)',
                  title='Unsafe states while training (referee)')
    ax_unsafe.set_yscale('symlog', linthresh=1.0)  # 0 for SSQ next to thousands for SAC
    ax_return.legend(fontsize=6)
    ax_unsafe.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _load(machine: dict) -> str:
    load = machine.get('load_average_1_5_15min')
    return '' if load is None else (f', load average {load[0]:.1f} / {load[1]:.1f} / '
                                    f'{load[2]:.1f} (1/5/15 min) at the end of the run')


def stale_task_keys(peers: dict) -> list[str]:
    """The sim/task settings (dotted keys) where the run differs from the current default
    training config; ['task not recorded'] for a results file older than that record."""
    if 'task' not in peers:
        return ['task not recorded']
    keys = [] if peers.get('task_revision') == TASK_REVISION else \
        [f'task revision {peers.get("task_revision")} -> {TASK_REVISION}']
    current = to_dict(load_train_config(resolve_config_file('train_sim.yaml')).sim)
    recorded = peers['task']
    try:  # read as a config file is: a field added since takes its default (same behaviour)
        recorded = to_dict(parse(SimConfig, recorded, 'the recorded task'))
    except ConfigError:
        pass  # a field since removed or renamed: compared as recorded

    def differ(old: dict, new: dict, prefix: str) -> list[str]:
        keys = []
        for key in sorted(set(old) | set(new)):
            a, b = old.get(key), new.get(key)
            if isinstance(a, dict) and isinstance(b, dict):
                keys += differ(a, b, f'{prefix}{key}.')
            elif a != b:
                keys.append(f'{prefix}{key}: {a} -> {b}')
        return keys

    return keys + differ(recorded, current, 'sim.')


def whole_run(peers: dict, run_all: dict | None) -> dict | None:
    """bench/run_all.sh's record if it made these peer results (same arguments), else None."""
    if not run_all:
        return None
    arguments = peers['command'].split('bench.bench_peers', 1)[1].strip()
    made_here = run_all['command'].split('run_all.sh', 1)[1].strip() == arguments
    return run_all if made_here else None


def harness_section(harness: dict) -> list[str]:
    """bench_harness_check's result: our SAC configuration on a public reach task."""
    published = harness['published']
    lines = ['## Is the peer harness sound?', '',
             'Command: `.venv/bin/python -m bench.bench_harness_check`. SB3 SAC with the '
             'hyperparameters bench_peers gives it (batch, widths, discount and warm-up of '
             '`config/train_sim_continuous.yaml`, SB3 defaults otherwise) on Gymnasium\'s '
             f'{harness["env"]}, its deterministic policy on unseen episodes:', '',
             '| seed | steps | SAC return | random policy | published SAC | train wall time [s] |',
             '|---|---|---|---|---|---|']
    for run in harness['runs']:
        lines.append(f'| {run["seed"]} | {run["steps"]} | {run["mean_return"]:.2f} +- '
                     f'{run["sd_return"]:.2f} ({run["episodes"]} episodes) | '
                     f'{run["random_mean_return"]:.2f} | {published["mean_return"]} +- '
                     f'{published["sd"]} | {run["wall_time_train_s"]:.0f} |')
    lines += ['', f'Published: {published["source"]}.', '']
    return lines


def dqn_harness_section(harness: dict) -> list[str]:
    """bench_harness_check --algo dqn: the task suite's DQN peer on CartPole."""
    published = harness['published']
    lines = ['Command: `.venv/bin/python -m bench.bench_harness_check --algo dqn`. The task '
             'suite\'s DQN peer (`MaskedDQN`: its own update and action choice) on '
             f'{harness["env"]}, behind a support that allows every action, where it must be '
             'SB3\'s DQN: with the settings of the published run (RL Baselines3 Zoo: zoo) and '
             'with the task suite\'s (SSQ\'s width, batch, discount, learning rate, warm-up, '
             'soft target, 8-step targets: suite); zoo_sb3 is SB3\'s own DQN class with the '
             'zoo\'s settings on the same seeds, the reference. Greedy policy on unseen '
             'episodes:', '',
             '| seed | settings | steps | DQN return | random policy | published DQN | '
             'train wall time [s] |', '|---|---|---|---|---|---|---|']
    for run in harness['runs']:
        lines.append(f'| {run["seed"]} | {run["configuration"]} | {run["steps"]} | '
                     f'{run["mean_return"]:.1f} +- {run["sd_return"]:.1f} '
                     f'({run["episodes"]} episodes) | {run["random_mean_return"]:.1f} | '
                     f'{published["mean_return"]:.0f} +- {published["sd"]:.0f} '
                     f'({published["steps"]} steps) | {run["wall_time_train_s"]:.0f} |')
    medians = {}
    for run in harness['runs']:
        medians.setdefault(run['configuration'], []).append(run['mean_return'])
    lines += ['', 'Median return over seeds: ' + ', '.join(
        f'{name} {np.median(values):.1f} ({len(values)} seeds)'
        for name, values in medians.items()) + '.', '',
        f'Published: {published["source"]}.', '']
    return lines


ITERATION_LABELS = {
    'ssq_discrete': "SSQ, discrete: mu's support check, env step, critic update, policy export",
    'dqn': "DQN restricted to mu's support: support check, env step, DQN update",
    'ssq_continuous': 'SSQ, continuous: K samples of mu checked, env step, critic update over '
                      'K samples, extraction amortised',
    'sac': "SAC behind mu's support: support check of its proposal, env step, twin critics + "
           'actor + entropy coefficient'}


def iteration_section(iteration: dict) -> list[str]:
    """bench_iteration: whole training runs per env step, SSQ against the shielded peers."""
    lines = ['## Equal work: a whole training step', '',
             f'Command: `{iteration["command"]}`{_load(iteration["machine"])}. Each method '
             f'trains from scratch for {iteration["steps"]} env steps on the '
             f'{iteration["task"]} task, rounds: {len(iteration["rounds"])} (the methods one '
             'after the other in each), one torch thread; SSQ\'s time leaves out its '
             'evaluations, the peers\' is SB3\'s learn(). The ratio is taken within a round, '
             'then the median over rounds.', '',
             '| method: what one env step costs | ms per env step | updates per run |',
             '|---|---|---|']
    for method, value in iteration['seconds_per_env_step'].items():
        updates = iteration['rounds'][0][method]['updates']
        lines.append(f'| {ITERATION_LABELS[method]} | {1e3 * value:.2f} | {updates} |')
    lines += ['', '| SSQ / the peer with its action set | ratio of time per env step '
              '(range over rounds) |', '|---|---|']
    for pair, ratio in iteration['ratios'].items():
        low, high = ratio['range']
        lines.append(f'| {pair} | {ratio["median"]:.2f}x ({low:.2f}-{high:.2f}) |')
    return lines + ['']


# Each online peer's grid on the page: (method, its name, the levers its points name).
GRID_LEVERS = (('dqn', 'DQN', 'exploration, n-step, training episode steps'),
               ('sac', 'SAC', 'warm-up, n-step, training episode steps'),
               ('sac_lagrangian', 'SAC-Lagrangian', "warm-up, multiplier's learning rate"),
               ('tqc_her', 'TQC+HER', 'warm-up, training episode steps, relabelled goals'),
               ('sac_her', "SAC+HER behind mu's support",
                'warm-up, training episode steps, relabelled goals'))


def suite_label(method: str) -> str:
    """The task-suite table's name for a method of bench_tasks_peers."""
    if method.startswith('dqn_'):
        explore, n, length = method[4:].split('_')
        return (f"DQN (SB3) restricted to mu's support, "
                f"{'mu' if explore == 'mu' else 'uniform'}-drawn exploration, "
                f'{n[1:]}-step targets, {length[1:]}-step training episodes')
    if method.startswith('sac_lagrangian_'):
        warmup, rate = method[len('sac_lagrangian_'):].split('_')
        prior = "mu's prior (warm-up drawn by mu)" if warmup == 'mu' else 'uniform warm-up'
        return (f'SAC-Lagrangian (on SB3), no shield in training, {prior}, multiplier '
                f'learning rate {rate[2:]}, cost limit 0')
    if method.startswith(('tqc_her_', 'sac_her_')):
        # the HER grids' points: warm-up, episode length and, where not 4, the goals ('_k8')
        kind, point = method[:3], method[len('tqc_her_'):]
        warmup, length, *goals = point.split('_')
        relabelled = f"{goals[0][1:] if goals else 4} relabelled goals per transition"
        prior = "mu's prior (warm-up drawn by mu)" if warmup == 'mu' else 'uniform warm-up'
        if kind == 'tqc':
            return (f'TQC + HER (sb3-contrib, {relabelled}), reward only, no shield in '
                    f'training, {prior}, {length[1:]}-step training episodes')
        return (f"SAC (SB3) behind mu's support with HER ({relabelled}, as SSQ's costly "
                f'runs), continuous actions, {prior}, one-step targets, {length[1:]}-step '
                'training episodes')
    if method.startswith('sac_'):
        warmup, n, length = method[4:].split('_')
        prior = "with mu's prior (warm-up drawn by mu)" if warmup == 'mu' else 'uniform warm-up'
        return (f"SAC (SB3) behind mu's support, continuous actions, {prior}, "
                f'{n[1:]}-step targets, {length[1:]}-step training episodes')
    return SUITE_LABELS[method]


def _percent(rate: float) -> str:
    return f'{100 * rate:.1f} %'


def to_success_lines(suite: dict, tasks: list[str]) -> list[str]:
    """The smallest budget measured at which each learner reaches the target behind the
    shield, with its training time per run (bench_tasks_peers.budget_to_success)."""
    entries = suite.get('to_success', [])
    if not entries:
        return []
    found = {(e['method'], e['task']): e for e in entries}
    methods = sorted({e['method'] for e in entries},
                     key=lambda m: (not m.startswith('ssq'), m))

    def cell(entry: dict | None) -> str:
        if entry is None:
            return '-'
        if entry['steps'] is None:
            return f"not by {max(entry['budgets']):,}".replace(',', ' ')
        wall = entry['wall_time_train_s']
        return f"{entry['steps']:,}".replace(',', ' ') + (f' ({wall:.0f} s)' if wall else '')

    target = round(100 * entries[0]['target'])
    lines = [f'**Environment steps and training time to {target} % behind the shield**: the '
             f'smallest budget measured whose pooled test success reaches {target} % (training '
             'wall time per run at it, as in the table above).', '',
             '| method | ' + ' | '.join(tasks) + ' | budgets measured |',
             '|---|' + '---|' * (len(tasks) + 1)]
    for method in methods:
        budgets = sorted({b for e in entries if e['method'] == method for b in e['budgets']})
        lines.append(f'| {suite_label(method)} | '
                     + ' | '.join(cell(found.get((method, t))) for t in tasks) + ' | '
                     + ', '.join(f'{b:,}'.replace(',', ' ') for b in budgets) + ' |')
    return lines + ['']


def _suite_cell(row: dict | None) -> str:
    """A per-task success cell: the pooled rate and its Wilson 95 % interval."""
    if row is None:
        return '-'
    low, high = row['wilson95']
    return f"{_percent(row['rate'])} ({100 * low:.0f}-{100 * high:.0f})"


def suite_section(suite: dict, plot_name: str | None) -> list[str]:
    """SSQ against peers restricted to mu's support on the task suite (bench_tasks_peers)."""
    first, count = suite['test_split']
    rows = {(r['method'], r['steps'], r['task']): r for r in suite['per_task']}
    tasks = sorted({r['task'] for r in suite['per_task']}, key=SUITE_TASKS.index)
    lines = ['## The task suite: SSQ against peers restricted to mu\'s support', '',
             'Command: `.venv/bin/python -m bench.bench_tasks_peers table` (the runs: its '
             'docstring). Each task\'s goal lies where greedy goal-seeking fails '
             '(docs/tasks.md). Every row acts behind mu\'s support: a discrete policy takes '
             'its best primitive that mu allows; a continuous one\'s action runs if the support '
             'check accepts it, else mu\'s nearest safe sample. SAC-Lagrangian and TQC+HER '
             'train without it (their training violations are their own); they too are judged '
             'behind it here, and on their own in the table after. Test split: held-out episodes '
             f'{first + 1}-{first + count}, {count} per run, never used for any choice; per '
             'task, all seeds\' episodes pooled (Wilson 95 % interval); across tasks, the '
             'interquartile mean over (task, seed) runs with a stratified-bootstrap 95 % '
             'interval, and the probability that a random SSQ run beats a random run of the '
             'row on the same task (0.5: a tie).', '']
    if suite.get('versions'):
        lines += ['Libraries when the table was made: ' + ', '.join(
            f'{name} {version}' for name, version in suite['versions'].items() if version)
            + '.', '']
    carried = sorted({commit[:7] for *_, commit in suite.get('carried', []) if commit})
    if carried:
        groups = {tuple(entry[:3]) for entry in suite['carried']}
        mixed = suite.get('mixed', [])
        lines += [f"{len(groups)} (method, budget, task) groups of peer runs come, in whole or "
                  f"in part, from the table of an earlier sitting (commit {', '.join(carried)}; "
                  'its per-seed counts; `carried` in the JSON lists them), whose libraries may '
                  'have differed.' + (
                      f' In {len(mixed)} of them, seeds run in this sitting join the carried '
                      'ones (`seed_ids` and `seed_commits` in the JSON say which came from '
                      'where).' if mixed else ''), '']
    short = sorted((r['method'], r['steps'], r['task'], r['seeds']) for r in suite['per_task']
                   if r['steps'] and r['seeds'] < PROTOCOL_SEEDS)
    if short:
        lines += [f"Below the protocol's {PROTOCOL_SEEDS} seeds per (method, task), so probes "
                  'rather than comparisons: ' + '; '.join(
                      f"{suite_label(method)} ({steps} steps, {task}): {seeds} "
                      f"seed{'s' if seeds > 1 else ''}"
                      for method, steps, task, seeds in short) + '.', '']
    budgets = {r['steps'] for r in suite['per_task'] if r['steps']}
    for steps in sorted(budgets, reverse=True):
        entries = [a for a in suite['across_tasks'] if a['steps'] == steps]
        # a method run on none of the tuned tasks has no IQM: its rows are per task only
        untuned = sorted({r['method'] for r in suite['per_task'] if r['steps'] == steps}
                         - {a['method'] for a in entries})
        # P(SSQ beats) against every SSQ row of this budget (discrete, continuous, ...)
        references = [m for m in SSQ_REFERENCES
                      if any(f'probability_{m}_beats' in a for a in entries)]
        with_eval = sorted({a['method'] for a in entries
                            if a.get('wall_time_includes_eval', a['method'] == 'ssq')})
        lines += [f'**{steps} environment steps per run.** The IQM and P(SSQ beats) are over '
                  'the tasks the settings were tuned on (wall, ushape, window) that a row has, '
                  'P only where SSQ ran the same ones; costly, tuned for by neither, is '
                  'reported per task only. Training wall time leaves out every evaluation'
                  + (f' except in the rows of {", ".join(with_eval)}: those runs were made '
                     'before ssq-train timed its evaluations apart, and their time includes '
                     'the run\'s final evaluation' if with_eval else '') + '.', '',
                  '| method | ' + ' | '.join(tasks) + ' | IQM (95 % CI) | '
                  + ''.join(f'P({SSQ_REFERENCES[m]} beats) | ' for m in references)
                  + 'runs | unsafe states, training | training wall time per run |',
                  '|---|' + '---|' * (len(tasks) + 4 + len(references))]
        for a in sorted(entries, key=lambda e: (not e['method'].startswith('ssq'),
                                                -e['iqm'])):
            cells = [_suite_cell(rows.get((a['method'], steps, task))) for task in tasks]
            low, high = a['bootstrap95']
            versus = ''.join(
                f"{a[f'probability_{m}_beats']:.2f} | " if f'probability_{m}_beats' in a
                else '- | ' for m in references)
            unsafe = (f"{a['unsafe_states_train']} in {a['training_runs_known']} runs"
                      if a['training_runs_known'] else 'not recorded')
            wall = (f"{a['wall_time_train_s']:.0f} s" if a['wall_time_train_s'] is not None
                    else '-')
            name = suite_label(a['method'])
            lines.append(f"| {name} | " + ' | '.join(cells)
                         + f" | {100 * a['iqm']:.1f} % ({100 * low:.0f}-{100 * high:.0f}) | "
                         f"{versus}{a['runs']} | {unsafe} | {wall} |")
        for method in untuned:
            mine = [rows[(method, steps, t)] for t in tasks if (method, steps, t) in rows]
            cells = [_suite_cell(rows.get((method, steps, t))) for t in tasks]
            violations = [v for r in mine for v in r.get('unsafe_states_train_per_seed', [])]
            unsafe = (f'{sum(violations)} in {len(violations)} runs' if violations
                      else 'not recorded')
            walls = [r['wall_time_train_s'] for r in mine if r.get('wall_time_train_s')]
            wall = f'{np.mean(walls):.0f} s' if walls else '-'
            lines.append(f'| {suite_label(method)} | ' + ' | '.join(cells) + ' | - | '
                         + '- | ' * len(references)
                         + f"{sum(r['seeds'] for r in mine)} | {unsafe} | {wall} |")
        lines.append('')
    lines += to_success_lines(suite, tasks)
    alone = [r for r in suite['per_task'] if 'unshielded' in r]
    if alone:
        lines += ['Trained without the shield: the same test episodes run on their own, and '
                  'the referee\'s unsafe states per run (training, then these episodes).', '',
                  '| method | steps | task | success behind the shield | success on its own | '
                  'unsafe states in training, per seed | unsafe states in the test episodes, '
                  'per seed |', '|---|---|---|---|---|---|---|']
        for r in sorted(alone, key=lambda r: (r['method'], -r['steps'],
                                              SUITE_TASKS.index(r['task']))):
            own = r['unshielded']
            during = r.get('unsafe_states_train_per_seed', '-')
            lines.append(f"| {suite_label(r['method'])} | {r['steps']} | {r['task']} | "
                         f"{r['successes']}/{r['episodes']} | {own['successes']}/"
                         f"{own['episodes']} | {during} | {own['unsafe_states_per_seed']} |")
        lines.append('')
    baseline_rows = [m for m in ('behavior_greedy', 'behavior', 'oracle', 'behavior_continuous')
                     if any((m, 0, t) in rows for t in tasks)]
    if baseline_rows:
        lines += ['Without learning, on the same episodes (they do not depend on a seed):', '',
                  '| executor | ' + ' | '.join(tasks) + ' |', '|---|' + '---|' * len(tasks)]
        for m in baseline_rows:
            lines.append(f'| {SUITE_LABELS[m]} | ' + ' | '.join(
                f"{rows[(m, 0, t)]['successes']}/{rows[(m, 0, t)]['episodes']}"
                if (m, 0, t) in rows else '-' for t in tasks) + ' |')
        lines.append('')
    first_v, count_v = suite['validation_split']
    for method, name, levers in GRID_LEVERS:
        grid = [g for g in suite.get('grid', []) if g.get('method', 'dqn') == method]
        if not grid:
            continue
        carried = [g for g in grid if g.get('carried_from')]
        mixed = 0 < len(carried) < len(grid)
        earlier = ', '.join(sorted({g['carried_from'][:7] for g in carried}))
        lines += [f'**The {name} grid ({len(grid)} points).** Every point trained on seed 0 '
                  f'of each task for 10 000 steps, judged on held-out episodes {first_v + 1}-'
                  f'{first_v + count_v} (the episodes SSQ\'s settings were chosen on); the '
                  'best mean is the row above.' + (
                      ' Points marked * were measured in an earlier sitting (carried over '
                      f'from the table made at commit {earlier}), the others in this one.'
                      if mixed else '') + (
                      ' Measured in an earlier sitting (carried over from the table made at '
                      f'commit {earlier}).' if carried and not mixed else '') + (
                      ' Between equal means, fewer unsafe states in training rank first.'),
                  '',
                  f'| {levers} | ' + ' | '.join(tasks)
                  + ' | mean |', '|---|' + '---|' * (len(tasks) + 1)]
        for g in grid:
            mark = ' *' if mixed and g.get('carried_from') else ''
            lines.append(f"| {g['point']}{mark} | " + ' | '.join(
                _percent(g['per_task'][t]) if t in g['per_task'] else '-' for t in tasks)
                + f" | {_percent(g['mean'])} |")
        lines.append('')
    if plot_name:
        lines += [f'![success against environment steps on the task suite]({plot_name})', '']
    return lines


def plot_suite(suite: dict, path: Path) -> Path | None:
    """Success on the test split against env steps, per task and method (points: seeds'
    mean; bars: the pooled Wilson interval); None when only one budget was measured."""
    budgets = sorted({r['steps'] for r in suite['per_task'] if r['steps']})
    if len(budgets) < 2:
        return None
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    tasks = sorted({r['task'] for r in suite['per_task']}, key=SUITE_TASKS.index)
    methods = sorted({r['method'] for r in suite['per_task'] if r['steps']},
                     key=lambda m: (m != 'ssq', m))
    # one colour per method on every panel (the cycle would restart per panel), and a log
    # axis: the budgets span 2 500 to 100 000 steps
    palette = plt.get_cmap('tab20')
    colours = {m: palette(i % palette.N) for i, m in enumerate(methods)}
    figure, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks) + 2.6, 3.6),
                                sharex=True, sharey=True)
    for axis, task in zip(np.atleast_1d(axes), tasks, strict=True):
        for method in methods:
            mine = sorted((r for r in suite['per_task']
                           if r['method'] == method and r['task'] == task and r['steps']),
                          key=lambda r: r['steps'])
            if not mine:
                continue
            x = [r['steps'] for r in mine]
            y = np.array([r['rate'] for r in mine])
            bounds = np.array([r['wilson95'] for r in mine])
            axis.errorbar(x, 100 * y, yerr=100 * np.abs(bounds.T - y), marker='o',
                          capsize=3, label=method, color=colours[method])
        oracle = [r for r in suite['per_task'] if r['method'] == 'oracle' and r['task'] == task]
        greedy = [r for r in suite['per_task']
                  if r['method'] == 'behavior_greedy' and r['task'] == task]
        for rows, style, label in ((oracle, ':', 'oracle'), (greedy, '--', 'greedy mu')):
            if rows:
                axis.axhline(100 * rows[0]['rate'], linestyle=style, color='grey', label=label)
        axis.set_title(task)
        axis.set_xlabel('environment steps')
        axis.set_xscale('log')
        axis.set_ylim(-3, 103)
    np.atleast_1d(axes)[0].set_ylabel('success on the test split [%]')
    legend = {}  # every method once, whichever panels it ran on
    for axis in np.atleast_1d(axes):
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    figure.legend(legend.values(), legend.keys(), fontsize=7, loc='center right')
    figure.tight_layout(rect=(0, 0, 1 - 2.4 / figure.get_figwidth(), 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def render(peers: dict, speed: dict | None, plot_name: str,
           run_all: dict | None = None, harness: dict | None = None,
           suite: dict | None = None, suite_plot: str | None = None,
           dqn_harness: dict | None = None, iteration: dict | None = None) -> str:
    config, machine = peers['config'], peers['machine']
    default = PeerBenchConfig()
    reduced = config['steps'] < default.steps or len(config['seeds']) < len(default.seeds)
    whole = whole_run(peers, run_all)
    lines = ['# Benchmarks: ssq_ros against SB3 SAC/DQN and d3rlpy IQL/CQL', '',
             '<!-- generated by `.venv/bin/python -m bench.make_benchmarks_doc` from '
             'bench/results/*.json; do not edit by hand -->', '',
             f'Machine: {machine["cpu"]}, {machine["logical_cores"]} logical cores, torch '
             f'threads {machine["torch_threads"]}, Python {machine["python"]}{_load(machine)}; '
             + ', '.join(f'{k} {v}' for k, v in peers.get('versions', {}).items()) + '.', '',
             '## Safety and outcome on the reach-avoid task', '',
             f'Command: `{peers["command"]}` (total {peers["total_wall_time_s"] / 60:.0f} min).',
             '',
             f'Seeds {config["seeds"]}, {config["steps"]} environment steps per online run, '
             f'{config["eval_episodes"]} held-out episodes per evaluation, unsafe penalty '
             f'{config["penalty"]:g} per step for penalised SAC. ' + (
                 f'Methods ran {config["jobs"]} at a time, each in a process of its own with '
                 f'{config["torch_threads"]} torch thread(s); wall times are measured under '
                 'that load.' if 'jobs' in config else 'Methods ran one after another.')]
    if reduced:
        lines += ['', f'**Reduced budget.** This table was made with {config["steps"]} steps '
                  f'and {len(config["seeds"])} seed(s), less than the default '
                  f'({default.steps} steps), because the shared 2-core machine could not run '
                  f'the full one in time. The full table: `{FULL_COMMAND}`.']
    stale = stale_task_keys(peers)
    if stale:
        lines += ['', '**Stale.** This table was made on another task than the current '
                  '`config/train_sim.yaml` describes (' + ', '.join(stale) + '); its numbers '
                  f'do not describe the package as it is. Rerun: `{FULL_COMMAND}`.']
    if peers.get('skipped'):
        lines += ['', f'Left out (bench extra missing): {", ".join(peers["skipped"])}.']
    lines += [''] + outcome_table(peers['table']) + [
        '', '- *unsafe states*: control periods the simulator\'s independent referee judged '
        'unsafe (MuJoCo geometry and joint state, no margins), summed over seeds.',
        '- *success, return, unsafe states, eval as is*: the trained policy alone on the '
        'held-out starts and goals of `ssq-train` (SSQ\'s extracted policy unmasked, every '
        'action allowed).',
        '- *shielded*: the same policy behind the support shield of ssq_ros: a discrete policy '
        'takes its best action that mu allows; a continuous one runs if the support check '
        'accepts it, else mu\'s safe sample nearest to it. *Interventions*: share of steps the '
        'shield replaced the policy\'s action.',
        '- *trained behind the support shield* (SAC, DQN): every action the learner proposed '
        'while training ran only if mu\'s support accepted it, else mu\'s nearest safe sample '
        '(continuous) or mu\'s own draw (discrete) ran, and the replay stored the action that '
        'ran: the peer gets the same safety mechanism SSQ has.',
        '- *value calibration error*: mean |Q(s,a) - G| / mean |G| against discounted '
        'Monte-Carlo returns; SSQ: its shielded policy\'s rollouts in ssq-train\'s final '
        'evaluation; peers: their own rollouts as is (SAC\'s soft Q also counts its entropy '
        'bonus).',
        '- IQL/CQL/DiscreteCQL learn offline from the replay of the SSQ run named in the plot '
        '(the transitions SSQ learned from, collected by the safe behavior controller), so '
        'their training counts are those of that collection; their wall time is the offline '
        'training alone.',
        ''] + caveats(peers, iteration is not None) + ['## Goals', ''] + goals(peers, speed, whole)
    lines += ['', f'![return and unsafe states against environment steps]({plot_name})', '',
              'The training curves of SSQ and of the offline methods are the safe behavior '
              'controller\'s episodes: in SSQ only mu acts while learning; SAC\'s are its '
              'own exploring policy\'s. The markers are SSQ\'s extracted policy at each of '
              'its evaluations during training, behind the shield on the held-out episodes.',
              '']
    if suite:
        lines += suite_section(suite, suite_plot)
    if harness:
        lines += harness_section(harness)
    if dqn_harness:
        lines += dqn_harness_section(dqn_harness)
    if iteration:
        lines += iteration_section(iteration)
    if speed:
        lines += ['## Speed', '', f'Command: `{speed["command"]}`{_load(speed["machine"])}.',
                  ''] + speed_tables(speed)
    else:
        lines += ['## Speed', '', 'Not measured: bench/results/speed.json is missing '
                  '(`.venv/bin/python -m bench.bench_speed`).']
    if whole:
        took = (f'The run above took {whole["wall_time_s"] / 60:.0f} min for the whole command '
                f'(`{whole["command"]}`, {config["steps"]} steps, {len(config["seeds"])} '
                'seed(s)) on the machine described there.')
    else:
        took = (f'The peer table above took {peers["total_wall_time_s"] / 60:.0f} min for '
                f'{config["steps"]} steps and {len(config["seeds"])} seed(s); the whole '
                'command was not timed with it.')
    lines += ['', '## Reproduce', '', f'`{FULL_COMMAND}` (bench/run_all.sh: both tables, '
              'then this page) runs the default budget '
              f'({default.steps} steps, seeds {list(default.seeds)}, {default.jobs} methods at a '
              f'time), meant to fit in an hour on a 2-core CPU. {took} A reduced one: '
              '`make bench BENCH_ARGS="--steps 10000 --eval-episodes 20"`. Single tables: '
              '`.venv/bin/python -m bench.bench_peers`, `.venv/bin/python -m bench.bench_speed`, '
              'then `.venv/bin/python -m bench.make_benchmarks_doc`. Each method\'s output '
              'and progress: runs/bench_peers/logs/.', '']
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--peers', type=Path, default=PEERS_RESULTS)
    parser.add_argument('--speed', type=Path, default=SPEED_RESULTS)
    parser.add_argument('--run-all', type=Path, default=RUN_ALL_RESULTS,
                        help="bench/run_all.sh's wall time record")
    parser.add_argument('--harness', type=Path, default=HARNESS_RESULTS)
    parser.add_argument('--dqn-harness', type=Path, default=DQN_HARNESS_RESULTS)
    parser.add_argument('--iteration', type=Path, default=ITERATION_RESULTS)
    parser.add_argument('--tasks-peers', type=Path, default=SUITE_RESULTS,
                        help='bench_tasks_peers table output (the task suite)')
    parser.add_argument('--out', type=Path, default=DOC)
    args = parser.parse_args(argv)
    try:
        peers = json.loads(args.peers.read_text())
        speed = json.loads(args.speed.read_text()) if args.speed.exists() else None
        run_all = json.loads(args.run_all.read_text()) if args.run_all.exists() else None
        harness = json.loads(args.harness.read_text()) if args.harness.exists() else None
        dqn_harness = (json.loads(args.dqn_harness.read_text())
                       if args.dqn_harness.exists() else None)
        iteration = (json.loads(args.iteration.read_text())
                     if args.iteration.exists() else None)
        suite = (json.loads(args.tasks_peers.read_text()) if args.tasks_peers.exists()
                 else None)
    except (OSError, json.JSONDecodeError) as exc:
        print(f'make_benchmarks_doc: cannot read results ({exc}); run bench_peers first',
              file=sys.stderr)
        return 2
    plot = plot_curves(peers, args.out.with_name(args.out.stem + '_curves.png'))
    suite_plot = None if suite is None else plot_suite(
        suite, args.out.with_name(args.out.stem + '_tasks.png'))
    args.out.write_text(render(peers, speed, plot.name, run_all, harness, suite,
                               None if suite_plot is None else suite_plot.name, dqn_harness,
                               iteration))
    print(f'wrote {args.out} and {plot}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
