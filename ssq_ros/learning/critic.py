"""The KL-regularized critic: Q learned from mu's transitions with the soft target under mu.

    y = r + gamma (1 - d) V(s'),   V(s') = alpha log E_{a'~mu(.|s')} exp(Qbar(s', a') / alpha)

Discrete actions: the expectation is an exact masked log-sum-exp over mu's probability vector.
Continuous actions: it is the log-mean-exp over the K samples of mu stored with the transition,
with its first-order (delta-method) bias correction (`soft_value_sampled_corrected`): the plain
log-mean-exp is biased low by about Var(w)/(2K E[w]^2) in units of alpha, w = exp(Q/alpha), and
the bootstrap compounds that bias over the horizon 1/(1 - gamma).
Either way Q is never evaluated at an action mu cannot take.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ssq_ros.config import ConfigError, parse, spec, to_dict
from ssq_ros.learning.networks import ensemble_mlp, polyak_update, seeded_init
from ssq_ros.learning.replay import Batch, SequenceBatch
from ssq_ros.storage import atomic_write

_CHECKPOINT_KIND = 'ssq_ros.KLCritic/1'


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or belongs to a differently shaped learner."""


@dataclass
class CriticConfig:
    """Hyperparameters of the KL-regularized critic. The defaults are the tuned ones of the arm
    task (config/train_sim.yaml; measurements in docs/results.md)."""

    # alpha, measured (seed 0, 30 held-out goals, discrete): policy success 97 % at 1.0, 90 % at
    # 0.6, 70 % at 0.3, 23-43 % at 0.1. Q's action gaps are small and noisy (median 0.07 between
    # the best two); a larger alpha keeps more of mu's goal preference in pi ~ mu exp(Q/alpha),
    # and Q corrects it where mu runs into a zone.
    alpha: float = spec(1.0, low=1e-6, high=1e6,
                        doc='KL temperature: small -> best action inside mu support, '
                            'large -> value of mu itself')
    # gamma 0.98: a 50-step (2.5 s) horizon; 0.99 measured worse (63 % against 70 % at alpha 0.3)
    # and its calibration tail would need 460 steps.
    gamma: float = spec(0.98, low=0.0, high=0.9999, doc='discount factor')
    # tau 0.005: the critic loss stayed below 0.012 over the 29k updates of a default run.
    tau: float = spec(0.005, low=1e-6, high=1.0,
                      doc='Polyak rate of the target networks (1 = copy every update)')
    # lr 1e-3: the critic loss fell 0.43 -> 0.001 within the first 2.5k updates.
    lr: float = spec(1e-3, low=1e-7, high=1.0, doc='Adam learning rate of the Q networks')
    # 128 wide, measured on a 2-core CPU: 6.6 ms/update against 9.7 ms at 256 (discrete), 13 ms
    # against 57 ms (continuous, K=16): 256 does not fit the training budget.
    hidden_sizes: tuple[int, ...] = spec((128, 128), low=1, high=4096,
                                         doc='hidden layer widths of every Q network')
    # Twin Q (min of two): the target never takes the max of two noisy estimates.
    num_q: int = spec(2, low=1, high=16,
                      doc='Q networks: 2 = twin (clipped double Q), more = ensemble; the target '
                          'uses their minimum')
    batch_size: int = spec(256, low=1, high=65536, doc='transitions per update')
    grad_clip: float = spec(10.0, low=0.0, high=1e6,
                            doc='max global gradient norm per update; 0 disables clipping')
    # n-step targets (issue 14): 1 is the one-step soft target above (the shipped default).
    n_step: int = spec(1, low=1, high=64,
                       doc='transitions of mu summed in the target before it bootstraps '
                           '(1 = the one-step soft target)')
    n_step_correction: str = spec(
        'advantage', choices=('advantage', 'none'),
        doc='n_step > 1: advantage = subtract Qbar(s_k, a_k) - Vbar(s_k) at every intermediate '
            'step (soft path consistency: the target of the soft fixed point whatever mu did); '
            'none = mu\'s plain n-step return (evaluates mu for n - 1 steps)')


def soft_value_discrete(q_next: torch.Tensor, mu_next: torch.Tensor,
                        alpha: float) -> torch.Tensor:
    """alpha * logsumexp(q/alpha + log mu) over the last axis, actions with mu == 0 masked out."""
    if q_next.shape != mu_next.shape:
        raise ValueError(f'q_next {tuple(q_next.shape)} and mu_next {tuple(mu_next.shape)} '
                         'must have the same shape')
    return alpha * torch.logsumexp(q_next / alpha + masked_log(mu_next), dim=-1)


def masked_log(mu: torch.Tensor) -> torch.Tensor:
    """log mu with exactly -inf where mu == 0; refuses a row with no support at all."""
    if not bool(torch.all(mu.sum(dim=-1) > 0)):
        raise ValueError('mu has a row without support (no allowed action)')
    return torch.where(mu > 0, torch.log(mu.clamp_min(1e-38)), torch.full_like(mu, -math.inf))


def soft_value_sampled(q_samples: torch.Tensor, alpha: float) -> torch.Tensor:
    """alpha * (logsumexp(q/alpha) - log K) over the last axis of K samples of mu."""
    num_samples = q_samples.shape[-1]
    if num_samples < 1:
        raise ValueError('soft_value_sampled needs at least one sample')
    return alpha * (torch.logsumexp(q_samples / alpha, dim=-1) - math.log(num_samples))


def soft_value_sampled_corrected(q_samples: torch.Tensor, alpha: float) -> torch.Tensor:
    """`soft_value_sampled` + alpha s^2 / (2 K wbar^2): the delta-method correction of the
    log-mean-exp's Jensen bias, with w_k = exp(q_k/alpha), wbar their mean and s^2 their unbiased
    sample variance (a common factor of w cancels, so it is computed at the max). Bounded: s^2 <=
    K wbar^2, so it adds at most alpha/2; K = 1 is left as it is. Measured in
    test_learning_critic.py: at K = 8 and sd(Q/alpha) = 0.5 it removes 90 % of the bias."""
    plain = soft_value_sampled(q_samples, alpha)
    num_samples = q_samples.shape[-1]
    if num_samples < 2:
        return plain
    scaled = q_samples / alpha
    w = torch.exp(scaled - scaled.max(dim=-1, keepdim=True).values)
    ratio = w.var(dim=-1, unbiased=True) / w.mean(dim=-1) ** 2
    return plain + alpha * ratio / (2 * num_samples)


class QEnsemble(nn.Module):
    """num_q independent Q networks evaluated together; discrete: Q(s, .), continuous: Q(s, a)."""

    def __init__(self, obs_dim: int, hidden_sizes, num_q: int, n_actions: int | None,
                 action_dim: int | None):
        super().__init__()
        self.num_q = num_q
        self.is_discrete = n_actions is not None
        in_dim = obs_dim if self.is_discrete else obs_dim + action_dim
        out_dim = n_actions if self.is_discrete else 1
        self.nets = ensemble_mlp(num_q, in_dim, hidden_sizes, out_dim)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor | None = None) -> torch.Tensor:
        """Discrete: (num_q, B, n). Continuous with actions (B, d) or (B, K, d):
        (num_q, B) or (num_q, B, K)."""
        if self.is_discrete:
            return self.nets(obs.unsqueeze(0).expand(self.num_q, -1, -1))
        if actions.dim() == 3:
            return self._forward_samples(obs, actions)
        inputs = torch.cat([obs, actions], dim=-1)
        flat = inputs.reshape(1, -1, inputs.shape[-1]).expand(self.num_q, -1, -1)
        return self.nets(flat).reshape(self.num_q, *inputs.shape[:-1])


    def _forward_samples(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """(num_q, B, K) for K actions per state. The first layer is linear in [obs, a], so
        its observation part is computed once per state instead of once per sample (the
        backup's K = 16 samples made it most of an update's cost); the same function."""
        first, rest = self.nets[0], self.nets[1:]
        obs_dim = obs.shape[-1]
        batch, samples = actions.shape[:2]
        from_obs = torch.baddbmm(first.bias, obs.unsqueeze(0).expand(self.num_q, -1, -1),
                                 first.weight[:, :obs_dim])                  # (E, B, H)
        from_actions = torch.bmm(actions.reshape(1, -1, actions.shape[-1])
                                 .expand(self.num_q, -1, -1),
                                 first.weight[:, obs_dim:])                  # (E, B*K, H)
        hidden = from_actions.view(self.num_q, batch, samples, -1) + from_obs.unsqueeze(2)
        return rest(hidden.view(self.num_q, batch * samples, -1)).view(self.num_q, batch,
                                                                         samples)


class KLCritic:
    """Q ensemble + Polyak targets trained by `update(batch)` on mu's transitions."""

    def __init__(self, obs_dim: int, config: CriticConfig, *, n_actions: int | None = None,
                 action_dim: int | None = None, seed: int = 0):
        if (n_actions is None) == (action_dim is None):
            raise ValueError('give exactly one of n_actions (discrete) or action_dim '
                             '(continuous)')
        self.config = parse(CriticConfig, to_dict(config), 'CriticConfig')
        self.obs_dim, self.n_actions, self.action_dim = obs_dim, n_actions, action_dim
        self.is_discrete = n_actions is not None
        with seeded_init(seed):
            self.q = QEnsemble(obs_dim, self.config.hidden_sizes, self.config.num_q, n_actions,
                               action_dim)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.q.parameters(), lr=self.config.lr, foreach=True)
        self.updates = 0

    @torch.no_grad()
    def q_values(self, obs: torch.Tensor, actions: torch.Tensor | None = None) -> torch.Tensor:
        """Min over the ensemble: discrete (B, n); continuous at (B, d) -> (B,), (B, K, d) ->
        (B, K)."""
        return self.q(obs, actions).min(dim=0).values

    @torch.no_grad()
    def soft_value(self, obs: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """V(s) = alpha log E_mu exp(Q/alpha) with the online networks; support as in replay
        (continuous: the target's bias-corrected estimate)."""
        if self.is_discrete:
            return soft_value_discrete(self.q_values(obs), support, self.config.alpha)
        return soft_value_sampled_corrected(self.q_values(obs, support), self.config.alpha)

    @torch.no_grad()
    def target(self, batch: Batch) -> torch.Tensor:
        """y = r + gamma (1 - d) V_target(s'), with the minimum of the target ensemble."""
        cfg = self.config
        q_next = self.q_target(batch.next_obs, None if self.is_discrete else batch.next_support)
        q_next = q_next.min(dim=0).values
        if self.is_discrete:
            v_next = soft_value_discrete(q_next, batch.next_support, cfg.alpha)
        else:
            v_next = soft_value_sampled_corrected(q_next, cfg.alpha)
        return batch.reward + cfg.gamma * (1.0 - batch.done) * v_next

    @torch.no_grad()
    def target_sequences(self, batch: SequenceBatch) -> torch.Tensor:
        """The n-step target of step 0 of each sequence, m = the valid steps (1..n):

            y = sum_{k<m} g^k r_k - sum_{1<=k<m} g^k (Qbar(s_k, a_k) - Vbar(s_k))
                + g^m (1 - d_{m-1}) Vbar(s'_{m-1})

        With correction 'none' the middle sum is left out. alpha log(pi/mu)(a|s) = Q(s, a) -
        V(s) for the induced policy, so each subtracted term is the KL-regularized objective's
        charge for mu's action at s_k: at the soft fixed point E[r_k + g V(s_{k+1})] = Q(s_k,
        a_k) for any a_k, and y has the one-step target's expectation whatever mu chose (no
        importance weights). With m = 1 it is the one-step target."""
        cfg = self.config
        batch_size, n = batch.valid.shape
        flat_next = batch.next_obs.reshape(batch_size * n, -1)
        if self.is_discrete:
            q_next = self.q_target(flat_next).min(dim=0).values                 # (B n, A)
            support = batch.next_support.reshape(batch_size * n, -1)
            v_next = soft_value_discrete(q_next, support, cfg.alpha).view(batch_size, n)
            q_next = q_next.view(batch_size, n, -1)
        else:
            support = batch.next_support.reshape(batch_size * n, *batch.next_support.shape[2:])
            q_samples = self.q_target(flat_next, support).min(dim=0).values     # (B n, K)
            v_next = soft_value_sampled_corrected(q_samples, cfg.alpha).view(batch_size, n)
        valid = batch.valid
        discount = cfg.gamma ** torch.arange(n, dtype=valid.dtype)               # g^k
        y = (valid * discount * batch.reward).sum(dim=1)
        if cfg.n_step_correction == 'advantage' and n > 1:
            # s_k = next_obs of step k - 1 (valid steps continue exactly), a_k = action of step k
            if self.is_discrete:
                q_taken = q_next[:, :-1].gather(-1, batch.action[:, 1:, None]).squeeze(-1)
            else:
                q_taken = self.q_target(batch.next_obs[:, :-1].reshape(-1, self.obs_dim),
                                        batch.action[:, 1:].reshape(-1, self.action_dim))
                q_taken = q_taken.min(dim=0).values.view(batch_size, n - 1)
            advantage = q_taken - v_next[:, :-1]
            y = y - (valid[:, 1:] * discount[1:] * advantage).sum(dim=1)
        last = (valid.sum(dim=1).long() - 1).clamp_min(0)                       # m - 1
        rows = torch.arange(batch_size)
        bootstrap = (1.0 - batch.done[rows, last]) * v_next[rows, last]
        return y + cfg.gamma ** (last + 1).to(y.dtype) * bootstrap

    def q_taken(self, batch: Batch) -> torch.Tensor:
        """(num_q, B) Q of the actions in the batch, with gradient."""
        if self.is_discrete:
            q_all = self.q(batch.obs)
            index = batch.action.view(1, -1, 1).expand(q_all.shape[0], -1, 1)
            return q_all.gather(-1, index).squeeze(-1)
        return self.q(batch.obs, batch.action)

    def update(self, batch: Batch | SequenceBatch) -> dict[str, float]:
        """One gradient step of every Q network towards the shared target; then Polyak. A
        `SequenceBatch` trains step 0 of each sequence on its n-step target."""
        if isinstance(batch, SequenceBatch):
            y, batch = self.target_sequences(batch), batch.first()
        else:
            y = self.target(batch)
        q = self.q_taken(batch)
        loss = ((q - y.unsqueeze(0)) ** 2).mean(dim=1).sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        max_norm = self.config.grad_clip if self.config.grad_clip > 0 else math.inf
        grad_norm = nn.utils.clip_grad_norm_(self.q.parameters(), max_norm)
        self.optimizer.step()
        polyak_update(self.q_target, self.q, self.config.tau)
        self.updates += 1
        q = q.detach()
        return {'loss': loss.item(), 'q_mean': float(q.mean()), 'target_mean': float(y.mean()),
                'q_spread': float((q.max(dim=0).values - q.min(dim=0).values).mean()),
                'grad_norm': float(grad_norm)}

    def state_dict(self) -> dict:
        return {'kind': _CHECKPOINT_KIND, 'config': to_dict(self.config),
                'obs_dim': self.obs_dim, 'n_actions': self.n_actions,
                'action_dim': self.action_dim, 'updates': self.updates,
                'q': self.q.state_dict(), 'q_target': self.q_target.state_dict(),
                'optimizer': self.optimizer.state_dict()}

    def load_state_dict(self, state: dict, where: str = 'checkpoint') -> None:
        """Restore nets, targets, optimizer and update count; refuse a mismatched learner."""
        if not isinstance(state, dict) or state.get('kind') != _CHECKPOINT_KIND:
            raise CheckpointError(f'{where}: not a KLCritic checkpoint')
        mine = (self.obs_dim, self.n_actions, self.action_dim, to_dict(self.config))
        try:
            stored_config = to_dict(parse(CriticConfig, state['config'], f'{where}:config'))
        except ConfigError as exc:
            raise CheckpointError(str(exc)) from exc
        theirs = (state['obs_dim'], state['n_actions'], state['action_dim'], stored_config)
        if theirs != mine:
            raise CheckpointError(f'{where}: written for (obs_dim, n_actions, action_dim, '
                                  f'config) = {theirs}, this critic is {mine}')
        self.q.load_state_dict(state['q'])
        self.q_target.load_state_dict(state['q_target'])
        self.optimizer.load_state_dict(state['optimizer'])
        self.updates = int(state['updates'])

    def save(self, path: str | Path) -> Path:
        """Atomic checkpoint: the config travels with the weights."""
        return atomic_write(path, lambda f: torch.save(self.state_dict(), f))

    def load(self, path: str | Path) -> None:
        self.load_state_dict(load_checkpoint(path), str(path))


def load_checkpoint(path: str | Path) -> dict:
    """torch.load restricted to tensors and plain data, with a clear error for a bad file."""
    path = Path(path)
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f'{path}: checkpoint not found') from exc
    except Exception as exc:  # torch raises several unrelated types for a damaged file
        raise CheckpointError(f'{path}: corrupt checkpoint ({type(exc).__name__}: {exc})') \
            from exc
