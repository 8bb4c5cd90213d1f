"""Is the peer harness sound? SB3 SAC, configured exactly as bench_peers configures it, on a
public reach task with published results (issue 15: "the SAC configuration reproduces a
published reach result's order of magnitude").

    .venv/bin/python -m bench.bench_harness_check [--steps 30000] [--seeds 0 1]

Gymnasium's MuJoCo Reacher-v5 (a 2-link arm reaching a random target, 50-step episodes;
reward = -distance - control cost). A policy that ignores the target scores about -43 per
episode; the SAC model card of Farama's Minari team for Reacher-v5 reports -5.08 +- 2.14. Our
SAC (`sac_hyperparameters`: the batch, widths, discount and warm-up of
config/train_sim_continuous.yaml, SB3 defaults otherwise) is trained for `--steps` and its
deterministic policy evaluated on 50 episodes of unseen seeds. Writes
bench/results/harness_check.json and prints a progress bar while training. Needs the bench
extra (SB3) and imageio (gymnasium's MuJoCo envs import it).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

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
    parser.add_argument('--seeds', type=int, nargs='+', default=[0])
    parser.add_argument('--steps', type=int, default=30_000)
    parser.add_argument('--episodes', type=int, default=50)
    parser.add_argument('--out', type=Path, default=RESULTS)
    parser.add_argument('--no-progress', action='store_true')
    args = parser.parse_args(argv)
    if args.steps < 1 or args.episodes < 1:
        parser.error('--steps and --episodes must be positive')
    torch.set_num_threads(1)  # one core per run, as every benchmark here
    runs = [check(seed, args.steps, args.episodes, not args.no_progress)
            for seed in args.seeds]
    result = {'env': ENV_ID, 'published': PUBLISHED, 'runs': runs,
              'machine': machine_info(torch_threads=1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + '\n')
    for run in runs:
        print(f"seed {run['seed']}: SAC {run['mean_return']:.2f} +- {run['sd_return']:.2f} over "
              f"{run['episodes']} episodes after {run['steps']} steps "
              f"({run['wall_time_train_s']:.0f} s); random policy "
              f"{run['random_mean_return']:.2f}; published "
              f"{PUBLISHED['mean_return']} +- {PUBLISHED['sd']}")
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
