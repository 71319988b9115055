"""The kernel's BatchNorm tangent rule against PyTorch's (float64): same primal, gradients, statistics."""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwad
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from winnow.stages.weight.tangent_rules import fast_tangents


def run(fn, inputs, tangents, fast):
    """Primal, tangent, reverse-mode gradients (of a fixed weighting) of fn at dual inputs."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    with fwad.dual_level(), fast_tangents(fast):
        duals = [leaf if dt is None else fwad.make_dual(leaf, dt) for leaf, dt in zip(leaves, tangents)]
        primal, tangent = fwad.unpack_dual(fn(*duals))
    weights = torch.linspace(-1.0, 2.0, primal.numel(), dtype=primal.dtype).view_as(primal)
    grads = torch.autograd.grad((primal * weights).sum(), leaves)
    return primal.detach(), tangent, grads


def compare(fn, inputs, tangents):
    ref = run(fn, inputs, tangents, fast=False)
    got = run(fn, inputs, tangents, fast=True)
    assert torch.equal(got[0], ref[0])  # PyTorch's own primal kernel
    for a, b in zip(got[2], ref[2]):
        assert torch.equal(a, b)  # and its own backward kernel
    assert not got[1].requires_grad  # the tangent is not recorded in the reverse graph
    assert torch.allclose(got[1], ref[1], atol=1e-12, rtol=1e-12)
    assert ref[1].abs().max() > 1e-3


@pytest.mark.parametrize("shape", [(20, 4, 5, 5), (16, 3), (12, 3, 7)])
@pytest.mark.parametrize("which", ["all", "input only", "params only"])
def test_train_batch_norm_tangent_and_running_stats(shape, which):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 3 + 2  # off-centre: tests cancellation
    w, b = torch.randn(shape[1], generator=g, dtype=torch.float64), torch.randn(shape[1], generator=g, dtype=torch.float64)
    tangents = [torch.randn_like(x), torch.randn_like(w), torch.randn_like(b)]
    if which == "input only":
        tangents[1] = tangents[2] = None
    elif which == "params only":
        tangents[0] = None
    stats = {}
    for fast in (False, True):
        rm, rv = torch.zeros(shape[1], dtype=torch.float64), torch.ones(shape[1], dtype=torch.float64)
        run(lambda x, w, b, rm=rm, rv=rv: F.batch_norm(x, rm, rv, w, b, True, 0.1, 1e-5), [x, w, b], tangents, fast)
        stats[fast] = (fwad.unpack_dual(rm).primal, fwad.unpack_dual(rv).primal)
    assert torch.equal(stats[True][0], stats[False][0]) and torch.equal(stats[True][1], stats[False][1])
    compare(lambda x, w, b: F.batch_norm(x, None, None, w, b, True, 0.1, 1e-5), [x, w, b], tangents)


def test_batch_norm_without_affine_parameters():
    x = torch.randn(10, 3, 4, dtype=torch.float64)
    compare(lambda x: F.batch_norm(x, None, None, None, None, True, 0.1, 1e-5), [x], [torch.randn_like(x)])


def test_eval_mode_batch_norm_and_convolutions_are_left_to_pytorch():
    x = torch.randn(6, 3, 5, 5, dtype=torch.float64)
    rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    for fn in (lambda x: F.batch_norm(x, rm, rv, None, None, False), lambda x: F.conv2d(x, w, padding="same")):
        ref = run(fn, [x], [torch.ones_like(x)], fast=False)
        got = run(fn, [x], [torch.ones_like(x)], fast=True)
        assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])


class CountOps(TorchDispatchMode):
    """Counts aten ops by name (overload packet), to see which kernels a pass runs."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.counts[name] = self.counts.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


LAYERS = {
    "conv1d": (lambda x, w, b: F.conv1d(x, w, b, 1, 1), (5, 3, 9), (4, 3, 3)),
    "conv2d": (lambda x, w, b: F.conv2d(x, w, b, 2, 1), (5, 3, 6, 7), (4, 3, 3, 3)),
    "conv3d": (lambda x, w, b: F.conv3d(x, w, b, padding="same"), (2, 2, 4, 4, 4), (3, 2, 3, 3, 3)),
    "linear": (lambda x, w, b: F.linear(x, w, b), (6, 5), (4, 5)),
}


@pytest.mark.parametrize("layer", sorted(LAYERS))
@pytest.mark.parametrize("bias_tangent", [True, False, "no bias"])
def test_first_layer_rule_matches_pytorch(layer, bias_tangent):
    fn, x_shape, w_shape = LAYERS[layer]
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(x_shape, generator=g, dtype=torch.float64), torch.randn(w_shape, generator=g, dtype=torch.float64)
    b = torch.randn(w_shape[0], generator=g, dtype=torch.float64)
    tangents = [None, torch.randn_like(w), torch.randn_like(b) if bias_tangent is True else None]
    if bias_tangent == "no bias":
        compare(lambda x, w: fn(x, w, None), [x, w], tangents[:2])
    else:
        compare(fn, [x, w, b], tangents)


def test_first_convolution_skips_the_zero_input_tangent():
    """PyTorch's formula convolves a zero input tangent; the rule runs 2 convolutions, not 3."""
    x, w = torch.randn(4, 3, 8, 8), torch.randn(5, 3, 3, 3)
    counts = {}
    for fast in (False, True):
        with CountOps() as ops:
            run(lambda x, w: F.conv2d(x, w, None, 1, 1), [x, w], [None, torch.randn_like(w)], fast)
        counts[fast] = ops.counts.get("convolution", 0)
    assert counts == {False: 3, True: 2}
