"""Cheaper forward-mode (tangent) rules for the kernel's dual pass: train-mode BatchNorm, and layers
whose input carries no tangent.

PyTorch's ``batch_norm_jvp`` costs ~8 primal BatchNorms on CPU (it re-derives the statistics in
many full-size ops), and because the kernel's primal losses keep their reverse-mode graph, every
one of those tangent ops is also recorded in that graph (the kernel detaches d: pure waste).
Here BatchNorm is an ``autograd.Function`` whose forward and backward are PyTorch's own kernels
(``native_batch_norm`` / ``native_batch_norm_backward``: primal values, running statistics and
reverse-mode gradients bit-for-bit unchanged) and whose ``jvp`` is the closed form below, a few
memory passes, not recorded. Only the tangent changes, and only at rounding level.

In train mode, per channel (reductions over every dim but the channel one)::

    x_c = x - mean(x),  a = w * invstd,  m1 = mean(dx),  m2 = invstd^2 * mean(x_c * dx)
    dy  = a * dx + (dw * invstd - a * m2) * x_c + (db - a * m1)

(``w * dxhat + dw * xhat + db`` with ``dxhat = invstd * (dx - m1 - xhat * invstd * mean(x_c dx))``).

:func:`fast_tangents` is a context manager that routes train-mode ``F.batch_norm`` calls on CPU
through this rule with a ``TorchFunctionMode``. It also routes convolutions and linear layers whose
input has no tangent (the first layer: images carry none) and whose weight has one: PyTorch's
formula ``conv(dx, w) + conv(x, dw)`` materialises dx = 0 and runs a whole convolution on zeros;
here the tangent is just ``conv(x, dw) + db``, unrecorded, and the primal runs on the weight's
primal view (same kernel, same reverse-mode gradients). Everything else is left to PyTorch. (The
BatchNorm treatment for convolutions with an input tangent, unrecorded ``conv(dx, w) + conv(x,
dw)``, measured no faster, so it is not done.) Only worth it for models with BatchNorm or
convolutions (:func:`benefits_from_fast_tangents`): the mode adds Python dispatch to every op,
which a small MLP would feel more than the one small zero matmul it saves.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
import torch.autograd.forward_ad as fwad
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

# Layers f(input, weight, bias, ...) whose tangent is linear in (d input, d weight, d bias).
_AFFINE_LAYERS = (torch.conv1d, torch.conv2d, torch.conv3d, F.linear)


class _TrainBatchNorm(torch.autograd.Function):
    """y = native_batch_norm(x, ...) in train mode, with the closed-form tangent above."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                running_mean: torch.Tensor | None, running_var: torch.Tensor | None, momentum: float,
                eps: float) -> torch.Tensor:
        out, save_mean, save_invstd = torch.native_batch_norm(
            x, weight, bias, running_mean, running_var, True, momentum, eps)
        ctx.eps = eps
        ctx.has_weight, ctx.has_bias = weight is not None, bias is not None
        ctx.save_for_backward(x, weight, save_mean, save_invstd)
        ctx.save_for_forward(x, weight, save_mean, save_invstd)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, save_mean, save_invstd = ctx.saved_tensors
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1] and ctx.has_weight,
                ctx.needs_input_grad[2] and ctx.has_bias]
        gx, gw, gb = torch.ops.aten.native_batch_norm_backward(
            grad_out, x, weight, None, None, save_mean, save_invstd, True, ctx.eps, mask)
        return gx, gw, gb, None, None, None, None

    @staticmethod
    def jvp(ctx: Any, dx: torch.Tensor | None, dw: torch.Tensor | None, db: torch.Tensor | None,
            *_: Any) -> torch.Tensor:
        with torch.no_grad():  # the kernel detaches d: recording the tangent ops would be waste
            return _tangent(ctx.saved_tensors, dx, dw, db)


def _tangent(saved: tuple[torch.Tensor, ...], dx: torch.Tensor | None, dw: torch.Tensor | None,
             db: torch.Tensor | None) -> torch.Tensor:
    """d(output) of train-mode BatchNorm from its saved input, weight, batch mean and invstd."""
    x, weight, mean, invstd = saved
    shape = [1, -1] + [1] * (x.dim() - 2)  # per-channel values broadcast over (N, C, ...)
    dims = [0, *range(2, x.dim())]
    count = x.numel() // x.shape[1]
    xc = x - mean.view(shape)
    a = invstd if weight is None else weight * invstd
    c1 = torch.zeros_like(invstd) if dw is None else dw * invstd
    c0 = torch.zeros_like(invstd) if db is None else db.clone()
    if dx is not None:
        m1 = dx.sum(dims) / count
        m2 = (xc * dx).sum(dims) * (invstd * invstd / count)
        c1 = c1 - a * m2
        c0 = c0 - a * m1
    out = xc.mul_(c1.view(shape)).add_(c0.view(shape))
    return out if dx is None else out.addcmul_(dx, a.view(shape))


def _input_tangent_free_layer(func: Any, args: tuple, kwargs: dict) -> Any:
    """``func(x, w, b, ...)`` with no tangent on x: primal on w's primal view, tangent func(x, dw, db).

    Returns ``NotImplemented`` when the rule does not apply (x has a tangent, w has none, or the
    call does not pass input and weight positionally).
    """
    if len(args) < 2 or not isinstance(args[1], torch.Tensor):
        return NotImplemented
    x, weight = args[0], args[1]
    w_primal, w_tangent = fwad.unpack_dual(weight)
    if w_tangent is None or fwad.unpack_dual(x).tangent is not None:
        return NotImplemented
    rest, kwargs = list(args[3:]), dict(kwargs)
    bias = args[2] if len(args) > 2 else kwargs.pop("bias", None)
    b_primal, b_tangent = fwad.unpack_dual(bias) if bias is not None else (None, None)
    out = func(x, w_primal, b_primal, *rest, **kwargs)
    with torch.no_grad():  # the kernel detaches d: recording the tangent ops would be waste
        tangent = func(x, w_tangent, b_tangent, *rest, **kwargs)
    return fwad.make_dual(out, tangent)


class _FastTangents(TorchFunctionMode):
    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is F.batch_norm:
            names = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
            a = dict(zip(names, args)) | kwargs
            # CPU only: on CUDA F.batch_norm runs cuDNN kernels, which this Function would replace.
            if a.get("training", False) and a["input"].device.type == "cpu":
                if a["input"].dim() < 2:
                    raise ValueError(f"BatchNorm input needs a channel dimension, got shape {tuple(a['input'].shape)}")
                F._verify_batch_size(a["input"].size())
                return _TrainBatchNorm.apply(a["input"], a.get("weight"), a.get("bias"), a["running_mean"],
                                             a["running_var"], a.get("momentum", 0.1), a.get("eps", 1e-5))
        elif func in _AFFINE_LAYERS:
            out = _input_tangent_free_layer(func, args, kwargs)
            if out is not NotImplemented:
                return out
        return func(*args, **kwargs)


def has_batch_norm(model: nn.Module) -> bool:
    """Whether ``model`` contains a BatchNorm module."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def benefits_from_fast_tangents(model: nn.Module) -> bool:
    """Whether ``model`` has BatchNorm or convolutions, the layers :func:`fast_tangents` speeds up."""
    return has_batch_norm(model) or any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())


@contextmanager
def fast_tangents(enabled: bool = True) -> Iterator[None]:
    """Within the block, the rules above apply (see the module doc).

    ``enabled=False`` is a no-op, so models that gain nothing pay no Python dispatch per op.
    """
    with _FastTangents() if enabled else nullcontext():
        yield
