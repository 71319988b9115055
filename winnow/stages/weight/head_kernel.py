"""Closed-form per-example alignment for the heads trained on frozen embeddings.

For a stack of linear layers, the gradient of example i's loss with respect to layer k's weight is
the outer product delta_ki a_ki^T of the layer's output delta and its input, and delta_i for its
bias. So for any v = (V_k, v_k) over the parameters,

    d_i = <grad l_i, v> = sum_k  delta_ki^T V_k a_ki + delta_ki . v_k,

and the gradient of any weighted loss sum_i c_i l_i is sum_i c_i delta_ki a_ki^T. One forward pass
(keeping each layer's input) and the deltas in closed form (softmax - onehot at the logits, then
back through the ReLU) give every alignment and the weighted update with a few matrix products:
no forward-mode duals, no autograd graph, no per-example gradient materialised. The results equal
the general kernel of :mod:`winnow.stages.weight.alignment` (tested to 1e-5 on random inputs); this one
costs about one forward and one backward of the batch, which is what plain training costs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from winnow.models.heads import LinearHead, MLPHead

Tensors = dict[str, torch.Tensor]


@dataclass
class HeadPass:
    """One forward pass of a head: the per-example losses and what the closed forms need.

    ``inputs[k]`` is layer k's input (n, d_k) and ``deltas[k]`` the gradient of each example's
    (scaled) loss with respect to layer k's output (n, out_k), for the layers in ``names``.
    """

    losses: torch.Tensor
    names: list[str]
    inputs: list[torch.Tensor]
    deltas: list[torch.Tensor]


def layers(model: nn.Module) -> list[str] | None:
    """Names of the linear layers of a head this module computes in closed form, or None."""
    if type(model) is LinearHead:
        return ["fc"]
    if type(model) is MLPHead:
        return ["fc1", "fc2"]
    return None


def supports(model: nn.Module) -> bool:
    """Whether ``model`` is a head whose alignments :func:`head_pass` computes in closed form."""
    return layers(model) is not None


@torch.no_grad()
def head_pass(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, params: Tensors | None = None,
              loss_scale: torch.Tensor | None = None) -> HeadPass:
    """Forward pass of a Linear or MLP head at ``params`` (default: its own), with every delta.

    Parameters
    ----------
    model:
        A :class:`~winnow.models.heads.LinearHead` or :class:`~winnow.models.heads.MLPHead`.
    x, y:
        Embeddings (n, d) and integer labels (n,).
    params:
        Parameters to evaluate at, by name (e.g. a look-ahead theta_hat).
    loss_scale:
        Optional per-example loss multipliers (n,).
    """
    names = layers(model)
    if names is None:
        raise TypeError(f"{type(model).__name__} is not a LinearHead or MLPHead")
    p = dict(model.named_parameters()) if params is None else params
    inputs, pre = [], []
    a = x
    for k, name in enumerate(names):
        inputs.append(a)
        z = F.linear(a, p[f"{name}.weight"], p[f"{name}.bias"])
        pre.append(z)
        a = torch.relu(z) if k < len(names) - 1 else z
    # In the transposed (classes, n) layout: torch's CPU kernels for a row-wise softmax or index
    # update over ~10 classes are 4-9x slower than the column-wise ones on the same numbers.
    log_p = torch.log_softmax(a.T, 0)
    rows = y.unsqueeze(0)
    losses = -log_p.gather(0, rows).squeeze(0)
    delta_t = log_p.exp_()  # softmax - onehot, (C, n)
    delta_t.scatter_add_(0, rows, torch.full(rows.shape, -1.0, dtype=delta_t.dtype, device=delta_t.device))
    delta = delta_t.T
    if loss_scale is not None:
        losses = losses * loss_scale
        delta = delta * loss_scale.unsqueeze(1)
    deltas = [delta]
    for k in range(len(names) - 1, 0, -1):
        delta = (delta @ p[f"{names[k]}.weight"]) * (pre[k - 1] > 0)
        deltas.insert(0, delta)
    return HeadPass(losses, names, inputs, deltas)


def weighted_gradient(hp: HeadPass, coef: torch.Tensor) -> Tensors:
    """Gradient of sum_i coef_i l_i with respect to every parameter, by name."""
    out: Tensors = {}
    for name, a, delta in zip(hp.names, hp.inputs, hp.deltas):
        cd = delta * coef.unsqueeze(1)
        out[f"{name}.weight"] = cd.T @ a
        out[f"{name}.bias"] = cd.sum(0)
    return out


def mean_gradient(hp: HeadPass) -> Tensors:
    """Gradient of the mean loss (the trusted gradient v)."""
    n = hp.losses.shape[0]
    return weighted_gradient(hp, torch.full((n,), 1.0 / n, dtype=hp.losses.dtype, device=hp.losses.device))


def alignment(hp: HeadPass, v: Tensors) -> torch.Tensor:
    """d_i = <grad l_i, v> for every example of the pass, (n,)."""
    d = torch.zeros_like(hp.losses)
    for name, a, delta in zip(hp.names, hp.inputs, hp.deltas):
        d += ((delta @ v[f"{name}.weight"]) * a).sum(1) + delta @ v[f"{name}.bias"]
    return d


def squared_norms(hp: HeadPass) -> torch.Tensor:
    """|grad l_i|^2 for every example: sum over layers of |delta_i|^2 (|a_i|^2 + 1), (n,)."""
    out = torch.zeros_like(hp.losses)
    for a, delta in zip(hp.inputs, hp.deltas):
        out += delta.pow(2).sum(1) * (a.pow(2).sum(1) + 1.0)
    return out


def set_gradients(model: nn.Module, grads: Tensors) -> None:
    """Install ``grads`` as the parameters' ``.grad`` (replacing any), ready for ``optimizer.step()``."""
    for name, p in model.named_parameters():
        p.grad = grads[name].to(p.dtype)


def trusted_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                     params: Tensors | None = None) -> Tensors:
    """v = gradient of the mean trusted loss at ``params`` (default: the model's own)."""
    return mean_gradient(head_pass(model, x, y, params=params))
