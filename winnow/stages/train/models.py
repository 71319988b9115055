"""The reference trainer's two built-in models: a small CNN for small images, an MLP for vectors.

Both standardise their input with statistics of the training set, stored as buffers so that the
saved ``state_dict`` is the whole model. Larger backbones come from ``winnow.models.registry`` through
``train_model(..., model_factory=...)``.
"""

from __future__ import annotations

import torch
from torch import nn


class Standardize(nn.Module):
    """``(x - mean) / std`` with per-channel (images) or per-feature (vectors) buffers."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.detach().clone().float())
        self.register_buffer("std", std.detach().clone().float().clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Three conv blocks (width, 2*width, 4*width), max-pooling between them, global average pool.

    Input ``(n, C, H, W)`` float in [0, 1] with ``H, W <= 32``; output ``(n, num_classes)`` logits.
    """

    def __init__(self, in_channels: int, num_classes: int, *, width: int = 32,
                 mean: torch.Tensor | None = None, std: torch.Tensor | None = None) -> None:
        super().__init__()
        mean = torch.zeros(in_channels) if mean is None else mean
        std = torch.ones(in_channels) if std is None else std
        self.norm = Standardize(mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1))
        self.features = nn.Sequential(
            _block(in_channels, width),
            _block(width, width),
            nn.MaxPool2d(2),
            _block(width, 2 * width),
            nn.MaxPool2d(2),
            _block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.norm(x)))


class MLP(nn.Module):
    """Two hidden layers with BatchNorm and ReLU. Input ``(n, d)``; output ``(n, num_classes)`` logits."""

    def __init__(self, in_features: int, num_classes: int, *, hidden: int = 256,
                 mean: torch.Tensor | None = None, std: torch.Tensor | None = None) -> None:
        super().__init__()
        mean = torch.zeros(in_features) if mean is None else mean
        std = torch.ones(in_features) if std is None else std
        self.norm = Standardize(mean.view(1, -1), std.view(1, -1))
        self.body = nn.Sequential(
            nn.Linear(in_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
        )
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.norm(x)))
