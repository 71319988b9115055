"""Gradient embeddings against autograd, and the seeded projection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from winnow.stages.embed.gradembed import gradient_embedding, random_projection


def _case(n=7, c=4, h=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g, dtype=torch.float64)
    w = torch.randn(c, h, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(c, generator=g, dtype=torch.float64)
    y = torch.randint(0, c, (n,), generator=g)
    return hidden, w, b, y


def test_full_kind_is_the_last_layer_gradient_per_example():
    hidden, w, b, y = _case()
    z = hidden @ w.T + b
    ref = np.stack(
        [torch.autograd.grad(F.cross_entropy(z[i : i + 1], y[i : i + 1]), w, retain_graph=True)[0].reshape(-1).numpy()
         for i in range(len(y))]
    )
    probs = torch.softmax(z, 1).detach().numpy()
    out = gradient_embedding(probs, y.numpy(), hidden.numpy(), kind="full", chunk=3)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


def test_logit_kind_and_missing_labels_use_the_prediction():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], np.float32)
    out = gradient_embedding(probs, np.array([1, -1]), np.zeros((2, 3), np.float32), kind="logit")
    np.testing.assert_allclose(out, [[0.7, -0.8, 0.1], [0.1, 0.3, -0.4]], atol=1e-6)


def test_projection_is_seeded_linear_and_preserves_norms():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(10), size=50).astype(np.float32)
    y = rng.integers(0, 10, 50)
    hidden = rng.normal(size=(50, 30)).astype(np.float32)
    full = gradient_embedding(probs, y, hidden)
    proj = gradient_embedding(probs, y, hidden, dim=2000, seed=3, chunk=16)
    np.testing.assert_allclose(proj, full @ random_projection(300, 2000, seed=3).numpy(), rtol=1e-4, atol=1e-4)
    # Same seed, other chunk size: the same projection, up to float32 BLAS rounding (which depends on
    # the block shape, so bit equality across chunk sizes is not a property to promise).
    np.testing.assert_allclose(proj, gradient_embedding(probs, y, hidden, dim=2000, seed=3), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(proj, gradient_embedding(probs, y, hidden, dim=2000, seed=3, chunk=16))
    other_seed = gradient_embedding(probs, y, hidden, dim=2000, seed=4, chunk=16)
    assert np.abs(proj - other_seed).max() > 1e-2
    ratio = np.linalg.norm(proj, axis=1) / np.linalg.norm(full, axis=1)
    assert np.all(np.abs(ratio - 1) < 0.1)  # Johnson-Lindenstrauss at dim 2000


def test_bad_kind():
    with pytest.raises(ValueError, match="--grad-kind"):
        gradient_embedding(np.ones((1, 2)), np.zeros(1, int), np.ones((1, 1)), kind="x")


def test_lazy_full_embedding_gives_the_same_blocks_and_finite_rows():
    """The embed adapter streams the unprojected full embedding (issue 17): blocks of any size,
    the last one partial, equal the eager array; finite_rows agrees with it, overflow included."""
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=10).astype(np.float32)
    probs[4] = np.nan  # a diverged head's row
    probs[6] = [3.0, -1.0, -1.0]  # not a softmax: its products can overflow float32
    hidden = rng.normal(size=(10, 5)).astype(np.float32)
    hidden[6, 0] = 2e38
    labels = np.array([0, 1, 2, 0, 1, 2, 1, -1, 0, 1])
    eager = gradient_embedding(probs, labels, hidden, kind="full", chunk=3)
    lazy = gradient_embedding(probs, labels, hidden, kind="full", lazy=True)
    assert lazy.shape == eager.shape
    got = np.concatenate([lazy.block(s, min(10, s + 4)) for s in range(0, 10, 4)])
    np.testing.assert_array_equal(got, eager)
    np.testing.assert_array_equal(np.asarray(lazy), eager)
    np.testing.assert_array_equal(lazy.finite_rows(), np.isfinite(eager).all(1))
    assert not lazy.finite_rows()[[4, 6]].any()
    lazy.invalid = np.arange(10) == 2
    assert np.isnan(lazy.block(0, 4)[2]).all() and np.isfinite(lazy.block(0, 4)[[0, 1, 3]]).all()


def test_lazy_is_ignored_with_a_projection_or_the_logit_kind():
    probs = np.full((3, 2), 0.5, np.float32)
    hidden = np.ones((3, 4), np.float32)
    assert isinstance(gradient_embedding(probs, np.zeros(3, int), hidden, dim=2, lazy=True), np.ndarray)
    assert isinstance(gradient_embedding(probs, np.zeros(3, int), hidden, kind="logit", lazy=True), np.ndarray)
