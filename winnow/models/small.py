"""Small networks for small images (8x8 digits, 28x28 MNIST-like, 32x32 CIFAR-like): winnow's one
definition of each. Two families, because two stages want different things:

* the backbones ``SmallCNN`` and ``MLP`` (registry names ``small_cnn`` and ``mlp``; ``winnow embed
  --model`` and ``weight --trainable full``): raw pixels in, no input statistics, a penultimate
  layer to embed. ``MLP`` runs on the flattened pixels of a fixed image size.
* the reference trainer's ``StandardizedCNN`` and ``StandardizedMLP`` (``winnow train --model cnn``
  / ``mlp``): the input standardised with training-set statistics stored as buffers (the saved
  ``state_dict`` is the whole model); the CNN is one block deeper than ``SmallCNN`` (two
  max-pools), the MLP has BatchNorm and runs on a feature column (or flattened pixels).

All expose ``forward_features(x) -> (B, d)`` (the penultimate layer) and ``head`` (the last
``nn.Linear``), and ``forward(x) = head(forward_features(x))`` returns logits, so every stage
treats them like any other backbone.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Three conv blocks (32-64-128 channels) with global average pooling, for inputs of 8 px and up.

    Parameters
    ----------
    num_classes : int
        Number of output logits.
    in_channels : int
        1 for grayscale, 3 for RGB.
    width : int
        Channels of the first block; the others are 2x and 4x. The embedding has ``4 * width`` dims.
    """

    def __init__(self, num_classes: int, *, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn(in_channels, width),
            _conv_bn(width, 2 * width),
            nn.MaxPool2d(2),  # 8 px -> 4 px: still room for the third block
            _conv_bn(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.embedding_dim = 4 * width
        self.head = nn.Linear(self.embedding_dim, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, 4 * width) penultimate features."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, num_classes) logits."""
        return self.head(self.forward_features(x))


class MLP(nn.Module):
    """Two hidden layers on the flattened image (fixed input size, e.g. 1x8x8 or 1x28x28).

    Parameters
    ----------
    num_classes : int
        Number of output logits.
    in_features : int
        ``channels * height * width`` of the inputs.
    hidden : int
        Width of the hidden layers (the embedding has ``hidden`` dims).
    """

    def __init__(self, num_classes: int, *, in_features: int, hidden: int = 256) -> None:
        super().__init__()
        self.in_features = in_features
        self.features = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
        )
        self.embedding_dim = hidden
        self.head = nn.Linear(hidden, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) with C*H*W == in_features -> (B, hidden)."""
        if x[0].numel() != self.in_features:
            raise ValueError(
                f"MLP expects inputs of {self.in_features} values (C*H*W), got shape {tuple(x.shape[1:])}; "
                "set --image-size to the size the MLP was built for"
            )
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, num_classes) logits."""
        return self.head(self.forward_features(x))


class Standardize(nn.Module):
    """``(x - mean) / std`` with per-channel (images) or per-feature (vectors) buffers."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.detach().clone().float())
        self.register_buffer("std", std.detach().clone().float().clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class StandardizedCNN(nn.Module):
    """The reference trainer's CNN: input standardisation, four conv blocks (width, width, 2*width,
    4*width) with a max-pool after the second and third, global average pool. Any image size.

    Input ``(n, C, H, W)`` float in [0, 1]; output ``(n, num_classes)`` logits.
    """

    def __init__(self, in_channels: int, num_classes: int, *, width: int = 32,
                 mean: torch.Tensor | None = None, std: torch.Tensor | None = None) -> None:
        super().__init__()
        mean = torch.zeros(in_channels) if mean is None else mean
        std = torch.ones(in_channels) if std is None else std
        self.norm = Standardize(mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1))
        self.features = nn.Sequential(
            _conv_bn(in_channels, width),
            _conv_bn(width, width),
            nn.MaxPool2d(2),
            _conv_bn(width, 2 * width),
            nn.MaxPool2d(2),
            _conv_bn(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(4 * width, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(n, C, H, W) -> (n, 4 * width) penultimate features."""
        return self.features(self.norm(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


class StandardizedMLP(nn.Module):
    """The reference trainer's MLP: input standardisation, two hidden layers with BatchNorm and
    ReLU. Input ``(n, d)``; output ``(n, num_classes)`` logits."""

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

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(n, d) -> (n, hidden) penultimate features."""
        return self.body(self.norm(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))
