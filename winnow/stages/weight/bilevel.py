"""Deep Bilevel Learning (Jenni & Favaro, ECCV 2018): one weight per training mini-batch.

Each step splits its batch into k mini-batches that share one label distribution and weighs
mini-batch i by omega_i = <g_V, g_i> / (<g_i, g_i> + mu), then omega / sum|omega| with negative
weights kept, as the authors' code does. (The slide in shared/seeds/000_* renders the denominator
as |grad l_j|^2 / (lambda' + mu'), which is garbled; we follow the code.) The model takes a
momentum-SGD step on sum_i omega_i g_i.

The k mini-batch gradients come from one vectorised pass (``torch.func.vmap`` over
``torch.func.grad``) or, for models with BatchNorm, k ordinary passes (faster on CPU): the same
flops as one forward/backward of the whole batch. BatchNorm uses
each mini-batch's own statistics (as separate passes would); every mini-batch updates its own
copy of the running statistics and the real ones become their mean (exact for running means of
equal-sized mini-batches; the running variance is the mean of per-mini-batch updates).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from winnow.stages.weight import head_kernel
from winnow.stages.weight.alignment import Tensors, mean_loss_gradient
from winnow.stages.weight.step_output import StepOutput
from winnow.stages.weight.tangent_rules import has_batch_norm


def stratified_groups(y: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split batch positions into k mini-batches with (nearly) the same label distribution.

    Positions are sorted by label and dealt round-robin, so every class is spread evenly.

    Returns
    -------
    index:
        (k', m) long positions into the batch (k' = min(k, n), m = ceil(n / k')); padded slots
        repeat position 0.
    mask:
        (k', m) bool, False on padded slots.
    """
    n = y.shape[0]
    k = max(1, min(k, n))
    m = -(-n // k)
    order = torch.argsort(y, stable=True)
    slot = torch.arange(n, device=y.device)
    index = torch.zeros(k, m, dtype=torch.long, device=y.device)
    mask = torch.zeros(k, m, dtype=torch.bool, device=y.device)
    index[slot % k, slot // k] = order
    mask[slot % k, slot // k] = True
    return index, mask


def bilevel_omega(g_val: Tensors, g_groups: Tensors, *, mu: float) -> torch.Tensor:
    """omega_i = <g_V, g_i> / (<g_i, g_i> + mu), normalised by sum|omega| (negatives kept).

    Parameters
    ----------
    g_val:
        Validation mini-batch gradient, one tensor per parameter.
    g_groups:
        Mini-batch gradients, one (k, *param_shape) tensor per parameter.

    Returns
    -------
    (k,) weights with sum |omega| = 1 (all zero if every raw weight is zero).
    """
    dots = sum((g_groups[n].flatten(1) * g_val[n].flatten()).sum(1) for n in g_val)
    norms = sum(g_groups[n].flatten(1).pow(2).sum(1) for n in g_val)
    return _normalised(dots / (norms + mu))


def _normalised(raw: torch.Tensor) -> torch.Tensor:
    total = raw.abs().sum()
    return raw / total if total > 0 else raw


def _per_example_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                      val_x: torch.Tensor, val_y: torch.Tensor, *, mu: float,
                      loss_scale: torch.Tensor | None) -> StepOutput:
    """Mini-batches of one example on a Linear/MLP head: omega_i from the closed forms
    <g_V, g_i> = alignment and |g_i|^2 = squared_norms, with no per-example gradient built."""
    g_val = head_kernel.trusted_gradient(model, val_x, val_y)
    hp = head_kernel.head_pass(model, x, y, loss_scale=loss_scale)
    raw = head_kernel.alignment(hp, g_val) / (head_kernel.squared_norms(hp) + mu)
    omega = _normalised(raw)
    head_kernel.set_gradients(model, head_kernel.weighted_gradient(hp, omega))
    optimizer.step()
    return StepOutput(omega * omega.shape[0], hp.losses)


def group_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor,
                    mask: torch.Tensor, *, loss_scale: torch.Tensor | None = None,
                    vectorize: bool | None = None) -> tuple[Tensors, torch.Tensor, Tensors]:
    """Gradients of each mini-batch's mean loss: one vmapped pass, or k passes with BatchNorm.

    Without BatchNorm, ``vmap`` over ``torch.func.grad`` saves the per-call overhead of k small
    passes. With BatchNorm (convolutional models) a loop of k ordinary forward/backward passes is
    cheaper on CPU (the batched convolution and BatchNorm rules cost ~1.6x one full-batch pass,
    the loop ~1.05x); both compute the same thing, each mini-batch with its own statistics.

    ``vectorize`` forces one or the other (default: vmap unless the model has BatchNorm).
    Returns the per-parameter (k, ...) gradients, the (k, m) per-example losses and the (k, ...)
    BatchNorm buffers after each mini-batch's update.
    """
    k = index.shape[0]
    scale = torch.ones(y.shape[0], dtype=x.dtype, device=x.device) if loss_scale is None else loss_scale
    coef = mask.to(x.dtype) * scale[index]
    count = mask.sum(1, keepdim=True).to(x.dtype)

    def group_loss(p: Tensors, b: Tensors, xg: torch.Tensor, yg: torch.Tensor, cg: torch.Tensor,
                   ng: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, Tensors]]:
        losses = F.cross_entropy(functional_call(model, (p, b), (xg,)), yg, reduction="none") * cg
        return losses.sum() / ng.squeeze(), (losses, b)

    if vectorize is None:
        vectorize = not has_batch_norm(model)
    if not vectorize:
        # Fresh leaves, as vmap's detached parameters: every parameter gets a gradient.
        params = {n: p.detach().requires_grad_(True) for n, p in model.named_parameters()}
        per_group = []
        for g in range(k):
            buffers = {n: b.clone() for n, b in model.named_buffers()}
            loss, (losses, buffers) = group_loss(params, buffers, x[index[g]], y[index[g]], coef[g], count[g])
            per_group.append((torch.autograd.grad(loss, list(params.values())), losses.detach(), buffers))
        grads = {n: torch.stack([gr[i] for gr, _, _ in per_group]) for i, n in enumerate(params)}
        new_buffers = {n: torch.stack([b[n] for _, _, b in per_group]) for n in per_group[0][2]}
        return grads, torch.stack([losses for _, losses, _ in per_group]), new_buffers

    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = {n: b.unsqueeze(0).expand(k, *b.shape).clone() for n, b in model.named_buffers()}
    grads, (losses, new_buffers) = vmap(grad(group_loss, has_aux=True), in_dims=(None, 0, 0, 0, 0, 0))(
        params, buffers, x[index], y[index], coef, count)
    return grads, losses, new_buffers


@torch.no_grad()
def _commit_group_buffers(model: nn.Module, buffers: Tensors) -> None:
    for n, b in model.named_buffers():
        b.copy_(buffers[n].mean(0) if b.is_floating_point() else buffers[n][0])


def bilevel_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                 val_x: torch.Tensor | None, val_y: torch.Tensor | None, *, k: int, mu: float,
                 loss_scale: torch.Tensor | None = None) -> StepOutput:
    """One Deep Bilevel step.

    With ``val_x is None`` (the paper's mode) the first of the k mini-batches is the validation
    mini-batch and the other k-1 are trained on; otherwise (val_x, val_y) is the validation
    mini-batch and all k are trained on. With k >= n every mini-batch is one example; on a
    Linear/MLP head that case takes the closed form (same numbers, no per-example gradients).

    Returns
    -------
    weights:
        (n,) per-example weight = its mini-batch's omega times the number of trained mini-batches
        (1 for uniform omega); NaN for examples used as validation.
    losses:
        (n,) per-example losses (detached; NaN for validation examples).
    """
    if val_x is not None and k >= y.shape[0] and head_kernel.supports(model):
        return _per_example_step(model, optimizer, x, y, val_x, val_y, mu=mu, loss_scale=loss_scale)
    index, mask = stratified_groups(y, k)
    grads, group_losses, new_buffers = group_gradients(model, x, y, index, mask, loss_scale=loss_scale)
    params = dict(model.named_parameters())
    if val_x is None:
        if index.shape[0] < 2:
            raise ValueError("--bilevel-validation train needs at least 2 examples per step")
        g_val = {n: g[0] for n, g in grads.items()}
        grads = {n: g[1:] for n, g in grads.items()}
        trained = slice(1, None)
    else:
        g_val, _ = mean_loss_gradient(model, params, val_x, val_y)
        trained = slice(0, None)
    omega = bilevel_omega(g_val, grads, mu=mu)
    optimizer.zero_grad(set_to_none=True)
    for n, p in params.items():
        p.grad = torch.tensordot(omega, grads[n], dims=1)
    optimizer.step()
    _commit_group_buffers(model, new_buffers)

    n_ex = y.shape[0]
    weights = torch.full((n_ex,), float("nan"), dtype=x.dtype, device=x.device)
    losses = torch.full((n_ex,), float("nan"), dtype=x.dtype, device=x.device)
    idx, msk = index[trained], mask[trained]
    per_group = (omega * omega.shape[0]).unsqueeze(1).expand_as(idx)
    weights[idx[msk]] = per_group[msk]
    losses[idx[msk]] = group_losses[trained][msk].detach()
    return StepOutput(weights, losses)
