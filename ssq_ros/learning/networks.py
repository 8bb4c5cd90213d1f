"""Small torch building blocks shared by the critic, the extracted policies and cloned behavior."""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn


def mlp(in_dim: int, hidden_sizes: Sequence[int], out_dim: int) -> nn.Sequential:
    """ReLU multilayer perceptron acting on the last axis (any leading batch axes)."""
    layers: list[nn.Module] = []
    width = in_dim
    for size in hidden_sizes:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


@contextlib.contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Context in which module construction draws from `seed` without touching global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def polyak_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """target <- (1 - tau) * target + tau * source, parameter by parameter."""
    with torch.no_grad():
        for target_param, param in zip(target.parameters(), source.parameters(), strict=True):
            target_param.lerp_(param, tau)


class EnsembleLinear(nn.Module):
    """`num` independent linear layers applied in one batched matmul: (E, N, in) -> (E, N, out)."""

    def __init__(self, num: int, in_dim: int, out_dim: int):
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)  # the default nn.Linear initialisation range
        self.weight = nn.Parameter(torch.empty(num, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num, 1, out_dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


def ensemble_mlp(num: int, in_dim: int, hidden_sizes: Sequence[int],
                 out_dim: int) -> nn.Sequential:
    """`num` independent ReLU MLPs evaluated together on inputs shaped (E, N, in_dim)."""
    layers: list[nn.Module] = []
    width = in_dim
    for size in hidden_sizes:
        layers += [EnsembleLinear(num, width, size), nn.ReLU()]
        width = size
    layers.append(EnsembleLinear(num, width, out_dim))
    return nn.Sequential(*layers)
