"""Classifier heads trained on frozen embeddings (the weight stage's ``--trainable head``)."""

from __future__ import annotations

import torch
from torch import nn


class LinearHead(nn.Module):
    """Logits = W x + b for embeddings x of shape (n, in_features)."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings (n, in_features) -> logits (n, num_classes)."""
        return self.fc(x)


class MLPHead(nn.Module):
    """One hidden ReLU layer: in_features -> hidden -> num_classes."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 256) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings (n, in_features) -> logits (n, num_classes)."""
        return self.fc2(torch.relu(self.fc1(x)))
