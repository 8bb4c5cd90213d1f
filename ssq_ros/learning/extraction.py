"""Stage 2: from the learned Q to a policy that stays inside mu's support.

Discrete actions have the exact induced policy pi(a|s) ∝ mu(a|s) exp(Q(s,a)/alpha). A parametric
policy is fitted to it by forward KL (advantage-weighted regression on mu's actions, weights
exp((Q - V)/alpha), clipped) or, as an option, by reverse KL. The extractor trains on the states
s' of the replay with mu's support stored there: the same support that execution masks with.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ssq_ros.config import parse, spec, to_dict
from ssq_ros.learning.behavior import sample_index
from ssq_ros.learning.critic import KLCritic, masked_log, soft_value_discrete, soft_value_sampled
from ssq_ros.learning.networks import mlp, seeded_init

# Bounds of the Gaussian policy's log standard deviation (keeps the density finite).
_LOG_STD_MIN, _LOG_STD_MAX = -5.0, 2.0

LogDensity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class ExtractionConfig:
    """How the parametric policy is fitted to the induced policy."""

    discrete_policy: str = spec(
        'fitted', choices=('fitted', 'induced'),
        doc='discrete actions: fitted = a categorical network fitted to the induced policy '
            '(the loss below); induced = deploy pi_Q = softmax(Q/alpha + log mu) itself (the '
            "critic's network, mu's probabilities given at run time): exact, no extraction "
            'steps (METHOD.md section 3)')
    loss: str = spec('forward_kl', choices=('forward_kl', 'reverse_kl'),
                     doc='forward_kl: weighted regression on mu actions (needs only samples); '
                         'reverse_kl: exact KL to the induced policy (discrete) or '
                         'E_pi[alpha log pi - alpha log mu - Q] (continuous, needs log mu)')
    weighting: str = spec('clipped', choices=('clipped', 'self_normalized'),
                          doc='continuous forward KL: exp((Q-V)/alpha) clipped at max_weight, or '
                              'softmax(Q/alpha) over the K samples of mu')
    # Never reached on the arm task: max weight 5.5 on 4096 replayed states.
    max_weight: float = spec(20.0, low=1.0, high=1e6,
                             doc='clip of the advantage weights exp((Q-V)/alpha)')
    lr: float = spec(1e-3, low=1e-7, high=1.0, doc='Adam learning rate of the policy')
    hidden_sizes: tuple[int, ...] = spec((128, 128), low=1, high=4096,
                                         doc='hidden layer widths of the policy network (as '
                                             "the critic's)")
    batch_size: int = spec(256, low=1, high=65536, doc='states per update')
    grad_clip: float = spec(10.0, low=0.0, high=1e6,
                            doc='max global gradient norm per update; 0 disables clipping')


def induced_policy_discrete(q: torch.Tensor, mu: torch.Tensor, alpha: float) -> torch.Tensor:
    """pi(a|s) = softmax(Q/alpha + log mu): exactly zero where mu is zero."""
    return induced_policy(q, masked_log(mu), alpha)[0]


def induced_policy(q: torch.Tensor, log_mu: torch.Tensor, alpha: float
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(pi, KL(pi || mu)) over the last axis for pi ∝ mu exp(Q/alpha), given log mu (-inf off
    mu's support, where pi is exactly zero). Continuous: the last axis is mu's K samples with
    log mu = -log K each (pi is then self-normalised: softmax(Q/alpha) over the samples)."""
    log_pi = torch.log_softmax(q / alpha + log_mu, dim=-1)
    pi = log_pi.exp()
    kl = torch.where(pi > 0, pi * (log_pi - log_mu), torch.zeros_like(pi)).sum(dim=-1)
    return pi, kl


def advantage_weights(q: torch.Tensor, v: torch.Tensor, alpha: float,
                      max_weight: float) -> torch.Tensor:
    """exp((Q - V)/alpha) clipped at max_weight; V broadcasts over the action axis."""
    return torch.exp((q - v.unsqueeze(-1)) / alpha).clamp(max=max_weight)


class CategoricalPolicy(nn.Module):
    """Logits over the n actions; probabilities are masked by mu's support at execution."""

    def __init__(self, obs_dim: int, n_actions: int, hidden_sizes):
        super().__init__()
        self.net = mlp(obs_dim, hidden_sizes, n_actions)

    def log_probs(self, obs: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        """Log-probabilities renormalised on mu's support; -inf outside it."""
        mask = torch.where(mu > 0, 0.0, -torch.inf)
        if not bool(torch.all(torch.isfinite(mask).any(dim=-1))):
            raise ValueError('mu has a row without support (no allowed action)')
        return torch.log_softmax(self.net(obs) + mask, dim=-1)

    @torch.no_grad()
    def act(self, obs: np.ndarray, mu: np.ndarray, rng: np.random.Generator) -> int:
        """One sampled action for one state; never an action with mu == 0."""
        probs = self.log_probs(torch.as_tensor(obs, dtype=torch.float32)[None],
                               torch.as_tensor(mu, dtype=torch.float32)[None]).exp()[0]
        probs = probs.double().numpy()
        return sample_index(probs / probs.sum(), rng)


class GaussianPolicy(nn.Module):
    """Diagonal Gaussian over continuous actions (unsquashed; the shield checks every proposal)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_sizes):
        super().__init__()
        self.net = mlp(obs_dim, hidden_sizes, 2 * action_dim)

    def distribution(self, obs: torch.Tensor) -> torch.distributions.Normal:
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        return torch.distributions.Normal(mean, log_std.clamp(_LOG_STD_MIN, _LOG_STD_MAX).exp())

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log pi(a|s) for actions (B, d) -> (B,) or (B, K, d) -> (B, K)."""
        dist = self.distribution(obs)
        if actions.dim() == 3:
            dist = torch.distributions.Normal(dist.loc.unsqueeze(1), dist.scale.unsqueeze(1))
        return dist.log_prob(actions).sum(dim=-1)

    @torch.no_grad()
    def propose(self, obs: np.ndarray) -> np.ndarray:
        """The mean action for one state; to be passed through `shield_action`."""
        return self.distribution(torch.as_tensor(obs, dtype=torch.float32)[None]).loc[0] \
            .double().numpy()


class PolicyExtractor:
    """Fits a CategoricalPolicy or GaussianPolicy to the critic's induced policy."""

    def __init__(self, critic: KLCritic, config: ExtractionConfig, *,
                 log_mu: LogDensity | None = None, seed: int = 0):
        self.config = parse(ExtractionConfig, to_dict(config), 'ExtractionConfig')
        self.critic = critic
        self.alpha = critic.config.alpha
        if not critic.is_discrete and self.config.loss == 'reverse_kl' and log_mu is None:
            raise ValueError('continuous reverse_kl extraction needs log_mu(obs, actions) '
                             '(e.g. ClonedBehavior.log_prob)')
        self.log_mu = log_mu
        with seeded_init(seed):
            if critic.is_discrete:
                self.policy = CategoricalPolicy(critic.obs_dim, critic.n_actions,
                                                self.config.hidden_sizes)
            else:
                self.policy = GaussianPolicy(critic.obs_dim, critic.action_dim,
                                             self.config.hidden_sizes)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.config.lr)

    def loss(self, obs: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """Extraction loss on states with mu's support there (probabilities or K samples)."""
        cfg, alpha = self.config, self.alpha
        if self.critic.is_discrete:
            q = self.critic.q_values(obs)
            log_pi = self.policy.log_probs(obs, support)
            if cfg.loss == 'reverse_kl':
                target = induced_policy_discrete(q, support, alpha)
                pi = log_pi.exp()
                log_ratio = torch.where(pi > 0, log_pi - torch.log(target.clamp_min(1e-38)), 0.0)
                return (pi * log_ratio).sum(dim=-1).mean()
            weights = support * advantage_weights(q, soft_value_discrete(q, support, alpha),
                                                  alpha, cfg.max_weight)
            return -torch.where(support > 0, weights * log_pi, 0.0).sum(dim=-1).mean()
        if cfg.loss == 'reverse_kl':
            actions = self.policy.distribution(obs).rsample()
            q = self.critic.q(obs, actions).min(dim=0).values
            return (alpha * self.policy.log_prob(obs, actions)
                    - alpha * self.log_mu(obs, actions) - q).mean()
        q = self.critic.q_values(obs, support)
        if cfg.weighting == 'self_normalized':
            weights = torch.softmax(q / alpha, dim=-1) * q.shape[-1]
        else:
            weights = advantage_weights(q, soft_value_sampled(q, alpha), alpha, cfg.max_weight)
        return -(weights * self.policy.log_prob(obs, support)).mean()

    @torch.no_grad()
    def fit(self, obs: torch.Tensor, support: torch.Tensor) -> dict[str, float]:
        """How well the policy matches the induced policy on these states: `fit_kl`, the mean
        KL(pi_Q || pi_theta), and `fit_agreement`, the share of states where both rank the same
        action first. Continuous: both as distributions over mu's K samples at each state."""
        alpha = self.alpha
        if self.critic.is_discrete:
            target = induced_policy_discrete(self.critic.q_values(obs), support, alpha)
            log_model = self.policy.log_probs(obs, support)
        else:
            target = torch.softmax(self.critic.q_values(obs, support) / alpha, dim=-1)
            log_model = torch.log_softmax(self.policy.log_prob(obs, support), dim=-1)
        log_ratio = torch.where(target > 0, torch.log(target.clamp_min(1e-38)) - log_model, 0.0)
        agreement = (target.argmax(dim=-1) == log_model.argmax(dim=-1)).double().mean()
        return {'fit_kl': float((target * log_ratio).sum(dim=-1).mean()),
                'fit_agreement': float(agreement)}

    def update(self, obs: torch.Tensor, support: torch.Tensor) -> dict[str, float]:
        """One gradient step on the policy only (the critic stays frozen)."""
        loss = self.loss(obs, support)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=list(self.policy.parameters()))
        max_norm = self.config.grad_clip if self.config.grad_clip > 0 else torch.inf
        grad_norm = nn.utils.clip_grad_norm_(self.policy.parameters(), max_norm)
        self.optimizer.step()
        return {'loss': loss.item(), 'grad_norm': float(grad_norm)}


@dataclass(frozen=True)
class ShieldDecision:
    """The executed action and where it came from: 'policy' or 'behavior_best'."""

    action: np.ndarray
    source: str


def shield_action(proposal: np.ndarray, is_safe: Callable[[np.ndarray], np.ndarray],
                  samples: np.ndarray, q_samples: np.ndarray) -> ShieldDecision:
    """Execute the policy's proposal if `is_safe` accepts it, else the best of mu's K samples.

    `samples` are mu's K safe actions at this state (ContinuousSafeBehavior.support_samples) and
    `q_samples` their Q values; a non-finite proposal is never shown to `is_safe`.
    """
    samples = np.asarray(samples, dtype=float)
    q_samples = np.asarray(q_samples, dtype=float)
    if samples.ndim != 2 or samples.shape[0] < 1 or q_samples.shape != (samples.shape[0],):
        raise ValueError(f'samples must be (K, d) with q_samples (K,), got {samples.shape} '
                         f'and {q_samples.shape}')
    if not np.all(np.isfinite(q_samples)):
        raise ValueError('q_samples contains NaN or inf')
    proposal = np.asarray(proposal, dtype=float)
    if proposal.shape == samples.shape[1:] and np.all(np.isfinite(proposal)):
        verdict = np.asarray(is_safe(proposal[None]))
        if verdict.shape != (1,) or verdict.dtype != bool:
            raise ValueError(f'is_safe must return a boolean array of shape (1,), got '
                             f'{verdict.dtype} {verdict.shape}')
        if verdict[0]:
            return ShieldDecision(proposal.copy(), 'policy')
    return ShieldDecision(samples[int(np.argmax(q_samples))].copy(), 'behavior_best')
