"""The cliff walk: a problem with a known answer for the whole SSQ pipeline.

Exact value iteration gives the truth; the learned critic, the induced and extracted policies,
the alpha limits and the safety claims are all checked against it.
"""
import numpy as np
import pytest
import torch

from ssq_ros.gridworld.env import cliff_walk, masked_random_walk, safe_action_mask
from ssq_ros.gridworld.experiment import (
    GridworldConfig,
    collect_behavior_data,
    eps_greedy_q_learning,
    extracted_policy_table,
    rollout,
    train_ssq,
)
from ssq_ros.gridworld.solve import (
    policy_evaluation,
    soft_value_iteration,
    support_optimal_value_iteration,
)
from ssq_ros.learning.extraction import induced_policy_discrete

GAMMA = 0.95
UP, RIGHT, DOWN, LEFT = range(4)

# Tiny networks on a shared 2-core machine: a second torch thread only spins and contends
# (measured: 8x slower under load), so these tests run single-threaded.


def test_world_is_a_valid_mdp_with_the_cliff_between_start_and_goal():
    for slip in (0.0, 0.2):
        world = cliff_walk(slip=slip)
        np.testing.assert_allclose(world.transitions.sum(axis=-1), 1.0)
        assert world.unsafe.sum() == 10 and not world.unsafe[[world.start, world.goal]].any()
        assert world.terminal[world.goal] and world.terminal[world.unsafe].all()
    with pytest.raises(ValueError, match='slip'):
        cliff_walk(slip=1.0)
    with pytest.raises(ValueError, match='terminal'):
        world.step(world.goal, UP, np.random.default_rng(0))


def test_safe_mask_forbids_exactly_the_actions_that_can_reach_the_cliff():
    deterministic = safe_action_mask(cliff_walk())
    start, above_cliff = 36, 26  # (3, 0) and (2, 2)
    assert deterministic[start].tolist() == [True, False, True, True]
    assert deterministic[above_cliff].tolist() == [True, True, False, True]
    slippery_world = cliff_walk(slip=0.2)
    slippery = safe_action_mask(slippery_world)
    # Up from the start can slip right into the cliff; only bumping into the wall is safe.
    assert slippery[start].tolist() == [False, False, False, True]
    # Above the cliff, right and left can slip down: only up is safe.
    assert slippery[above_cliff].tolist() == [True, False, False, False]
    live = ~slippery_world.terminal
    reach_cliff = slippery_world.transitions[:, :, slippery_world.unsafe].sum(axis=-1) > 0
    assert not np.any(slippery[live] & reach_cliff[live])


@pytest.mark.parametrize('slip', [0.0, 0.2])
def test_alpha_moves_the_soft_value_from_mus_value_to_the_best_value_in_the_support(slip):
    world = cliff_walk(slip=slip)
    mu = masked_random_walk(world)
    v_mu = policy_evaluation(world, mu, GAMMA)
    _, v_best = support_optimal_value_iteration(world, safe_action_mask(world), GAMMA)
    alphas = [1e-3, 0.01, 0.1, 1.0, 10.0, 1e3]
    values = [soft_value_iteration(world, mu, alpha, GAMMA)[1] for alpha in alphas]
    live = ~world.terminal
    for smaller, larger in zip(values, values[1:], strict=False):
        assert np.all(smaller[live] >= larger[live] - 1e-9)  # V decreases as alpha grows
    for v in values:  # sandwich: V^mu <= V_alpha <= V*_supp
        assert np.all(v_mu[live] - 1e-9 <= v[live]) and np.all(v[live] <= v_best[live] + 1e-9)
    assert np.max(np.abs(values[0] - v_best)) < 0.02 * np.max(np.abs(v_best))
    assert np.max(np.abs(values[-1] - v_mu)) < 0.01 * np.max(np.abs(v_mu))


def test_exact_induced_policy_keeps_mus_support_and_is_near_optimal_for_small_alpha():
    world = cliff_walk(slip=0.2)
    mu = masked_random_walk(world)
    q, _ = soft_value_iteration(world, mu, 0.02, GAMMA)
    pi = induced_policy_discrete(torch.as_tensor(q), torch.as_tensor(mu), 0.02).numpy()
    assert np.all(pi[mu == 0] == 0.0)
    _, v_best = support_optimal_value_iteration(world, safe_action_mask(world), GAMMA)
    v_pi = policy_evaluation(world, pi, GAMMA)
    assert v_pi[world.start] >= v_best[world.start] - 0.01 * abs(v_best[world.start])


@pytest.fixture(scope='module')
def trained():
    """SSQ and the baseline on three seeds of the deterministic cliff walk (default budgets)."""
    config = GridworldConfig()
    world = cliff_walk()
    mu = masked_random_walk(world)
    runs = []
    for seed in range(3):
        critic, extractor, replay, unsafe = train_ssq(world, mu, config, seed)
        q_table, baseline_unsafe = eps_greedy_q_learning(world, config, seed)
        runs.append(dict(critic=critic, extractor=extractor, replay=replay, unsafe=unsafe,
                         baseline_unsafe=baseline_unsafe))
    return world, mu, config, runs


def test_learned_q_matches_the_kl_regularized_fixed_point_within_2_percent(trained):
    world, mu, config, runs = trained
    q_exact, _ = soft_value_iteration(world, mu, config.critic.alpha, config.critic.gamma)
    for run in runs:
        q_learned = run['critic'].q_values(torch.eye(world.n_states)).double().numpy()
        visited = np.zeros(world.n_states, bool)
        visited[run['replay'].arrays['obs'][:len(run['replay'])].argmax(axis=1)] = True
        pairs = visited[:, None] & (mu > 0) & ~world.terminal[:, None]
        error = np.abs(q_learned[pairs] - q_exact[pairs]) / np.abs(q_exact[pairs])
        assert error.mean() < 0.02, f'mean relative Q error {error.mean():.3%}'


def test_behavior_training_never_enters_the_cliff_while_the_baseline_does(trained):
    _, _, _, runs = trained
    assert [run['unsafe'] for run in runs] == [0, 0, 0]
    assert all(run['baseline_unsafe'] > 0 for run in runs)


def test_extracted_policy_is_safe_and_within_10_percent_of_the_optimal_safe_return(trained):
    world, mu, config, runs = trained
    _, v_best = support_optimal_value_iteration(world, safe_action_mask(world), GAMMA)
    for seed, run in enumerate(runs):
        policy = extracted_policy_table(world, mu, run['extractor'])
        assert np.all(policy[mu == 0] == 0.0)
        ret = policy_evaluation(world, policy, config.critic.gamma)[world.start]
        assert ret >= v_best[world.start] - 0.1 * abs(v_best[world.start])
        rollouts = rollout(world, policy, 50, config.episode_limit, np.random.default_rng(seed))
        assert rollouts.unsafe_visits == 0
        lengths = [rewards.size for _, _, rewards in rollouts.episodes]
        assert np.median(lengths) == 13  # the shortest safe path


def test_slippery_world_behavior_stays_safe_and_ssq_stays_near_optimal():
    config = GridworldConfig(slip=0.2)
    world = cliff_walk(slip=0.2)
    mu = masked_random_walk(world)
    for seed in range(3):
        _, unsafe = collect_behavior_data(world, mu, config.env_steps, config.episode_limit,
                                          np.random.default_rng(seed))
        assert unsafe == 0
    _, extractor, _, unsafe = train_ssq(world, mu, config, seed=0)
    assert unsafe == 0
    policy = extracted_policy_table(world, mu, extractor)
    assert np.all(policy[mu == 0] == 0.0)
    _, v_best = support_optimal_value_iteration(world, safe_action_mask(world), GAMMA)
    ret = policy_evaluation(world, policy, GAMMA)[world.start]
    assert ret >= v_best[world.start] - 0.1 * abs(v_best[world.start])
    _, baseline_unsafe = eps_greedy_q_learning(world, config, seed=0)
    assert baseline_unsafe > 0
