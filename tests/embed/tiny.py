"""A tiny network of the kind ``--model-file`` takes, shared by the embed and reliability tests."""

from __future__ import annotations

import torch
from torch import nn


class TinyEmbedder(nn.Module):
    """(B, 1, 8, 8) images -> (embedding (B, 4), logits (B, 3)), as ``--model-file`` networks give."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.conv(x)).mean((2, 3))
        return h, self.fc(h)
