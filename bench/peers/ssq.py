"""ssq_ros itself as a benchmark entrant: trained by `ssq-train`'s Trainer, judged like a peer.

The run folder is the trainer's (metrics.json, log.jsonl, policy.pt, checkpoints/); this module
reads the extracted policy, the training curve and the replay (mu's transitions, which the
offline peers learn from) back out of it.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import yaml

from ssq_ros.config import parse, to_dict
from ssq_ros.deploy.export import load_exported_policy
from ssq_ros.training.config import (
    TrainConfig,
    load_train_config,
    resolve_config_file,
    with_overrides,
)
from ssq_ros.training.plots import read_log
from ssq_ros.training.trainer import Trainer, load_run_learner

from .common import Curve, EvalPolicy

# The package's training config of each action kind.
DEFAULT_CONFIGS = {'discrete': 'train_sim.yaml', 'continuous': 'train_sim_continuous.yaml'}


def ssq_config(action_kind: str, seed: int, steps: int, schedule: dict | None = None,
               base: str | None = None) -> TrainConfig:
    """The training config for `action_kind` (the package's unless `base` names another YAML,
    whose action_kind is then replaced), with the benchmark's budget."""
    if action_kind not in DEFAULT_CONFIGS:
        raise ValueError(f'unknown action kind {action_kind!r}')
    data = to_dict(load_train_config(resolve_config_file(base or DEFAULT_CONFIGS[action_kind])))
    data['action_kind'] = action_kind
    data['schedule'].update(schedule or {})
    data['schedule']['learning_starts'] = min(data['schedule']['learning_starts'], steps)
    return with_overrides(parse(TrainConfig, data, 'bench'), seed=seed, steps=steps)


def train_ssq(config: TrainConfig, out: Path, progress: bool = True) -> dict:
    """A fresh ssq-train run in `out` (an old folder there is removed); its metrics.json."""
    if out.exists():
        shutil.rmtree(out)
    return Trainer(config, out, progress=progress).run()


def ssq_policy(out: Path, name: str) -> EvalPolicy:
    """The run's extracted policy, unmasked: every action is allowed unless a shield masks it."""
    exported = load_exported_policy(out / 'policy.pt')
    spaces = exported.spaces
    if spaces.discrete:
        everything = np.ones(spaces.action_size, dtype=bool)

        def scores(obs: np.ndarray) -> np.ndarray:
            return np.log(exported.probabilities(obs, everything))

        return EvalPolicy(name, True, scores=scores)
    return EvalPolicy(name, False, act=lambda obs: exported.gaussian(obs)[0])


def ssq_curve(out: Path) -> Curve:
    """mu's training episodes as the trainer logged them."""
    curve = Curve()
    for record in read_log(out):
        if record.get('type') == 'episode':
            curve.add(record['step'], record['return'], record['success'],
                      record['unsafe_total'])
    return curve


def ssq_eval_curve(out: Path) -> dict[str, list]:
    """The extracted policy's held-out evaluations (shielded, as the executor runs it) over
    training: env steps, mean return, success rate."""
    evals = [r for r in read_log(out) if r.get('type') == 'eval']
    return {'steps': [int(r['step']) for r in evals],
            'returns': [float(r['return']) for r in evals],
            'success_rates': [float(r['success_rate']) for r in evals]}


def ssq_transitions(config: TrainConfig, out: Path) -> dict[str, np.ndarray]:
    """The replay of the run in time order: obs, action, reward, next_obs, done (float)."""
    replay = load_run_learner(config, out).replay
    order = np.arange(replay.size)
    if replay.size == replay.capacity:  # wrapped: the oldest transition sits at `position`
        order = (order + replay.position) % replay.capacity
    return {name: replay.arrays[name][order] for name in
            ('obs', 'action', 'reward', 'next_obs', 'done')}


def split_episodes(transitions: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Transitions in time order -> d3rlpy-style rows (observations, actions, rewards,
    terminals, timeouts).

    An episode ends where done is set or where the next transition does not start from this
    one's next_obs. An episode that did not terminate gets its last next_obs appended as an
    extra row flagged as timeout, so its last transition keeps its real successor state.
    """
    obs, next_obs, done = transitions['obs'], transitions['next_obs'], transitions['done']
    count = len(obs)
    if count == 0:
        raise ValueError('no transitions')
    breaks = np.ones(count, dtype=bool)
    breaks[:-1] = (done[:-1] > 0) | np.any(next_obs[:-1] != obs[1:], axis=1)
    rows: dict[str, list] = {k: [] for k in ('observations', 'actions', 'rewards',
                                             'terminals', 'timeouts')}
    start = 0
    for end in np.flatnonzero(breaks) + 1:
        segment = slice(start, end)
        size = end - start
        terminal = done[end - 1] > 0
        rows['observations'].append(obs[segment])
        rows['actions'].append(transitions['action'][segment])
        rows['rewards'].append(transitions['reward'][segment])
        rows['terminals'].append(np.r_[np.zeros(size - 1), float(terminal)])
        rows['timeouts'].append(np.zeros(size))
        if not terminal:
            rows['observations'].append(next_obs[end - 1][None])
            rows['actions'].append(np.zeros_like(transitions['action'][end - 1:end]))
            rows['rewards'].append(np.zeros(1))
            rows['terminals'].append(np.zeros(1))
            rows['timeouts'].append(np.ones(1))
        start = end
    dtypes = {'actions': transitions['action'].dtype}
    return {k: np.concatenate(v).astype(dtypes.get(k, np.float32)) for k, v in rows.items()}


def tiny_ssq_config(folder: Path, max_steps: int) -> str:
    """train_sim.yaml with short episodes, small networks and short schedules."""
    data = to_dict(load_train_config(resolve_config_file('train_sim.yaml')))
    data['sim']['task']['max_steps'] = max_steps
    for section in (data['learner']['critic'], data['learner']['extraction']):
        section.update(hidden_sizes=[32, 32], batch_size=32)
    data['learner']['replay_capacity'] = 1000
    data['schedule'].update(learning_starts=50, extract_every=100, extract_steps=10,
                            final_extract_steps=20, eval_every=10**6, eval_episodes=1,
                            final_eval_episodes=1, calibration_tail=10, checkpoint_every=100)
    path = folder / f'tiny{max_steps}.yaml'
    path.write_text(yaml.safe_dump(data))
    return str(path)
