"""The package's episode seeds: which episode sees which goal, the same in every runner.

Training episodes use even env seeds and held-out episodes odd ones; the task draws their goals
from disjoint halves of the goal positions (`reach_avoid.goal_split_of_seed`), so no held-out goal
position is ever trained on, and the held-out set is the same for every run. ssq-train's env,
mujoco_sim and the on-robot episode_server all number their episodes with these.
"""
from __future__ import annotations


def training_episode_seed(run_seed: int, episode: int) -> int:
    """Env seed of training episode `episode` of run `run_seed`: always even."""
    return 2 * (1 + run_seed * 10_000_000 + episode)


def heldout_episode_seed(index: int) -> int:
    """Env seed of held-out goal `index`: always odd, the same for every run."""
    return 2 * index + 1
