"""Learning to Reweight Examples (Ren et al., ICML 2018, Algorithm 1) on the forward-mode kernel.

The look-ahead theta_hat(eps) = theta - a * sum_i eps_i grad l_i(theta) gives
-dL_trusted(theta_hat)/d eps_i at eps = 0 equal to a * <grad l_i(theta), grad L_trusted(theta)>,
which :func:`~winnow.stages.weight.alignment.per_example_alignment` computes exactly in one pass.
"""

from __future__ import annotations

import torch
from torch import nn

from winnow.stages.weight import head_kernel
from winnow.stages.weight.alignment import (
    commit_buffers,
    mean_loss_gradient,
    per_example_alignment,
    scratch_buffers,
)
from winnow.stages.weight.step_output import StepOutput


def l2rw_weights(d: torch.Tensor, *, lr: float) -> torch.Tensor:
    """w_i = max(lr * d_i, 0), normalised to sum 1 over the batch; an all-zero batch stays zero.

    Parameters
    ----------
    d:
        (n,) alignments <grad l_i, grad L_trusted>.
    lr:
        Look-ahead step size a (> 0; it cancels in the normalisation but is kept for fidelity).

    Returns
    -------
    (n,) weights >= 0 summing to 1 (or all 0 when no example aligns with the trusted gradient).
    """
    raw = torch.clamp(lr * d, min=0.0)
    total = raw.sum()
    return raw / total if total > 0 else raw


def _unclipped(d: torch.Tensor) -> torch.Tensor:
    """The step's weights before L2RW's clip at 0: d_i / sum_j max(d_j, 0) (0 when none is positive)."""
    total = torch.clamp(d, min=0.0).sum()
    return d / total if total > 0 else torch.zeros_like(d)


def l2rw_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
              trusted_x: torch.Tensor, trusted_y: torch.Tensor, *, lr: float,
              loss_scale: torch.Tensor | None = None) -> StepOutput:
    """One L2RW step: trusted gradient, kernel pass, weighted update (weights sum to 1).

    Heads on embeddings take the closed form of :mod:`winnow.stages.weight.head_kernel` (same numbers,
    the cost of plain training); any other model the forward-mode kernel.
    Returns the (n,) normalised weights, the (n,) per-example losses and the weights before the
    clip at 0 (all detached).
    """
    if head_kernel.supports(model):
        v = head_kernel.trusted_gradient(model, trusted_x, trusted_y)
        hp = head_kernel.head_pass(model, x, y, loss_scale=loss_scale)
        d = head_kernel.alignment(hp, v)
        w = l2rw_weights(d, lr=lr)
        head_kernel.set_gradients(model, head_kernel.weighted_gradient(hp, w))
        optimizer.step()
        return StepOutput(w, hp.losses, _unclipped(d))
    params = dict(model.named_parameters())
    v, _ = mean_loss_gradient(model, params, trusted_x, trusted_y)
    buffers = scratch_buffers(model)
    losses, d = per_example_alignment(model, x, y, v, params=params, buffers=buffers, loss_scale=loss_scale)
    w = l2rw_weights(d, lr=lr)
    optimizer.zero_grad(set_to_none=True)
    (w * losses).sum().backward()
    optimizer.step()
    commit_buffers(model, buffers)
    return StepOutput(w, losses.detach(), _unclipped(d))
