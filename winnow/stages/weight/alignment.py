"""The central kernel: d_i = <grad l_i(theta), v> for every example of a batch in ONE forward pass.

The parameters become forward-mode dual numbers with tangent ``v`` (``torch.autograd.forward_ad``)
and the model runs through ``torch.func.functional_call``; the tangent of each per-example loss is
d_i exactly. The primal losses keep their reverse-mode graph to the real parameters, so the same
pass serves the real (weighted) update: no double backward, no per-example gradients, no model copy.
Train-mode BatchNorm and the first layer use the cheaper tangent rules of
:mod:`winnow.stages.weight.tangent_rules` (same primal values, statistics and gradients; tangents in
closed form, not recorded).

BatchNorm statistics, per pass (the model is always in train mode while weighting):

* kernel pass on the training batch: batch statistics of that batch (as plain SGD). It runs on
  scratch copies of the buffers; :func:`commit_buffers` copies the scratch running statistics back,
  so the real model's running statistics advance exactly once per real step, as in plain SGD;
* trusted/validation passes (``v = grad L_trusted``, the Meta-Weight-Net look-ahead pass): batch
  statistics of the trusted batch, as the papers' code does (their meta models are in train mode);
  they run on throw-away buffer copies and never change the real running statistics;
* evaluation (trusted loss/accuracy per epoch): eval mode, running statistics.
"""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as fwad
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from winnow.stages.weight.tangent_rules import benefits_from_fast_tangents, fast_tangents

Tensors = dict[str, torch.Tensor]


def scratch_buffers(model: nn.Module) -> Tensors:
    """Copies of the model's buffers, for a pass that must not touch its running statistics."""
    return {name: b.clone() for name, b in model.named_buffers()}


@torch.no_grad()
def commit_buffers(model: nn.Module, buffers: Tensors) -> None:
    """Copy (the primal values of) scratch buffers back into the model's own buffers."""
    for name, b in model.named_buffers():
        b.copy_(buffers[name].detach())


def ties_weights(model: nn.Module) -> bool:
    """Whether two modules hold the same parameter or buffer tensor (tied weights).

    A submodule shared under two names is not a tie: swapping its tensor reaches both names.
    """
    seen: set[int] = set()
    for module in model.modules():
        for t in (*module._parameters.values(), *module._buffers.values()):
            if t is not None:
                if id(t) in seen:
                    return True
                seen.add(id(t))
    return False


def per_example_losses(model: nn.Module, params: Tensors | None, buffers: Tensors | None, x: torch.Tensor,
                       y: torch.Tensor, loss_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Per-example cross-entropy (n,) of ``model`` at ``params``, times ``loss_scale`` (n,) if given.

    ``params=None`` calls the model as it is (its own parameters and buffers): no swapping, which
    costs about as much as a small MLP's forward. ``functional_call`` looks for tied weights only
    in models that have them, for the same reason.
    """
    if params is None:
        logits = model(x)
    else:
        logits = functional_call(model, (params, buffers or {}), (x,), tie_weights=ties_weights(model))
    losses = F.cross_entropy(logits, y, reduction="none")
    return losses if loss_scale is None else losses * loss_scale


def _are_own_parameters(model: nn.Module, params: Tensors) -> bool:
    own = dict(model.named_parameters())
    return params.keys() == own.keys() and all(params[k] is p and p.requires_grad for k, p in own.items())


def mean_loss_gradient(model: nn.Module, params: Tensors, x: torch.Tensor, y: torch.Tensor, *,
                       loss_scale: torch.Tensor | None = None) -> tuple[Tensors, torch.Tensor]:
    """v = grad of the mean loss over (x, y) at ``params``, with throw-away BatchNorm buffers.

    Returns the gradient (same keys and shapes as ``params``, detached) and the mean loss (scalar).
    """
    if _are_own_parameters(model, params) and not any(True for _ in model.buffers()):
        leaves, loss = params, per_example_losses(model, None, None, x, y, loss_scale).mean()
    else:
        leaves = {k: p.detach().requires_grad_(True) for k, p in params.items()}
        loss = per_example_losses(model, leaves, scratch_buffers(model), x, y, loss_scale).mean()
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return dict(zip(leaves, grads)), loss.detach()


def per_example_alignment(model: nn.Module, x: torch.Tensor, y: torch.Tensor, tangent: Tensors, *,
                          params: Tensors | None = None, buffers: Tensors | None = None,
                          loss_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Losses l_i and alignments d_i = <grad_theta l_i(theta), v> in one forward-mode pass.

    Parameters
    ----------
    model:
        Any ``nn.Module`` (in train mode for BatchNorm batch statistics).
    x, y:
        Batch inputs (n, ...) and integer labels (n,).
    tangent:
        v, one tensor per parameter name, same shapes as the parameters.
    params:
        Parameters to evaluate at (default: the model's own, so the losses backpropagate into them).
    buffers:
        Buffers to use; BatchNorm updates them in place. Default: scratch copies (see
        :func:`scratch_buffers`); pass your own to :func:`commit_buffers` them afterwards.
    loss_scale:
        Optional per-example loss multipliers (n,), e.g. CRAIG coreset weights.

    Returns
    -------
    losses:
        (n,) primal per-example losses, attached to the reverse-mode graph of ``params``.
    d:
        (n,) detached directional derivatives d_i = <grad l_i, v>.
    """
    params = dict(model.named_parameters()) if params is None else params
    buffers = scratch_buffers(model) if buffers is None else buffers
    missing = set(params) - set(tangent)
    if missing:
        raise ValueError(f"tangent lacks parameters {sorted(missing)}")
    with fwad.dual_level(), fast_tangents(benefits_from_fast_tangents(model)):
        duals = {k: fwad.make_dual(p, tangent[k].to(p.dtype)) for k, p in params.items()}
        losses = per_example_losses(model, duals, buffers, x, y, loss_scale)
        primal, d = fwad.unpack_dual(losses)
        # BatchNorm wrote dual values into the buffers: keep only their primal part.
        for k, b in buffers.items():
            buffers[k] = fwad.unpack_dual(b).primal.detach()
    if d is None:  # the losses do not depend on the parameters at all
        d = torch.zeros_like(primal)
    return primal, d.detach()
