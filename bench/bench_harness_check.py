"""Is the peer harness sound? SB3 SAC, configured exactly as bench_peers configures it, on a
public reach task with published results (issue 15: "the SAC configuration reproduces a
published reach result's order of magnitude"); and the task suite's DQN peer on CartPole.

    .venv/bin/python -m bench.bench_harness_check [--steps 30000] [--seeds 0 1]
    .venv/bin/python -m bench.bench_harness_check --algo dqn [--steps 50000] [--seeds 0 1]

Gymnasium's MuJoCo Reacher-v5 (a 2-link arm reaching a random target, 50-step episodes;
reward = -distance - control cost). A policy that ignores the target scores about -43 per
episode; the SAC model card of Farama's Minari team for Reacher-v5 reports -5.08 +- 2.14. Our
SAC (`sac_hyperparameters`: the batch, widths, discount and warm-up of
config/train_sim_continuous.yaml, SB3 defaults otherwise) is trained for `--steps` and its
deterministic policy evaluated on 50 episodes of unseen seeds. Writes
bench/results/harness_check.json and prints a progress bar while training. Needs the bench
extra (SB3) and imageio (gymnasium's MuJoCo envs import it).

`--algo dqn`: bench_tasks_peers' `MaskedDQN` (its own update and action choice) on CartPole-v1,
behind a support that allows every action (`EverythingAllowed`), where it must be SB3's DQN;
RL Baselines3 Zoo publishes 500 +- 0 for SB3 DQN there after 50 000 steps. Two
configurations: the zoo's own hyperparameters (does our DQN code reach the published result?)
and the task suite's (SSQ's width, batch, discount, learning rate, warm-up, soft target and
8-step targets, exploring uniformly: is that configuration a working DQN?); and, as the
reference on the same seeds, SB3's own DQN class with the zoo's settings ('zoo_sb3'). Writes
bench/results/harness_check_dqn.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import torch

from bench.peers.common import machine_info
from bench.peers.ssq import ssq_config

RESULTS = Path(__file__).resolve().parent / 'results' / 'harness_check.json'
ENV_ID = 'Reacher-v5'
PUBLISHED = {'mean_return': -5.08, 'sd': 2.14,
             'source': 'huggingface.co/farama-minari/Reacher-v5-SAC-simple (model card, SB3 SAC)'}
EVAL_SEED_OFFSET = 10_000  # evaluation episodes use seeds no training episode uses
DQN_RESULTS = RESULTS.with_name('harness_check_dqn.json')
DQN_ENV_ID = 'CartPole-v1'
DQN_PUBLISHED = {'mean_return': 500.0, 'sd': 0.0, 'steps': 50_000,
                 'source': 'github.com/DLR-RM/rl-baselines3-zoo benchmark.md (SB3 DQN, '
                           'hyperparams/dqn.yml CartPole-v1, 300 episodes)'}
# hyperparams/dqn.yml of RL Baselines3 Zoo for CartPole-v1 (the published run's settings)
ZOO_DQN = {'learning_rate': 2.3e-3, 'batch_size': 64, 'learning_starts': 1000, 'gamma': 0.99,
           'target_update_interval': 10, 'train_freq': 256, 'gradient_steps': 128,
           'exploration_fraction': 0.16, 'exploration_final_eps': 0.04,
           'policy_kwargs': {'net_arch': [256, 256]}}


class EverythingAllowed(gym.ObservationWrapper):
    """A support that allows every action, in the layout `MaskedDQN` reads: the observation
    ends with 1.0 per action, `decision()`/`rng` stand where `SupportShield`'s do, and
    info['executed_action'] is the action taken (nothing is ever replaced)."""

    def __init__(self, env: gym.Env, seed: int):
        super().__init__(env)
        self.count = int(env.action_space.n)
        self.rng = np.random.default_rng(seed)
        inner = env.observation_space
        self.observation_space = gym.spaces.Box(
            np.concatenate([inner.low, np.zeros(self.count)]).astype(np.float32),
            np.concatenate([inner.high, np.ones(self.count)]).astype(np.float32),
            dtype=np.float32)

    def observation(self, observation):
        return np.concatenate([observation, np.ones(self.count)]).astype(np.float32)

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, reward, terminated, truncated, {**info, 'executed_action': action}

    def decision(self):
        return SimpleNamespace(probs=np.full(self.count, 1.0 / self.count),
                               action=int(self.rng.integers(self.count)))


def suite_dqn_hyperparameters() -> dict:
    """The task suite's DQN configuration (bench_tasks_peers' tuned point, exploring
    uniformly: CartPole has no mu to draw from)."""
    from bench import bench_tasks_peers
    return bench_tasks_peers.dqn_settings('wall', 'uniform_n8_e140')['hyper']


DQN_CONFIGURATIONS = ('zoo', 'suite', 'zoo_sb3')


def check_dqn(seed: int, steps: int, episodes: int, configuration: str, progress: bool) -> dict:
    """Train `MaskedDQN` (or, for 'zoo_sb3', SB3's DQN) on CartPole-v1 with every action
    allowed; its greedy returns."""
    from stable_baselines3 import DQN

    from bench.peers.sb3_common import MaskedDQN, Progress

    hyper = suite_dqn_hyperparameters() if configuration == 'suite' else ZOO_DQN
    env = EverythingAllowed(gym.make(DQN_ENV_ID), seed)
    if configuration == 'zoo_sb3':
        model = DQN('MlpPolicy', env, seed=seed, device='cpu', verbose=0,
                    buffer_size=max(steps, 1), **hyper)
    else:
        model = MaskedDQN('MlpPolicy', env, seed=seed, device='cpu', verbose=0,
                          buffer_size=max(steps, 1), shield=env, **hyper)
    started = time.monotonic()
    model.learn(total_timesteps=steps, callback=Progress(
        steps, None, f'DQN ({configuration}) on {DQN_ENV_ID}, seed {seed}', progress))
    wall = time.monotonic() - started
    evaluation = EverythingAllowed(gym.make(DQN_ENV_ID), seed)
    rng = np.random.default_rng(seed)
    trained = episode_returns(evaluation,
                              lambda obs: int(model.predict(obs, deterministic=True)[0]),
                              episodes, EVAL_SEED_OFFSET)
    random = episode_returns(evaluation, lambda obs: int(rng.integers(2)), episodes,
                             EVAL_SEED_OFFSET)
    return {'seed': seed, 'steps': steps, 'episodes': episodes,
            'configuration': configuration, 'hyperparameters': hyper,
            'mean_return': float(trained.mean()), 'sd_return': float(trained.std()),
            'random_mean_return': float(random.mean()), 'wall_time_train_s': wall}


def episode_returns(env: gym.Env, act, episodes: int, seed: int) -> np.ndarray:
    returns = np.empty(episodes)
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + k)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += float(reward)
            done = terminated or truncated
        returns[k] = total
    return returns


def check(seed: int, steps: int, episodes: int, progress: bool) -> dict:
    """Train SAC on Reacher-v5 as bench_peers would; its and a random policy's returns."""
    from stable_baselines3 import SAC

    from bench.peers.sb3_common import Progress
    from bench.peers.sb3_sac import sac_hyperparameters

    config = ssq_config('continuous', seed, steps)
    critic = config.learner.critic
    hyper = sac_hyperparameters(critic.batch_size, list(critic.hidden_sizes), critic.gamma,
                                config.schedule.learning_starts)
    model = SAC('MlpPolicy', gym.make(ENV_ID), seed=seed, device='cpu', verbose=0,
                buffer_size=steps, **hyper)
    started = time.monotonic()
    model.learn(total_timesteps=steps,
                callback=Progress(steps, None, f'SAC on {ENV_ID}, seed {seed}', progress))
    wall = time.monotonic() - started
    env = gym.make(ENV_ID)
    rng = np.random.default_rng(seed)
    trained = episode_returns(env, lambda obs: model.predict(obs, deterministic=True)[0],
                              episodes, EVAL_SEED_OFFSET)
    random = episode_returns(env, lambda obs: rng.uniform(-1.0, 1.0, 2), episodes,
                             EVAL_SEED_OFFSET)
    return {'seed': seed, 'steps': steps, 'episodes': episodes, 'hyperparameters': hyper,
            'mean_return': float(trained.mean()), 'sd_return': float(trained.std()),
            'random_mean_return': float(random.mean()), 'wall_time_train_s': wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--algo', choices=('sac', 'dqn'), default='sac',
                        help=f'sac: SAC on {ENV_ID}; dqn: the suite\'s DQN on {DQN_ENV_ID}')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0])
    parser.add_argument('--configurations', nargs='+', choices=DQN_CONFIGURATIONS,
                        default=list(DQN_CONFIGURATIONS),
                        help='dqn: which settings and class (zoo_sb3: SB3\'s DQN itself)')
    parser.add_argument('--merge', action='store_true',
                        help='dqn: keep the runs already in --out that this call does not make')
    parser.add_argument('--steps', type=int, help='default: 30 000 (sac), 50 000 (dqn)')
    parser.add_argument('--episodes', type=int, default=50)
    parser.add_argument('--out', type=Path, help=f'default: {RESULTS.name} (sac), '
                        f'{DQN_RESULTS.name} (dqn), in bench/results')
    parser.add_argument('--no-progress', action='store_true')
    args = parser.parse_args(argv)
    args.steps = args.steps or (30_000 if args.algo == 'sac' else DQN_PUBLISHED['steps'])
    args.out = args.out or (RESULTS if args.algo == 'sac' else DQN_RESULTS)
    if args.steps < 1 or args.episodes < 1:
        parser.error('--steps and --episodes must be positive')
    torch.set_num_threads(1)  # one core per run, as every benchmark here
    if args.algo == 'dqn':
        runs = [check_dqn(seed, args.steps, args.episodes, configuration, not args.no_progress)
                for seed in args.seeds for configuration in args.configurations]
        if args.merge and args.out.exists():
            made = {(run['seed'], run['configuration']) for run in runs}
            runs = [run for run in json.loads(args.out.read_text())['runs']
                    if (run['seed'], run['configuration']) not in made] + runs
        env, published = DQN_ENV_ID, DQN_PUBLISHED
        lines = [f"seed {run['seed']}, {run['configuration']} settings: DQN "
                 f"{run['mean_return']:.1f} +- {run['sd_return']:.1f}" for run in runs]
    else:
        runs = [check(seed, args.steps, args.episodes, not args.no_progress)
                for seed in args.seeds]
        env, published = ENV_ID, PUBLISHED
        lines = [f"seed {run['seed']}: SAC {run['mean_return']:.2f} +- {run['sd_return']:.2f}"
                 for run in runs]
    result = {'env': env, 'published': published, 'runs': runs,
              'machine': machine_info(torch_threads=1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + '\n')
    for line, run in zip(lines, runs, strict=True):
        print(f"{line} over {run['episodes']} episodes after {run['steps']} steps "
              f"({run['wall_time_train_s']:.0f} s); random policy "
              f"{run['random_mean_return']:.2f}; published "
              f"{published['mean_return']} +- {published['sd']}")
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
