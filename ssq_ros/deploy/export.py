"""The extracted policy alone: TorchScript plus its spaces, config and version, as bytes or a file.

An exported policy needs no training state and no ssq_ros learning code to run: the scripted
module maps observations to masked log-probabilities (discrete) or a Gaussian's mean and std
(continuous). The metadata travels inside the same TorchScript archive (an extra file), so one
`bytes` value is all a ROS topic has to carry to hand a new policy version to an executor.
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

EXPORT_FORMAT = 'ssq_ros.policy/1'
_META_FILE = 'ssq_policy.json'


class PolicyExportError(ValueError):
    """Exported policy bytes or file are missing, corrupt, or of another format."""


class _MaskedCategorical(nn.Module):
    """log pi(.|s) renormalised on the allowed actions; -inf elsewhere."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, obs: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        logits = self.net(obs).masked_fill(~allowed, float('-inf'))
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


def export_policy(learner: OnlineLearner, train_config: dict[str, Any] | None = None) -> bytes:
    """The learner's current extracted policy as self-contained TorchScript bytes."""
    net = copy.deepcopy(learner.extractor.policy.net).eval()
    head = _MaskedCategorical(net) if learner.spaces.discrete else _DiagonalGaussian(net)
    with warnings.catch_warnings():
        # TorchScript is deprecated in favour of torch.export, but it is what loads with torch
        # alone (C++ included) and round-trips through bytes; keep it until that changes.
        warnings.simplefilter('ignore', DeprecationWarning)
        scripted = torch.jit.script(head)
    meta = {'format': EXPORT_FORMAT, 'policy_version': learner.policy_version,
            'spaces': to_dict(learner.spaces), 'alpha': learner.critic.config.alpha,
            'train_config': train_config or {}}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        torch.jit.save(scripted, buffer, _extra_files={_META_FILE: json.dumps(meta)})
    return buffer.getvalue()


@dataclass
class ExportedPolicy:
    """A loaded policy: `module` is the TorchScript head, the rest its metadata."""

    module: torch.jit.ScriptModule
    spaces: TaskSpaces
    policy_version: int
    alpha: float
    train_config: dict[str, Any]

    def _obs(self, obs) -> torch.Tensor:
        obs = np.asarray(obs, dtype=np.float32)
        if obs.shape != (self.spaces.obs_dim,):
            raise ValueError(f'observation must have shape ({self.spaces.obs_dim},), got '
                             f'{obs.shape}')
        if not np.all(np.isfinite(obs)):
            raise ValueError('observation contains NaN or inf')
        return torch.from_numpy(obs)[None]

    @torch.no_grad()
    def probabilities(self, obs, allowed) -> np.ndarray:
        """Discrete: pi(.|s) on the allowed actions (n,), exactly 0 elsewhere."""
        if not self.spaces.discrete:
            raise ValueError('probabilities: this policy has continuous actions')
        allowed = np.asarray(allowed)
        if allowed.dtype != bool or allowed.shape != (self.spaces.action_size,):
            raise ValueError(f'allowed must be {self.spaces.action_size} booleans, got '
                             f'{allowed.dtype} {allowed.shape}')
        if not allowed.any():
            raise ValueError('allowed: no action is allowed at this state')
        log_p = self.module(self._obs(obs), torch.from_numpy(allowed)[None])[0]
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
    return ExportedPolicy(module.eval(), spaces, int(meta['policy_version']),
                          float(meta['alpha']), dict(meta.get('train_config') or {}))
