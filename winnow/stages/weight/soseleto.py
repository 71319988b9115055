"""SOSELETO (Litany & Freedman): persistent source-example weights alpha chosen by the target set.

alpha_{m+1} = clip(alpha_m + lr_alpha * lr * Q^T grad L_target(theta_m), 0, 1), where column i of Q
is grad l_i(theta_m): Q^T v is exactly the kernel's d. The model steps on the alpha-weighted loss
with the alphas of step m, as in the paper's alternating update.
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


def soseleto_update(alpha: torch.Tensor, d: torch.Tensor, *, lr_alpha: float, lr: float) -> torch.Tensor:
    """alpha <- clip(alpha + lr_alpha * lr * d, 0, 1), elementwise over (n,) tensors."""
    return torch.clamp(alpha + lr_alpha * lr * d, 0.0, 1.0)


def soseleto_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                  trusted_x: torch.Tensor, trusted_y: torch.Tensor, alpha: torch.Tensor, *, lr: float,
                  lr_alpha: float, loss_scale: torch.Tensor | None = None,
                  ) -> StepOutput:
    """One SOSELETO step on a batch whose current alphas are ``alpha`` (n,).

    Heads on embeddings take the closed form of :mod:`winnow.stages.weight.head_kernel`.
    Returns the updated (n,) alphas (as ``weights``) and the (n,) per-example losses (detached).
    """
    if head_kernel.supports(model):
        v = head_kernel.trusted_gradient(model, trusted_x, trusted_y)
        hp = head_kernel.head_pass(model, x, y, loss_scale=loss_scale)
        d = head_kernel.alignment(hp, v)
        coef = alpha.to(hp.losses.dtype) / hp.losses.shape[0]
        head_kernel.set_gradients(model, head_kernel.weighted_gradient(hp, coef))
        optimizer.step()
        return StepOutput(soseleto_update(alpha, d.to(alpha.dtype), lr_alpha=lr_alpha, lr=lr), hp.losses)
    params = dict(model.named_parameters())
    v, _ = mean_loss_gradient(model, params, trusted_x, trusted_y)
    buffers = scratch_buffers(model)
    losses, d = per_example_alignment(model, x, y, v, params=params, buffers=buffers, loss_scale=loss_scale)
    optimizer.zero_grad(set_to_none=True)
    (alpha.to(losses.dtype) * losses).mean().backward()
    optimizer.step()
    commit_buffers(model, buffers)
    return StepOutput(soseleto_update(alpha, d.to(alpha.dtype), lr_alpha=lr_alpha, lr=lr), losses.detach())
