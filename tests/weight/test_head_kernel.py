"""The closed-form head kernel against the general forward-mode kernel and autograd, and each
method's head step against the same step on the general path."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from winnow.models.heads import LinearHead, MLPHead
from winnow.models.meta_weight_net import MetaWeightNet
from winnow.stages.weight import head_kernel
from winnow.stages.weight.alignment import mean_loss_gradient, per_example_alignment
from winnow.stages.weight.bilevel import bilevel_step
from winnow.stages.weight.l2rw import l2rw_step
from winnow.stages.weight.mwn import mwn_step
from winnow.stages.weight.soseleto import soseleto_step


class GeneralLinear(LinearHead):
    """The same network, but not a type the closed form claims: it takes the general path."""


class GeneralMLP(MLPHead):
    """As GeneralLinear, for the MLP head."""


def _heads(kind: str, seed: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(seed)
    fast = (LinearHead(7, 4) if kind == "linear" else MLPHead(7, 4, hidden=9)).double()
    general = (GeneralLinear(7, 4) if kind == "linear" else GeneralMLP(7, 4, hidden=9)).double()
    general.load_state_dict(fast.state_dict())
    return fast, general


def _data(seed: int, n: int = 13, m: int = 6) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 7, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, 4, (n,), generator=g)
    tx = torch.randn(m, 7, generator=g, dtype=torch.float64)
    ty = torch.randint(0, 4, (m,), generator=g)
    scale = torch.rand(n, generator=g, dtype=torch.float64) + 0.5
    return x, y, tx, ty, scale


@pytest.mark.parametrize("kind", ["linear", "mlp"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_closed_form_equals_forward_mode_kernel_and_autograd(kind, seed):
    fast, _ = _heads(kind, seed)
    x, y, tx, ty, scale = _data(seed)
    params = dict(fast.named_parameters())

    v_ref, _ = mean_loss_gradient(fast, params, tx, ty)
    v = head_kernel.trusted_gradient(fast, tx, ty)
    for k in params:
        torch.testing.assert_close(v[k], v_ref[k], rtol=1e-10, atol=1e-12)

    losses_ref, d_ref = per_example_alignment(fast, x, y, v_ref, loss_scale=scale)
    hp = head_kernel.head_pass(fast, x, y, loss_scale=scale)
    torch.testing.assert_close(hp.losses, losses_ref.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(head_kernel.alignment(hp, v), d_ref, rtol=1e-5, atol=1e-10)

    # Weighted gradient and per-example squared norms against autograd, one example at a time.
    coef = torch.randn(x.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 9))
    wgrad = head_kernel.weighted_gradient(hp, coef)
    ref = torch.autograd.grad((coef * losses_ref).sum(), list(params.values()))
    for k, g in zip(params, ref):
        torch.testing.assert_close(wgrad[k], g, rtol=1e-10, atol=1e-12)
    norms = torch.stack([
        sum(g.pow(2).sum() for g in torch.autograd.grad(
            F.cross_entropy(fast(x[i:i + 1]), y[i:i + 1]) * scale[i], list(params.values())))
        for i in range(x.shape[0])])
    torch.testing.assert_close(head_kernel.squared_norms(hp), norms, rtol=1e-10, atol=1e-12)


def test_known_answer_linear_head():
    """One example, zero weights: logits 0, so delta = softmax - onehot = (1/2, -1/2) for label 1."""
    head = LinearHead(2, 2).double()
    with torch.no_grad():
        head.fc.weight.zero_()
        head.fc.bias.zero_()
    hp = head_kernel.head_pass(head, torch.tensor([[1.0, 2.0]], dtype=torch.float64), torch.tensor([1]))
    v = {"fc.weight": torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64),
         "fc.bias": torch.tensor([1.0, -1.0], dtype=torch.float64)}
    # d = delta^T V a + delta . v_b = (0.5 * 1 - 0.5 * 2) + (0.5 + 0.5) = 0.5
    torch.testing.assert_close(head_kernel.alignment(hp, v), torch.tensor([0.5], dtype=torch.float64))
    # |g|^2 = |delta|^2 (|a|^2 + 1) = 0.5 * 6
    torch.testing.assert_close(head_kernel.squared_norms(hp), torch.tensor([3.0], dtype=torch.float64))


def _sgd(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9, weight_decay=1e-3)


def _same_parameters(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (k, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12, msg=k)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
@pytest.mark.parametrize("method", ["l2rw", "soseleto", "mwn", "bilevel"])
def test_head_step_equals_general_step(kind, method):
    fast, general = _heads(kind, 3)
    assert head_kernel.supports(fast) and not head_kernel.supports(general)
    x, y, tx, ty, scale = _data(4)
    opt_f, opt_g = _sgd(fast), _sgd(general)
    if method == "mwn":
        torch.manual_seed(5)
        vnet_f = MetaWeightNet(8).double()
        vnet_g = copy.deepcopy(vnet_f)
        vopt_f, vopt_g = (torch.optim.Adam(v.parameters(), lr=1e-2) for v in (vnet_f, vnet_g))
    alpha = torch.full((x.shape[0],), 0.5, dtype=torch.float64)
    for _ in range(3):  # a few steps, so momentum and the meta-net's state enter too
        if method == "l2rw":
            out_f = l2rw_step(fast, opt_f, x, y, tx, ty, lr=0.3, loss_scale=scale)
            out_g = l2rw_step(general, opt_g, x, y, tx, ty, lr=0.3, loss_scale=scale)
            torch.testing.assert_close(out_f.unclipped, out_g.unclipped, rtol=1e-7, atol=1e-10)
        elif method == "soseleto":
            out_f = soseleto_step(fast, opt_f, x, y, tx, ty, alpha, lr=0.3, lr_alpha=10.0, loss_scale=scale)
            out_g = soseleto_step(general, opt_g, x, y, tx, ty, alpha, lr=0.3, lr_alpha=10.0, loss_scale=scale)
            alpha = out_f.weights
        elif method == "mwn":
            out_f = mwn_step(fast, opt_f, vnet_f, vopt_f, x, y, tx, ty, lr=0.3, loss_scale=scale)
            out_g = mwn_step(general, opt_g, vnet_g, vopt_g, x, y, tx, ty, lr=0.3, loss_scale=scale)
            _same_parameters(vnet_f, vnet_g)
        else:
            out_f = bilevel_step(fast, opt_f, x, y, tx, ty, k=x.shape[0], mu=0.01, loss_scale=scale)
            out_g = bilevel_step(general, opt_g, x, y, tx, ty, k=x.shape[0], mu=0.01, loss_scale=scale)
        torch.testing.assert_close(out_f.weights, out_g.weights, rtol=1e-7, atol=1e-10)
        torch.testing.assert_close(out_f.losses, out_g.losses, rtol=1e-10, atol=1e-12)
        _same_parameters(fast, general)


@pytest.mark.parametrize("seed", [0, 1])
def test_meta_weight_net_gradient_by_hand_equals_autograd(seed):
    from winnow.stages.weight.mwn import mwn_weights, normalised_weight_gradient

    torch.manual_seed(seed)
    vnet = MetaWeightNet(12).double()
    losses = torch.rand(17, dtype=torch.float64) * 4
    coef = torch.randn(17, dtype=torch.float64)
    ref = torch.autograd.grad((coef * mwn_weights(vnet, losses)).sum(), list(vnet.parameters()))
    for got, want in zip(normalised_weight_gradient(vnet, losses, coef), ref):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
