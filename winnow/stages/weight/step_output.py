"""What one weighting step returns to the epoch loop."""

from __future__ import annotations

from typing import NamedTuple

import torch


class StepOutput(NamedTuple):
    """One step's per-example results, all (n,) and detached.

    weights:
        The weight each example trained with in this step (the method's own rule).
    losses:
        Per-example losses at the step's parameters.
    unclipped:
        L2RW only: the step's weights before its clip at 0, d_i / sum_j max(d_j, 0). Their mean
        over steps, clipped once, is the ``weight`` column of L2RW (see :mod:`winnow.stages.weight.rounds`).
    """

    weights: torch.Tensor
    losses: torch.Tensor
    unclipped: torch.Tensor | None = None
