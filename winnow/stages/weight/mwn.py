"""Meta-Weight-Net (Shu et al., NeurIPS 2019) with the exact meta-gradient from the kernel.

With w(phi) = V(l; phi) / sum V(l; phi) (per-batch normalisation: the un-normalised variant is
known to saturate) and the one-step look-ahead theta_hat = theta - a * sum_i w_i grad l_i(theta),

    dL_trusted(theta_hat)/dphi = sum_i (-a <grad L_trusted(theta_hat), grad l_i(theta)>) dw_i/dphi,

so one trusted pass at theta_hat gives v, the kernel gives every <v, grad l_i(theta)>, and a
backward through the small net V alone finishes the job: no double backward through the model.
V takes the detached losses as input, as in the authors' code.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from winnow.stages.weight import head_kernel
from winnow.stages.weight.alignment import (
    mean_loss_gradient,
    per_example_alignment,
    per_example_losses,
)
from winnow.stages.weight.step_output import StepOutput


def mwn_weights(vnet: nn.Module, losses: torch.Tensor) -> torch.Tensor:
    """Normalised weights V(l_i) / sum_j V(l_j), shape (n,), from detached losses (n,)."""
    raw = vnet(losses.detach().to(next(vnet.parameters()).dtype)).to(losses.dtype)
    total = raw.sum()
    return raw / total if total.detach() > 0 else raw


def mwn_meta_gradient(model: nn.Module, vnet: nn.Module, losses: torch.Tensor, x: torch.Tensor,
                      y: torch.Tensor, trusted_x: torch.Tensor, trusted_y: torch.Tensor, *, lr: float,
                      loss_scale: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Exact gradient of L_trusted(theta_hat(phi)) with respect to V's parameters phi.

    Parameters
    ----------
    losses:
        (n,) per-example losses of (x, y) at the model's parameters, still attached to their
        graph (the look-ahead gradient is taken from it with ``retain_graph``).
    lr:
        Look-ahead step size a.

    Returns
    -------
    One gradient tensor per parameter of ``vnet`` (in ``vnet.parameters()`` order).
    """
    params = dict(model.named_parameters())
    w_old = mwn_weights(vnet, losses).detach()
    grads = torch.autograd.grad((w_old * losses).sum(), list(params.values()), retain_graph=True)
    theta_hat = {k: p.detach() - lr * g for (k, p), g in zip(params.items(), grads)}
    v, _ = mean_loss_gradient(model, theta_hat, trusted_x, trusted_y)
    detached = {k: p.detach() for k, p in params.items()}
    _, d = per_example_alignment(model, x, y, v, params=detached, loss_scale=loss_scale)
    surrogate = (-lr * d * mwn_weights(vnet, losses)).sum()
    return list(torch.autograd.grad(surrogate, list(vnet.parameters())))


def mwn_step(model: nn.Module, optimizer: torch.optim.Optimizer, vnet: nn.Module,
             vnet_optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
             trusted_x: torch.Tensor, trusted_y: torch.Tensor, *, lr: float, meta: bool = True,
             loss_scale: torch.Tensor | None = None) -> StepOutput:
    """One Meta-Weight-Net step: (if ``meta``) update phi with Adam, then the weighted model step.

    The real forward pass uses the model's own buffers (BatchNorm running statistics advance once,
    as in plain SGD); the look-ahead and kernel passes use throw-away copies. Heads on embeddings
    take the closed form of :mod:`winnow.stages.weight.head_kernel` for all three passes.
    Returns the (n,) normalised weights from the updated net and the (n,) losses (detached).
    """
    if head_kernel.supports(model):
        return _mwn_head_step(model, optimizer, vnet, vnet_optimizer, x, y, trusted_x, trusted_y, lr=lr,
                              meta=meta, loss_scale=loss_scale)
    losses = per_example_losses(model, None, None, x, y, loss_scale)  # real pass: own buffers advance
    if meta:
        meta_grads = mwn_meta_gradient(model, vnet, losses, x, y, trusted_x, trusted_y, lr=lr,
                                       loss_scale=loss_scale)
        vnet_optimizer.zero_grad(set_to_none=True)
        for p, g in zip(vnet.parameters(), meta_grads):
            p.grad = g
        vnet_optimizer.step()
    with torch.no_grad():
        w = mwn_weights(vnet, losses)
    optimizer.zero_grad(set_to_none=True)
    (w * losses).sum().backward()
    optimizer.step()
    return StepOutput(w, losses.detach())


class _VNetPass(NamedTuple):
    """One forward pass of the paper's weighting net, keeping what its gradient needs."""

    x: torch.Tensor  # (n, 1) losses
    pre: torch.Tensor  # (n, h) hidden pre-activations
    hidden: torch.Tensor  # (n, h)
    v: torch.Tensor  # (n,) V(l_i) in (0, 1)

    @property
    def normalised(self) -> torch.Tensor:
        """The step's weights V_i / sum_j V_j (sigmoid outputs: the sum is > 0)."""
        return self.v / self.v.sum()


@torch.no_grad()
def _vnet_pass(vnet: nn.Module, losses: torch.Tensor) -> _VNetPass:
    """V(l) for the paper's :class:`~winnow.models.meta_weight_net.MetaWeightNet`, layer by layer."""
    x = head_kernel.as_dtype(losses.detach(), vnet.hidden.weight.dtype).reshape(-1, 1)
    pre = F.linear(x, vnet.hidden.weight, vnet.hidden.bias)
    hidden = torch.relu(pre)
    v = torch.sigmoid(F.linear(hidden, vnet.out.weight, vnet.out.bias)).reshape(-1)
    return _VNetPass(x, pre, hidden, v)


@torch.no_grad()
def normalised_weight_gradient(vnet: nn.Module, losses: torch.Tensor, coef: torch.Tensor, *,
                               forward: _VNetPass | None = None) -> list[torch.Tensor]:
    """Gradient of sum_i coef_i * V(l_i) / sum_j V(l_j) with respect to V's parameters, by hand.

    The same numbers as autograd through :func:`mwn_weights` (tested), in a dozen small tensor
    operations instead of a graph: on a head, where a step is a few matrix products, autograd's
    bookkeeping for the 1-100-1 net was most of Meta-Weight-Net's cost. Needs the paper's
    :class:`~winnow.models.meta_weight_net.MetaWeightNet` (sigmoid of a one-hidden-layer ReLU net).
    ``forward``: that net's pass on ``losses`` at its current parameters, if already made.
    """
    f = _vnet_pass(vnet, losses) if forward is None else forward
    c = head_kernel.as_dtype(coef.detach(), f.v.dtype)
    total = f.v.sum()
    # d/dV_i of sum_i c_i V_i / sum V = (c_i - sum_j c_j w_j) / sum V; then through the sigmoid.
    g_out = (c - (c * f.v).sum() / total) / total * f.v * (1 - f.v)  # (n,)
    g_hidden = (g_out.unsqueeze(1) * vnet.out.weight) * (f.pre > 0)  # (n, h)
    return [g_hidden.T @ f.x, g_hidden.sum(0), (g_out @ f.hidden).unsqueeze(0), g_out.sum().reshape(1)]


def _mwn_head_step(model: nn.Module, optimizer: torch.optim.Optimizer, vnet: nn.Module,
                   vnet_optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                   trusted_x: torch.Tensor, trusted_y: torch.Tensor, *, lr: float, meta: bool,
                   loss_scale: torch.Tensor | None) -> StepOutput:
    """:func:`mwn_step` for a Linear/MLP head: look-ahead, trusted gradient, alignments and the
    weighting net's meta-gradient in closed form."""
    params = dict(model.named_parameters())
    hp = head_kernel.head_pass(model, x, y, params=params, loss_scale=loss_scale)
    if meta:
        before = _vnet_pass(vnet, hp.losses)
        step = head_kernel.weighted_gradient(hp, head_kernel.as_dtype(before.normalised, hp.losses.dtype))
        theta_hat = {k: p.detach() - lr * step[k] for k, p in params.items()}
        v = head_kernel.trusted_gradient(model, trusted_x, trusted_y, params=theta_hat)
        d = head_kernel.alignment(hp, v)
        meta_grads = normalised_weight_gradient(vnet, hp.losses, -lr * d, forward=before)
        # Assigning .grad replaces the last step's (no zero_grad needed): on a head, each
        # optimizer call's bookkeeping is a visible share of the step.
        for p, g in zip(vnet.parameters(), meta_grads):
            p.grad = g
        vnet_optimizer.step()
    w = head_kernel.as_dtype(_vnet_pass(vnet, hp.losses).normalised, hp.losses.dtype)
    head_kernel.set_gradients(model, head_kernel.weighted_gradient(hp, w), params=params)
    optimizer.step()
    return StepOutput(w, hp.losses)


@torch.no_grad()
def mwn_curve(vnet: nn.Module, *, max_loss: float, points: int = 101) -> dict[str, torch.Tensor]:
    """V's loss -> weight curve (un-normalised sigmoid outputs) on [0, max_loss]."""
    dtype = next(vnet.parameters()).dtype
    grid = torch.linspace(0.0, max_loss, points, dtype=dtype, device=next(vnet.parameters()).device)
    return {"loss": grid, "weight": vnet(grid)}
