"""Speed: learner updates/s (SSQ's critic vs SB3 SAC vs d3rlpy IQL), env steps/s against raw
mj_step, and policy inference latency for one observation. Prints a table and writes
bench/results/speed.json.

    .venv/bin/python -m bench.bench_speed [--quick] [--torch-threads 1]

Every learner trains on the same random transitions with the batch size and hidden widths of
config/train_sim.yaml, one torch thread unless told otherwise; an update includes drawing its
minibatch from the learner's own replay. The learners are timed in turn, 5 rounds of 400
updates each, and report medians; the ratio to SAC is the median of the ratios within a round.
Peers need the `bench` extra and are left out without it.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bench.bench_sim import env_throughput, raw_physics
from bench.peers.common import machine_info
from bench.peers.ssq import ssq_config
from ssq_ros.deploy.executor import ShieldedExecutor
from ssq_ros.deploy.export import export_policy, load_exported_policy
from ssq_ros.training.learner import OnlineLearner
from ssq_ros.training.problem import ArmProblem, build_problem

RESULTS = Path(__file__).resolve().parent / 'results' / 'speed.json'
FILL = 10_000  # transitions in every replay before timing
ROUNDS = 5  # learner timings interleaved round by round; medians reported


def random_transitions(problem: ArmProblem, count: int, rng: np.random.Generator) -> dict:
    """Transitions with valid shapes and supports; their values do not change the cost."""
    spaces = problem.spaces
    obs = rng.normal(size=(count + 1, spaces.obs_dim)).astype(np.float32)
    data = {'obs': obs[:-1], 'next_obs': obs[1:],
            'reward': rng.normal(size=count).astype(np.float32),
            'done': (rng.random(count) < 0.005).astype(np.float32)}
    if spaces.discrete:
        data['action'] = rng.integers(spaces.action_size, size=count)
        support = rng.random((count, spaces.action_size)) * (rng.random(
            (count, spaces.action_size)) < 0.7)
        support[:, 0] = 1.0  # hold is always allowed
        data['next_support'] = support / support.sum(axis=1, keepdims=True)
    else:
        low, high = np.array(spaces.action_low), np.array(spaces.action_high)
        data['action'] = rng.uniform(low, high, (count, spaces.action_size))
        data['next_support'] = rng.uniform(low, high, (count, spaces.num_samples,
                                                       spaces.action_size))
    return data


def rates(runs: dict[str, Callable[[int], object]], updates: int, rounds: int
          ) -> dict[str, list[float]]:
    """Updates per second of each run(n), measured `rounds` times in turn (A B C, A B C, ...)
    after a warm-up of 20, so that a slow spell of a shared machine hits every learner alike
    and ratios can be taken round by round."""
    for run in runs.values():
        run(20)
    measured: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            started = time.perf_counter()
            run(updates)
            measured[name].append(updates / (time.perf_counter() - started))
    return measured


def ssq_learner(problem: ArmProblem, config, data: dict) -> OnlineLearner:
    learner = OnlineLearner(problem.spaces, config.learner, seed=0)
    learner.replay.add_batch(data['obs'], data['action'], data['reward'], data['next_obs'],
                             data['done'], data['next_support'])
    return learner


def sac_model(problem: ArmProblem, config, data: dict):
    from stable_baselines3 import SAC
    from stable_baselines3.common.logger import configure

    from bench.peers.sb3_sac import sac_hyperparameters
    critic = config.learner.critic
    hyper = sac_hyperparameters(critic.batch_size, list(critic.hidden_sizes), critic.gamma, 0)
    model = SAC('MlpPolicy', problem.env, seed=0, device='cpu', buffer_size=FILL, **hyper)
    model.set_logger(configure(None, []))
    buffer, count = model.replay_buffer, len(data['obs'])
    buffer.observations[:count, 0] = data['obs']
    buffer.next_observations[:count, 0] = data['next_obs']
    buffer.actions[:count, 0] = model.policy.scale_action(data['action'])
    buffer.rewards[:count, 0] = data['reward']
    buffer.dones[:count, 0] = data['done']
    buffer.pos, buffer.full = count % buffer.buffer_size, count >= buffer.buffer_size
    return model


def iql_algorithm(problem: ArmProblem, config, data: dict):
    from bench.peers.d3rlpy_offline import make_algorithm, make_dataset
    critic = config.learner.critic
    count = len(data['obs'])
    timeouts = np.zeros(count, dtype=np.float32)
    timeouts[199::200] = 1.0
    timeouts[-1] = 1.0
    rows = {'observations': data['obs'], 'actions': data['action'].astype(np.float32),
            'rewards': data['reward'], 'terminals': np.zeros(count, np.float32),
            'timeouts': timeouts}
    dataset = make_dataset(rows, False, problem.spaces.action_size)
    actions = problem.env.actions
    algo = make_algorithm('iql', critic.batch_size, list(critic.hidden_sizes), critic.gamma,
                          actions.low, actions.high)
    algo.build_with_dataset(dataset)
    return algo, dataset


def latency(call: Callable[[], object], repeats: int) -> dict:
    """p50/p99 of one call in microseconds, after 20 warm-up calls."""
    for _ in range(20):
        call()
    times = np.empty(repeats)
    for i in range(repeats):
        started = time.perf_counter_ns()
        call()
        times[i] = time.perf_counter_ns() - started
    return {'p50_us': float(np.percentile(times, 50) / 1e3),
            'p99_us': float(np.percentile(times, 99) / 1e3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='short timings (smoke run)')
    parser.add_argument('--torch-threads', type=int, default=1)
    parser.add_argument('--out', type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.torch_threads < 1:
        parser.error('--torch-threads must be at least 1')
    torch.set_num_threads(args.torch_threads)
    scale = 0.05 if args.quick else 1.0
    updates, repeats = max(int(2000 * scale), 10), max(int(2000 * scale), 50)
    has_sb3 = importlib.util.find_spec('stable_baselines3') is not None
    has_d3rlpy = importlib.util.find_spec('d3rlpy') is not None
    rng = np.random.default_rng(0)
    configs = {kind: ssq_config(kind, 0, 1000) for kind in ('discrete', 'continuous')}
    problems = {kind: build_problem(c) for kind, c in configs.items()}
    data = {kind: random_transitions(problems[kind], FILL, rng) for kind in problems}
    critic = configs['discrete'].learner.critic
    result: dict = {'command': ' '.join(['.venv/bin/python -m bench.bench_speed']
                                        + (sys.argv[1:] if argv is None else argv)),
                    'machine': machine_info(args.torch_threads),
                    'batch_size': critic.batch_size, 'hidden_sizes': list(critic.hidden_sizes),
                    'updates_per_s': {}, 'env': {}, 'latency': {}}
    print(f'learner updates/s, batch {critic.batch_size}, hidden {list(critic.hidden_sizes)}',
          flush=True)
    learners = {kind: ssq_learner(problems[kind], configs[kind], data[kind]) for kind in data}
    runs: dict[str, Callable[[int], object]] = {
        f'ssq_{kind}': learner.train for kind, learner in learners.items()}
    if has_sb3:
        sac = sac_model(problems['continuous'], configs['continuous'], data['continuous'])
        runs['sb3_sac'] = lambda n: sac.train(gradient_steps=n, batch_size=critic.batch_size)
    if has_d3rlpy:
        iql, dataset = iql_algorithm(problems['continuous'], configs['continuous'],
                                     data['continuous'])

        def iql_updates(n: int) -> None:
            for _ in range(n):
                iql.update(dataset.sample_transition_batch(critic.batch_size))

        runs['d3rlpy_iql'] = iql_updates
    measured = rates(runs, max(updates // ROUNDS, 5), ROUNDS)
    result['updates_per_s'] = {name: float(np.median(v)) for name, v in measured.items()}
    result['updates_per_s_rounds'] = measured

    print('environment steps/s', flush=True)
    setup = problems['discrete'].setup
    env_steps = max(int(2000 * scale), 50)
    mj_step = raw_physics(setup.scene, max(int(50_000 * scale), 1000))
    substeps = round(setup.config.physics.control_period / setup.config.physics.timestep)
    result['env'] = {'raw_mj_step_per_s': mj_step,
                     'raw_control_periods_per_s': mj_step / substeps,
                     'physics_steps_per_env_step': substeps}
    for kind, problem in problems.items():
        result['env'][f'env_steps_per_s_{kind}'] = env_throughput(problem.env, env_steps)
        result['env'][f'env_plus_mu_steps_per_s_{kind}'] = behavior_throughput(problem,
                                                                               env_steps)

    print('policy latency for one observation', flush=True)
    obs = problems['discrete'].env.reset(seed=1)[0]
    for kind, learner in learners.items():
        problem = problems[kind]
        problem.env.reset(seed=1)
        exported = load_exported_policy(export_policy(learner))
        executor = ShieldedExecutor(exported)
        if problem.discrete:
            allowed = np.ones(problem.spaces.action_size, dtype=bool)
            result['latency'][f'ssq_{kind}_policy'] = latency(
                lambda e=exported, a=allowed: e.probabilities(obs, a), repeats)
            result['latency'][f'ssq_{kind}_shielded_with_mu'] = latency(
                lambda p=problem, x=executor: x.act_discrete(obs, p.behavior(rng).probs),
                max(repeats // 4, 20))
        else:
            result['latency'][f'ssq_{kind}_policy'] = latency(
                lambda e=exported: e.gaussian(obs), repeats)
            result['latency'][f'ssq_{kind}_shielded_with_mu'] = latency(
                lambda p=problem, x=executor: x.act_continuous(
                    obs, p.behavior(rng).samples, p.is_safe_here()), max(repeats // 4, 20))
    if has_sb3:
        result['latency']['sb3_sac_policy'] = latency(
            lambda: sac.predict(obs, deterministic=True), repeats)
    if has_d3rlpy:
        result['latency']['d3rlpy_iql_policy'] = latency(lambda: iql.predict(obs[None]),
                                                         repeats)

    if 'sb3_sac' in measured:
        # Median over rounds of the ratio within a round: the pairs ran back to back.
        sac_rounds = np.array(measured['sb3_sac'])
        result['ratio_to_sac'] = {
            f'ssq_{k}': float(np.median(np.array(measured[f'ssq_{k}']) / sac_rounds))
            for k in ('discrete', 'continuous')}
        result['ratio_to_sac_range'] = {
            f'ssq_{k}': [float(r.min()), float(r.max())] for k in ('discrete', 'continuous')
            for r in [np.array(measured[f'ssq_{k}']) / sac_rounds]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + '\n')
    print_tables(result)
    print(f'wrote {args.out}')
    return 0


def behavior_throughput(problem: ArmProblem, steps: int) -> float:
    """Steps/s of the training loop's acting part: mu's decision (support check) + env step."""
    rng = np.random.default_rng(0)
    problem.env.reset(seed=0)
    started = time.perf_counter()
    for _ in range(steps):
        *_, terminated, truncated, _ = problem.env.step(problem.behavior(rng).action)
        if terminated or truncated:
            problem.env.reset()
    return steps / (time.perf_counter() - started)


def print_tables(result: dict) -> None:
    print(f'{"learner":<22}{"updates/s":>12}')
    for name, value in result['updates_per_s'].items():
        print(f'{name:<22}{value:>12.0f}')
    for name, value in result.get('ratio_to_sac', {}).items():
        low, high = result['ratio_to_sac_range'][name]
        print(f'{name + " / sb3_sac":<22}{value:>12.2f}x  (rounds {low:.2f}-{high:.2f}x)')
    print(f'{"environment":<34}{"per second":>12}')
    for name, value in result['env'].items():
        print(f'{name:<34}{value:>12.0f}')
    print(f'{"policy, one observation":<32}{"p50 us":>10}{"p99 us":>10}')
    for name, value in result['latency'].items():
        print(f'{name:<32}{value["p50_us"]:>10.0f}{value["p99_us"]:>10.0f}')


if __name__ == '__main__':
    sys.exit(main())
