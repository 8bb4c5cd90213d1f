"""Offline RL from d3rlpy (IQL, CQL, DiscreteCQL) on mu's logged transitions (bench extra).

The dataset is the replay of an ssq-train run: the very transitions SSQ learned from, collected
by the safe behavior controller, so training enters no unsafe state. The learned policy then
acts on its own, which is where offline RL's safety is decided.
"""
from __future__ import annotations

import time

import d3rlpy
import numpy as np
from tqdm import tqdm

from .common import EvalPolicy

ALGORITHMS = ('iql', 'cql', 'discrete_cql')


def make_dataset(rows: dict[str, np.ndarray], discrete: bool,
                 action_size: int) -> d3rlpy.dataset.MDPDataset:
    """An MDPDataset from `ssq.split_episodes` rows."""
    space = d3rlpy.constants.ActionSpace.DISCRETE if discrete else \
        d3rlpy.constants.ActionSpace.CONTINUOUS
    return d3rlpy.dataset.MDPDataset(rows['observations'], rows['actions'], rows['rewards'],
                                     rows['terminals'], rows['timeouts'], action_space=space,
                                     action_size=action_size)


def make_algorithm(name: str, batch_size: int, hidden: list[int], gamma: float,
                   action_low: np.ndarray | None = None, action_high: np.ndarray | None = None,
                   normalise_observations: bool = False):
    """d3rlpy's defaults for `name`, with SSQ's batch, width and discount (and observations
    standardised by the dataset's mean and deviation if `normalise_observations`).

    Continuous actions are scaled to d3rlpy's [-1, 1] by the env's bounds (its actors squash).
    DiscreteCQL's Atari defaults (batch 32, target copy every 8000 updates) are replaced by the
    shared batch and a copy every 1000 updates so that it learns within the same budget.
    """
    encoder = d3rlpy.models.VectorEncoderFactory(hidden_units=list(hidden))
    common = {'batch_size': batch_size, 'gamma': gamma}
    if normalise_observations:
        common['observation_scaler'] = d3rlpy.preprocessing.StandardObservationScaler()
    if name == 'discrete_cql':
        return d3rlpy.algos.DiscreteCQLConfig(encoder_factory=encoder, learning_rate=3e-4,
                                              target_update_interval=1000,
                                              **common).create(device='cpu')
    scaler = d3rlpy.preprocessing.MinMaxActionScaler(minimum=np.asarray(action_low),
                                                     maximum=np.asarray(action_high))
    encoders = {'actor_encoder_factory': encoder, 'critic_encoder_factory': encoder}
    if name == 'iql':
        return d3rlpy.algos.IQLConfig(value_encoder_factory=encoder, action_scaler=scaler,
                                      **encoders, **common).create(device='cpu')
    if name == 'cql':
        return d3rlpy.algos.CQLConfig(action_scaler=scaler, **encoders,
                                      **common).create(device='cpu')
    raise ValueError(f'unknown offline algorithm {name!r} (known: {", ".join(ALGORITHMS)})')


def train_offline(algo, dataset: d3rlpy.dataset.MDPDataset, updates: int, label: str,
                  progress: bool = True) -> dict:
    """`updates` gradient steps on uniform minibatches of `dataset`; timing and last losses."""
    scaler = algo.config.observation_scaler
    if scaler is not None and not scaler.built:  # d3rlpy's fit() does this; update() does not
        scaler.fit_with_transition_picker(dataset.episodes, dataset.transition_picker)
    algo.build_with_dataset(dataset)
    batch_size = algo.config.batch_size
    started = time.monotonic()
    losses: dict[str, float] = {}
    for step in tqdm(range(updates), desc=label, unit='upd', disable=not progress,
                     dynamic_ncols=True, mininterval=2.0):
        losses = algo.update(dataset.sample_transition_batch(batch_size))
        if not np.all(np.isfinite(list(losses.values()))):
            raise FloatingPointError(f'{label}: non-finite loss at update {step}: {losses}')
    return {'updates': updates, 'wall_time_train_s': time.monotonic() - started,
            'final_losses': {k: float(v) for k, v in losses.items()}}


def offline_policy(algo, label: str, discrete: bool, action_size: int) -> EvalPolicy:
    """The trained algorithm as an EvalPolicy; its Q function serves calibration."""

    def q(observations: np.ndarray, actions: np.ndarray) -> np.ndarray:
        return algo.predict_value(np.asarray(observations, dtype=np.float32),
                                  np.asarray(actions)).astype(float)

    if discrete:
        every = np.arange(action_size)

        def scores(obs: np.ndarray) -> np.ndarray:
            return q(np.repeat(np.asarray(obs)[None], action_size, axis=0), every)

        return EvalPolicy(label, True, scores=scores, q=q)
    return EvalPolicy(label, False, q=q,
                      act=lambda obs: algo.predict(np.asarray(obs, dtype=np.float32)[None])[0])
