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
from torch import nn

from winnow.models.heads import LinearHead, MLPHead

Tensors = dict[str, torch.Tensor]


@dataclass
class HeadPass:
    """One forward pass of a head: the per-example losses and what the closed forms need.

    Everything is kept in the transposed (features, n) layout: ``inputs[k]`` is layer k's input
    (d_k, n) (a view of the embeddings for the first layer) and ``deltas[k]`` the gradient of each
    example's (scaled) loss with respect to layer k's output (out_k, n), for the layers in ``names``.
    On a CPU, W @ X^T into (out, n) is ~1.7x faster than X @ W^T for a narrow output (10
    classes: 38 against 67 us for 1,000 x 128), and torch's softmax and index updates over ~10
    classes are 4-9x faster down a column than along a row.
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
    a = x.T
    for k, name in enumerate(names):
        inputs.append(a)
        z = torch.addmm(p[f"{name}.bias"].unsqueeze(1), p[f"{name}.weight"], a)
        pre.append(z)
        a = torch.relu(z) if k < len(names) - 1 else z
    log_p = torch.log_softmax(a, 0)
    rows = y.unsqueeze(0)
    losses = -log_p.gather(0, rows).squeeze(0)
    delta = log_p.exp_()  # softmax - onehot, (C, n)
    delta.scatter_add_(0, rows, torch.full(rows.shape, -1.0, dtype=delta.dtype, device=delta.device))
    if loss_scale is not None:
        losses = losses * loss_scale
        delta = delta * loss_scale.unsqueeze(0)
    deltas = [delta]
    for k in range(len(names) - 1, 0, -1):
        delta = (p[f"{names[k]}.weight"].T @ delta) * (pre[k - 1] > 0)
        deltas.insert(0, delta)
    return HeadPass(losses, names, inputs, deltas)


def weighted_gradient(hp: HeadPass, coef: torch.Tensor) -> Tensors:
    """Gradient of sum_i coef_i l_i with respect to every parameter, by name."""
    out: Tensors = {}
    for name, a, delta in zip(hp.names, hp.inputs, hp.deltas):
        cd = delta * coef.unsqueeze(0)
        out[f"{name}.weight"] = cd @ a.T
        out[f"{name}.bias"] = cd.sum(1)
    return out


def mean_gradient(hp: HeadPass) -> Tensors:
    """Gradient of the mean loss (the trusted gradient v)."""
    n = hp.losses.shape[0]
    return weighted_gradient(hp, torch.full((n,), 1.0 / n, dtype=hp.losses.dtype, device=hp.losses.device))


def alignment(hp: HeadPass, v: Tensors) -> torch.Tensor:
    """d_i = <grad l_i, v> = sum_k delta_ki^T V_k a_ki + delta_ki . v_k for every example, (n,).

    The product is formed on the narrower side of each layer (V a against delta for a 10-class
    output, V^T delta against a for a wide hidden layer): the elementwise pass is then (min, n).
    """
    d = torch.zeros_like(hp.losses)
    for name, a, delta in zip(hp.names, hp.inputs, hp.deltas):
        w = v[f"{name}.weight"]
        if w.shape[0] <= w.shape[1]:
            d += ((w @ a) * delta).sum(0)
        else:
            d += ((w.T @ delta) * a).sum(0)
        d += v[f"{name}.bias"] @ delta
    return d


def squared_norms(hp: HeadPass) -> torch.Tensor:
    """|grad l_i|^2 for every example: sum over layers of |delta_i|^2 (|a_i|^2 + 1), (n,)."""
    out = torch.zeros_like(hp.losses)
    for a, delta in zip(hp.inputs, hp.deltas):
        out += delta.pow(2).sum(0) * (a.pow(2).sum(0) + 1.0)
    return out


def as_dtype(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t`` in ``dtype``, skipping the call when it already is (a no-op ``.to`` still costs ~5 us,
    a visible share of a head's step)."""
    return t if t.dtype == dtype else t.to(dtype)


def set_gradients(model: nn.Module, grads: Tensors, *, params: Tensors | None = None) -> None:
    """Install ``grads`` as the parameters' ``.grad`` (replacing any: no ``zero_grad`` needed), ready
    for ``optimizer.step()``. ``params``: ``dict(model.named_parameters())`` if the caller has it."""
    for name, p in (params or dict(model.named_parameters())).items():
        p.grad = as_dtype(grads[name], p.dtype)


def trusted_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                     params: Tensors | None = None) -> Tensors:
    """v = gradient of the mean trusted loss at ``params`` (default: the model's own)."""
    return mean_gradient(head_pass(model, x, y, params=params))
