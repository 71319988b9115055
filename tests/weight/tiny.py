"""Tiny models and random float64 data for the weight-stage tests."""

from __future__ import annotations

import torch
from torch import nn


class TinyCNN(nn.Module):
    """Conv -> BatchNorm -> ReLU -> pool -> linear: small, but with running statistics."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 2 * 2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.relu(self.bn(self.conv(x)))
        return self.fc(nn.functional.adaptive_avg_pool2d(z, 2).flatten(1))


class TinyMLP(nn.Module):
    def __init__(self, d: int = 5, classes: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, 7), nn.Tanh(), nn.Linear(7, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def make_case(kind: str, n: int = 12, m: int = 6, seed: int = 0):
    """(model, x, y, trusted_x, trusted_y) in float64 for kind 'cnn' or 'mlp'."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    if kind == "cnn":
        model = TinyCNN().double()
        shape = (3, 6, 6)
    else:
        model = TinyMLP().double()
        shape = (5,)
    x = torch.randn(n, *shape, generator=g, dtype=torch.float64)
    tx = torch.randn(m, *shape, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=g)
    ty = torch.randint(0, 3, (m,), generator=g)
    model.train()
    return model, x, y, tx, ty
