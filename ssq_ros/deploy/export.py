"""The deployed policy alone: TorchScript plus its spaces, config and version, as bytes or a file.

An exported policy needs no training state and no ssq_ros learning code to run: the scripted
module maps observations and mu's probabilities to log-probabilities that are -inf wherever mu
is 0 (discrete: a fitted network, or the critic's exact induced policy pi_Q) or observations to
a Gaussian's mean and std (continuous). The metadata travels in the same TorchScript archive
(an extra file): one `bytes` value is all a ROS topic carries to hand a policy to an executor.
"""
from __future__ import annotations

import copy
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ssq_ros.config import ConfigError, parse, to_dict
from ssq_ros.learning.extraction import _LOG_STD_MAX, _LOG_STD_MIN
from ssq_ros.task.spaces import TaskSpaces, check_spaces

if TYPE_CHECKING:  # exporting needs a trained learner; loading and running need no training code
    from ssq_ros.training.learner import OnlineLearner

# /2: the discrete head takes mu's probabilities (was: a mask of the allowed actions), so the
# exact induced policy can be exported as well as a fitted network ('kind' in the metadata).
EXPORT_FORMAT = 'ssq_ros.policy/2'
_META_FILE = 'ssq_policy.json'


class PolicyExportError(ValueError):
    """Exported policy bytes or file are missing, corrupt, or of another format."""


class _MaskedCategorical(nn.Module):
    """log pi(.|s) of a fitted network, renormalised on the actions mu allows; -inf elsewhere.
    mu's probabilities only mask: the network was fitted to the induced policy with them."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, obs: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        logits = self.net(obs).masked_fill(mu <= 0, float('-inf'))
        return torch.log_softmax(logits, dim=-1)


class _InducedCategorical(nn.Module):
    """The exact induced policy log pi_Q(.|s) = log_softmax(Q(s,.)/alpha + log mu(.|s)), Q the
    minimum over the critic's online ensemble (as `KLCritic.q_values`); -inf where mu is 0."""

    def __init__(self, nets: nn.Module, num_q: int, alpha: float):
        super().__init__()
        self.nets = nets
        self.num_q = num_q
        self.alpha = alpha

    def forward(self, obs: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        q = self.nets(obs.unsqueeze(0).expand(self.num_q, -1, -1)).min(dim=0).values
        logits = (q / self.alpha + torch.log(mu)).masked_fill(mu <= 0, float('-inf'))
        return torch.log_softmax(logits, dim=-1)


class _DiagonalGaussian(nn.Module):
    """(mean, std) of pi(.|s), std clamped as during training."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.log_std_min = _LOG_STD_MIN
        self.log_std_max = _LOG_STD_MAX

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        return mean, log_std.clamp(self.log_std_min, self.log_std_max).exp()


class _GeometricMean(nn.Module):
    """log of the normalised geometric mean of discrete policies: softmax of their mean
    log-probabilities. For induced policies pi_k ∝ mu exp(Q_k/alpha) it is the induced policy
    of the mean critic, mu exp(mean_k Q_k / alpha) (each pi_k's normaliser cancels)."""

    def __init__(self, heads: list[torch.jit.ScriptModule]):
        super().__init__()
        self.heads = nn.ModuleList(heads)
        self.count = len(heads)

    def forward(self, obs: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        total = torch.zeros_like(mu)
        for head in self.heads:
            total = total + head(obs, mu)  # -inf where mu is 0, alike in every head
        return torch.log_softmax(total / self.count, dim=-1)


def _save(head: nn.Module, meta: dict[str, Any]) -> bytes:
    """Script `head` and save it with its metadata as TorchScript bytes."""
    head = head.eval().requires_grad_(False)
    with warnings.catch_warnings():
        # TorchScript is deprecated in favour of torch.export, but it is what loads with torch
        # alone (C++ included) and round-trips through bytes; keep it until that changes.
        warnings.simplefilter('ignore', DeprecationWarning)
        scripted = torch.jit.script(head)
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer, _extra_files={_META_FILE: json.dumps(meta)})
    return buffer.getvalue()


def export_policy(learner: OnlineLearner, train_config: dict[str, Any] | None = None) -> bytes:
    """The learner's current policy as self-contained TorchScript bytes: the fitted network,
    or (`learner.deploys_induced`) the critic's exact induced policy."""
    if learner.deploys_induced:
        critic = learner.critic
        head = _InducedCategorical(copy.deepcopy(critic.q.nets), critic.q.num_q,
                                   critic.config.alpha)
        kind = 'induced'
    else:
        net = copy.deepcopy(learner.extractor.policy.net)
        head = _MaskedCategorical(net) if learner.spaces.discrete else _DiagonalGaussian(net)
        kind = 'fitted'
    meta = {'format': EXPORT_FORMAT, 'kind': kind, 'policy_version': learner.policy_version,
            'spaces': to_dict(learner.spaces), 'alpha': learner.critic.config.alpha,
            'train_config': train_config or {}}
    return _save(head, meta)


def average_policies(policies: list[ExportedPolicy]) -> bytes:
    """One exported policy, the normalised geometric mean of discrete `policies` of the same
    run (same spaces, alpha and kind); its version is the last one's, `averaged_versions`
    lists all of them."""
    if not policies:
        raise ValueError('average_policies: no policy given')
    last = policies[-1]
    if not last.spaces.discrete:
        raise ValueError('average_policies: only discrete policies can be averaged')
    for policy in policies:
        if (policy.spaces, policy.alpha, policy.kind) != (last.spaces, last.alpha, last.kind):
            raise ValueError('average_policies: the policies differ in spaces, alpha or kind')
    meta = {'format': EXPORT_FORMAT, 'kind': last.kind, 'policy_version': last.policy_version,
            'averaged_versions': [p.policy_version for p in policies],
            'spaces': to_dict(last.spaces), 'alpha': last.alpha,
            'train_config': last.train_config}
    return _save(_GeometricMean([p.module for p in policies]), meta)


@dataclass
class ExportedPolicy:
    """A loaded policy: `module` is the TorchScript head, the rest its metadata."""

    module: torch.jit.ScriptModule
    spaces: TaskSpaces
    policy_version: int
    alpha: float
    train_config: dict[str, Any]
    kind: str = 'fitted'
    """'fitted' (a network fitted to the induced policy) or 'induced' (discrete: pi_Q itself)"""

    def _obs(self, obs) -> torch.Tensor:
        obs = np.asarray(obs, dtype=np.float32)
        if obs.shape != (self.spaces.obs_dim,):
            raise ValueError(f'observation must have shape ({self.spaces.obs_dim},), got '
                             f'{obs.shape}')
        if not np.all(np.isfinite(obs)):
            raise ValueError('observation contains NaN or inf')
        return torch.from_numpy(obs)[None]

    @torch.no_grad()
    def probabilities(self, obs, support) -> np.ndarray:
        """Discrete: pi(.|s) (n,), exactly 0 where mu is 0. `support`: mu's probabilities at s
        (n,), or a boolean mask of the allowed actions (mu uniform over them)."""
        if not self.spaces.discrete:
            raise ValueError('probabilities: this policy has continuous actions')
        support = np.asarray(support)
        if support.shape != (self.spaces.action_size,) or support.dtype.kind not in 'bf':
            raise ValueError(f'support must be {self.spaces.action_size} probabilities or '
                             f'booleans, got {support.dtype} {support.shape}')
        mu = support.astype(np.float32)
        if not np.all(np.isfinite(mu)) or np.any(mu < 0):
            raise ValueError('support probabilities must be finite and non-negative')
        if not np.any(mu > 0):
            raise ValueError('support: no action is allowed at this state')
        log_p = self.module(self._obs(obs), torch.from_numpy(mu / mu.sum())[None])[0]
        return log_p.exp().double().numpy()

    @torch.no_grad()
    def gaussian(self, obs) -> tuple[np.ndarray, np.ndarray]:
        """Continuous: mean and std of pi(.|s)."""
        if self.spaces.discrete:
            raise ValueError('gaussian: this policy has discrete actions')
        mean, std = self.module(self._obs(obs))
        return mean[0].double().numpy(), std[0].double().numpy()

    def log_prob(self, obs, actions) -> np.ndarray:
        """Continuous: log pi(a_i|s) (K,) of actions (K, d)."""
        mean, std = self.gaussian(obs)
        actions = np.asarray(actions, dtype=float)
        if actions.ndim != 2 or actions.shape[1] != mean.size:
            raise ValueError(f'actions must have shape (K, {mean.size}), got {actions.shape}')
        z = (actions - mean) / std
        return (-0.5 * z ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)).sum(axis=1)


def load_exported_policy(source: bytes | str | Path) -> ExportedPolicy:
    """Load bytes from `export_policy` (or a file holding them); errors name what is wrong."""
    if isinstance(source, (str, Path)):
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise PolicyExportError(f'{source}: cannot read exported policy ({exc})') from exc
        where = str(source)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data, where = bytes(source), 'exported policy bytes'
    else:
        raise TypeError(f'expected bytes or a path, got {type(source).__name__}')
    extra = {_META_FILE: ''}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', DeprecationWarning)
            module = torch.jit.load(io.BytesIO(data), map_location='cpu', _extra_files=extra)
    except Exception as exc:  # torch raises several unrelated types for damaged archives
        raise PolicyExportError(f'{where}: not a TorchScript archive '
                                f'({type(exc).__name__}: {exc})') from exc
    try:
        meta = json.loads(extra[_META_FILE])
    except (json.JSONDecodeError, TypeError) as exc:
        raise PolicyExportError(f'{where}: missing or corrupt {_META_FILE}') from exc
    found = meta.get('format') if isinstance(meta, dict) else None
    if found != EXPORT_FORMAT:
        raise PolicyExportError(f'{where}: format {found!r}, expected {EXPORT_FORMAT!r}')
    try:
        spaces = check_spaces(parse(TaskSpaces, meta['spaces'], f'{where}:spaces'))
    except (ConfigError, KeyError) as exc:
        raise PolicyExportError(f'{where}: bad spaces ({exc})') from exc
    kind = meta.get('kind')
    if kind not in ('fitted', 'induced') or (kind == 'induced' and not spaces.discrete):
        raise PolicyExportError(f'{where}: unknown policy kind {kind!r} for these spaces')
    return ExportedPolicy(module.eval(), spaces, int(meta['policy_version']),
                          float(meta['alpha']), dict(meta.get('train_config') or {}), kind)
