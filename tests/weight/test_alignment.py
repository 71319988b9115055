"""The forward-mode kernel against explicit per-example gradients, and BatchNorm hygiene."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.weight.tiny import make_case
from winnow.stages.weight.alignment import mean_loss_gradient, per_example_alignment
from winnow.stages.weight.l2rw import l2rw_step


def explicit_grads(model, x, y, buffers=None):
    """Per-example gradients, one autograd.grad per example of a single batch forward."""
    params = dict(model.named_parameters())
    bufs = {k: b.clone() for k, b in model.named_buffers()} if buffers is None else buffers
    losses = F.cross_entropy(torch.func.functional_call(model, (params, bufs), (x,)), y, reduction="none")
    return losses, [torch.autograd.grad(losses[i], list(params.values()), retain_graph=True)
                    for i in range(len(y))]


@pytest.mark.parametrize("kind", ["cnn", "mlp"])
def test_kernel_equals_explicit_dot_products(kind):
    model, x, y, _, _ = make_case(kind)
    g = torch.Generator().manual_seed(1)
    v = {k: torch.randn(p.shape, generator=g, dtype=p.dtype) for k, p in model.named_parameters()}
    losses, d = per_example_alignment(model, x, y, v)
    ref_losses, grads = explicit_grads(model, x, y)
    ref = torch.stack([sum((gi * vi).sum() for gi, vi in zip(gs, v.values())) for gs in grads])
    assert torch.allclose(losses, ref_losses, atol=1e-12, rtol=0)
    assert torch.allclose(d, ref, atol=1e-10, rtol=0)
    assert d.abs().max() > 1e-3  # not trivially zero


@pytest.mark.parametrize("kind", ["cnn", "mlp"])
def test_primal_losses_backpropagate_like_plain_forward(kind):
    model, x, y, _, _ = make_case(kind)
    v = {k: torch.ones_like(p) for k, p in model.named_parameters()}
    w = torch.linspace(0.1, 1.0, len(y), dtype=torch.float64)
    losses, _ = per_example_alignment(model, x, y, v)
    got = torch.autograd.grad((w * losses).sum(), list(model.parameters()))
    ref_losses, _ = explicit_grads(model, x, y)
    ref = torch.autograd.grad((w * ref_losses).sum(), list(model.parameters()))
    for a, b in zip(got, ref):
        assert torch.allclose(a, b, atol=1e-12, rtol=0)


def test_meta_passes_leave_running_stats_untouched():
    model, x, y, tx, ty = make_case("cnn")
    before = {k: b.clone() for k, b in model.named_buffers()}
    v = {k: torch.ones_like(p) for k, p in model.named_parameters()}
    mean_loss_gradient(model, dict(model.named_parameters()), tx, ty)
    per_example_alignment(model, x, y, v)
    for k, b in model.named_buffers():
        assert torch.equal(b, before[k]), k


def test_l2rw_step_advances_running_stats_once_on_the_training_batch():
    model, x, y, tx, ty = make_case("cnn")
    plain, _, _, _, _ = make_case("cnn")  # same init
    with torch.no_grad():
        plain(x)  # one train-mode forward on the training batch only
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    l2rw_step(model, opt, x, y, tx, ty, lr=0.1)
    assert model.bn.num_batches_tracked.item() == 1
    assert torch.allclose(model.bn.running_mean, plain.bn.running_mean, atol=1e-14)
    assert torch.allclose(model.bn.running_var, plain.bn.running_var, atol=1e-14)
    assert not torch.allclose(model.bn.running_mean, torch.zeros(4, dtype=torch.float64))


class TiedMLP(torch.nn.Module):
    """Two linear layers sharing one weight matrix (registered under two names)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(3, 3)
        self.b = torch.nn.Linear(3, 3)
        self.b.weight = self.a.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x)))


def test_kernel_follows_tied_weights():
    torch.manual_seed(0)
    model = TiedMLP().double()
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.randint(0, 3, (8,))
    v = {k: torch.randn_like(p) for k, p in model.named_parameters()}
    assert "b.weight" not in v  # the tied alias is not a separate parameter
    _, d = per_example_alignment(model, x, y, v)
    _, grads = explicit_grads(model, x, y)
    ref = torch.stack([sum((gi * vi).sum() for gi, vi in zip(gs, v.values())) for gs in grads])
    assert torch.allclose(d, ref, atol=1e-10, rtol=0)


@pytest.mark.parametrize("kind", ["cnn", "mlp"])
def test_mean_loss_gradient_same_for_own_and_copied_parameters(kind):
    """The direct call (own parameters, no buffers) and the functional_call path agree."""
    model, _, _, tx, ty = make_case(kind)
    own = dict(model.named_parameters())
    copied = {k: p.detach().clone() for k, p in own.items()}
    g_own, loss_own = mean_loss_gradient(model, own, tx, ty)
    g_copy, loss_copy = mean_loss_gradient(model, copied, tx, ty)
    assert torch.equal(loss_own, loss_copy)
    for k in own:
        assert torch.allclose(g_own[k], g_copy[k], atol=1e-14, rtol=0), k
    assert all(p.grad is None for p in model.parameters())  # nothing accumulated on the model


def test_ties_weights_finds_tensors_held_by_two_modules():
    from winnow.stages.weight.alignment import ties_weights

    shared = torch.nn.Linear(3, 3)
    assert ties_weights(TiedMLP())
    assert not ties_weights(torch.nn.Sequential(shared, shared))  # one module under two names
    assert not ties_weights(make_case("cnn")[0])
