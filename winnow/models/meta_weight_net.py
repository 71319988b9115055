"""Meta-Weight-Net (Shu et al., NeurIPS 2019): a 1-100-1 MLP mapping a loss to a weight in (0, 1)."""

from __future__ import annotations

import torch
from torch import nn


class MetaWeightNet(nn.Module):
    """V(l; phi) = sigmoid(W2 relu(W1 l + b1) + b2), the paper's weighting function.

    Parameters
    ----------
    hidden:
        Width of the hidden layer (the paper uses 100).
    """

    def __init__(self, hidden: int = 100) -> None:
        super().__init__()
        self.hidden = nn.Linear(1, hidden)
        self.out = nn.Linear(hidden, 1)

    def forward(self, loss: torch.Tensor) -> torch.Tensor:
        """Map per-example losses of shape (n,) to weights of shape (n,) in (0, 1)."""
        z = torch.relu(self.hidden(loss.reshape(-1, 1)))
        return torch.sigmoid(self.out(z)).reshape(-1)
