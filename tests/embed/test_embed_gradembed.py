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
