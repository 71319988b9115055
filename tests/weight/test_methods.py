"""Each method's update against a straightforward autograd reference (float64), plus known answers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from tests.weight.tiny import make_case
from winnow.models.meta_weight_net import MetaWeightNet
from winnow.stages.weight.alignment import per_example_losses, scratch_buffers
from winnow.stages.weight.bilevel import bilevel_omega, bilevel_step, group_gradients, stratified_groups
from winnow.stages.weight.l2rw import l2rw_weights
from winnow.stages.weight.mwn import mwn_meta_gradient, mwn_weights
from winnow.stages.weight.soseleto import soseleto_step, soseleto_update

KINDS = ["cnn", "mlp"]


def val_loss(model, params, tx, ty):
    bufs = scratch_buffers(model)
    return F.cross_entropy(functional_call(model, (params, bufs), (tx,)), ty)


@pytest.mark.parametrize("kind", KINDS)
def test_l2rw_weights_equal_double_backward_reference(kind):
    model, x, y, tx, ty = make_case(kind)
    lr = 0.1
    params = dict(model.named_parameters())
    # Reference (Ren et al. Alg. 1): look-ahead theta - a * sum eps_i grad l_i, d L_val / d eps at 0.
    eps = torch.zeros(len(y), dtype=torch.float64, requires_grad=True)
    losses = per_example_losses(model, params, scratch_buffers(model), x, y)
    grads = torch.autograd.grad((eps * losses).sum(), list(params.values()), create_graph=True)
    look = {k: p - lr * g for (k, p), g in zip(params.items(), grads)}
    grad_eps = torch.autograd.grad(val_loss(model, look, tx, ty), eps)[0]
    ref = torch.clamp(-grad_eps, min=0)
    ref = ref / ref.sum()

    from winnow.stages.weight.alignment import mean_loss_gradient, per_example_alignment
    v, _ = mean_loss_gradient(model, params, tx, ty)
    _, d = per_example_alignment(model, x, y, v)
    w = l2rw_weights(d, lr=lr)
    assert (w > 0).any() and (w == 0).any()
    assert torch.allclose(w, ref, atol=1e-10, rtol=0)


def test_l2rw_known_answers():
    w = l2rw_weights(torch.tensor([1.0, -1.0, 3.0], dtype=torch.float64), lr=0.5)
    assert torch.equal(w, torch.tensor([0.25, 0.0, 0.75], dtype=torch.float64))
    assert torch.equal(l2rw_weights(torch.tensor([-1.0, -2.0]), lr=1.0), torch.zeros(2))


@pytest.mark.parametrize("kind", KINDS)
def test_mwn_meta_gradient_equals_double_backward_reference(kind):
    model, x, y, tx, ty = make_case(kind)
    torch.manual_seed(3)
    vnet = MetaWeightNet().double()
    lr = 0.1
    params = dict(model.named_parameters())
    # Reference (Shu et al.): differentiate L_val(theta_hat(phi)) through the look-ahead.
    losses = per_example_losses(model, params, scratch_buffers(model), x, y)
    w = mwn_weights(vnet, losses)
    grads = torch.autograd.grad((w * losses).sum(), list(params.values()), create_graph=True)
    look = {k: p - lr * g for (k, p), g in zip(params.items(), grads)}
    ref = torch.autograd.grad(val_loss(model, look, tx, ty), list(vnet.parameters()))

    losses = per_example_losses(model, params, scratch_buffers(model), x, y)
    got = mwn_meta_gradient(model, vnet, losses, x, y, tx, ty, lr=lr)
    assert max(float(r.abs().max()) for r in ref) > 1e-6
    for a, b in zip(got, ref):
        assert torch.allclose(a, b, atol=1e-10, rtol=0)


def explicit_group_grads(model, x, y, index, mask):
    """Each mini-batch's gradient from its own forward/backward (the authors' way)."""
    out = []
    for gi in range(index.shape[0]):
        rows = index[gi][mask[gi]]
        params = dict(model.named_parameters())
        loss = per_example_losses(model, params, scratch_buffers(model), x[rows], y[rows]).mean()
        out.append(torch.autograd.grad(loss, list(params.values())))
    return out


def flat(gs):
    return torch.cat([g.reshape(-1) for g in gs])


@pytest.mark.parametrize("kind", KINDS)
def test_bilevel_omega_equals_closed_form_from_explicit_minibatch_gradients(kind):
    model, x, y, tx, ty = make_case(kind, n=16)
    k, mu = 4, 0.01
    index, mask = stratified_groups(y, k)
    assert mask.all()  # 16 = 4 x 4: no padding, so separate passes see the same batches
    grads, _, _ = group_gradients(model, x, y, index, mask)
    explicit = explicit_group_grads(model, x, y, index, mask)
    names = [n for n, _ in model.named_parameters()]
    for gi, eg in enumerate(explicit):
        for n, e in zip(names, eg):
            assert torch.allclose(grads[n][gi], e, atol=1e-12, rtol=0)
    params = dict(model.named_parameters())
    gv = flat(torch.autograd.grad(val_loss(model, params, tx, ty), list(params.values())))
    gb = torch.stack([flat(e) for e in explicit])
    raw = (gb @ gv) / ((gb * gb).sum(1) + mu)
    ref = raw / raw.abs().sum()
    g_val = dict(zip(names, torch.autograd.grad(val_loss(model, params, tx, ty), list(params.values()))))
    omega = bilevel_omega(g_val, grads, mu=mu)
    assert torch.allclose(omega, ref, atol=1e-12, rtol=0)

    # The step applies sum_i omega_i g_i (plain SGD, lr 1: the parameter change is minus that).
    before = flat([p.detach().clone() for p in model.parameters()])
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    weights = bilevel_step(model, opt, x, y, tx, ty, k=k, mu=mu).weights
    after = flat([p.detach() for p in model.parameters()])
    assert torch.allclose(before - after, ref @ gb, atol=1e-12, rtol=0)
    for gi in range(k):
        assert torch.allclose(weights[index[gi]], torch.full((4,), float(ref[gi] * k), dtype=torch.float64))


def test_bilevel_known_answers_and_groups():
    g_val = {"w": torch.tensor([1.0, 0.0])}
    groups = {"w": torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])}
    assert torch.allclose(bilevel_omega(g_val, groups, mu=0.0), torch.tensor([0.5, 0.0, -0.5]))
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    index, mask = stratified_groups(y[torch.randperm(10)], 2)
    assert index.shape == (2, 5) and mask.all()
    yy = y[torch.sort(y).indices]  # labels sorted, so group label counts must match
    index, _ = stratified_groups(yy, 2)
    assert torch.equal(torch.bincount(yy[index[0]], minlength=3), torch.bincount(yy[index[1]], minlength=3))


@pytest.mark.parametrize("kind", KINDS)
def test_soseleto_alpha_update_equals_explicit_per_example_gradients(kind):
    model, x, y, tx, ty = make_case(kind)
    lr, lr_alpha = 0.1, 5.0
    alpha = torch.linspace(0.0, 1.0, len(y), dtype=torch.float64)
    params = dict(model.named_parameters())
    losses = per_example_losses(model, params, scratch_buffers(model), x, y)
    q = torch.stack([flat(torch.autograd.grad(losses[i], list(params.values()), retain_graph=True))
                     for i in range(len(y))])
    gt = flat(torch.autograd.grad(val_loss(model, params, tx, ty), list(params.values())))
    ref = torch.clamp(alpha + lr_alpha * lr * (q @ gt), 0, 1)
    ref_step = (alpha[:, None] * q).mean(0)
    before = flat([p.detach().clone() for p in model.parameters()])
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    new_alpha = soseleto_step(model, opt, x, y, tx, ty, alpha, lr=lr, lr_alpha=lr_alpha).weights
    assert torch.allclose(new_alpha, ref, atol=1e-10, rtol=0)
    assert ((ref > 0) & (ref < 1)).any()
    after = flat([p.detach() for p in model.parameters()])
    assert torch.allclose(before - after, lr * ref_step, atol=1e-12, rtol=0)


def test_soseleto_known_answer():
    a = soseleto_update(torch.tensor([0.5, 0.5, 0.9]), torch.tensor([1.0, -10.0, 2.0]), lr_alpha=1.0, lr=0.1)
    assert torch.allclose(a, torch.tensor([0.6, 0.0, 1.0]))


def test_bilevel_group_loop_equals_vmap_with_batch_norm_and_padding():
    model, x, y, _, _ = make_case("cnn", n=14)
    index, mask = stratified_groups(y, 4)
    assert not mask.all()  # 14 = 4 x 4 - 2: padded slots (BatchNorm sees them in both paths)
    scale = torch.linspace(0.5, 1.5, 14, dtype=torch.float64)
    loop = group_gradients(model, x, y, index, mask, loss_scale=scale, vectorize=False)
    vec = group_gradients(model, x, y, index, mask, loss_scale=scale, vectorize=True)
    for a, b in zip(loop, vec):
        if isinstance(a, dict):
            assert a.keys() == b.keys()
            for n in a:
                assert torch.allclose(a[n], b[n], atol=1e-12, rtol=0), n
        else:
            assert torch.allclose(a, b, atol=1e-12, rtol=0)
    assert not torch.equal(loop[2]["bn.running_mean"][0], loop[2]["bn.running_mean"][1])  # own stats
    for b in model.buffers():  # neither path touches the real running statistics
        assert torch.equal(b, torch.zeros_like(b)) or torch.equal(b, torch.ones_like(b))
