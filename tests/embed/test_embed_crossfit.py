"""Cross-fitting: an example's probability comes from a head that never saw its label."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.embed.conftest import make_manifest
from winnow.stages.embed import EmbedParams, run_embed
from winnow.stages.embed.crossfit import assign_folds, crossfit, fit_head, standardise


def _blobs(n=120, d=6, c=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    centres = rng.normal(scale=3.0, size=(c, d))
    return (centres[y] + rng.normal(size=(n, d))).astype(np.float32), y


def test_folds_are_stratified_seeded_and_complete():
    y = np.repeat(np.arange(4), 25)
    a, b = assign_folds(y, 5, seed=3), assign_folds(y, 5, seed=3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, assign_folds(y, 5, seed=4))
    for k in range(5):
        np.testing.assert_array_equal(np.bincount(y[a == k], minlength=4), [5, 5, 5, 5])


def test_planted_memorisable_example_is_scored_out_of_sample():
    x, y = _blobs()
    # Row 0 gets a private coordinate (nonzero for it alone) and a label that contradicts its
    # cluster. A head that trains on row 0 memorises it through that coordinate; a head that
    # did not cannot, so its out-of-sample probability of the planted label stays low.
    x = np.hstack([x, np.zeros((len(x), 1), np.float32)])
    x[0, -1] = 30.0
    planted = (y[0] + 1) % 3
    y = y.copy()
    y[0] = planted
    fit = np.ones(len(x), bool)
    cf = crossfit(x, y, fit, fit, 3, folds=5, iters=200, weight_decay=1e-5, seed=0)
    xs = standardise(x, fit)
    full = fit_head(xs, torch.as_tensor(y), 3, iters=200, weight_decay=1e-5)
    with torch.no_grad():
        p_in = torch.softmax(full(xs)[1], 1).numpy()
    assert p_in[0, planted] > 0.9  # memorised when trained on its own label
    assert cf.probs[0, planted] < 0.1  # not memorised: scored by a head that never saw it
    assert cf.fold[0] >= 0
    np.testing.assert_allclose(cf.probs.sum(1), 1, rtol=1e-5)


def test_each_fold_is_predicted_by_the_head_trained_without_it():
    x, y = _blobs(90)
    fit = np.ones(len(x), bool)
    cf = crossfit(x, y, fit, fit, 3, folds=3, iters=30, seed=7)
    xs = standardise(x, fit).numpy()
    for k in range(3):
        held = cf.fold == k
        head = fit_head(torch.as_tensor(xs[~held]), torch.as_tensor(y[~held]), 3, iters=30, seed=7 * 1000 + k)
        with torch.no_grad():
            z = head(torch.as_tensor(xs[held]))[1].numpy()
        np.testing.assert_allclose(cf.logits[held], z, rtol=1e-4, atol=1e-4)
        # ... and NOT by a head that saw the fold.
        leak = fit_head(torch.as_tensor(xs), torch.as_tensor(y), 3, iters=30, seed=7 * 1000 + k)
        with torch.no_grad():
            assert not np.allclose(leak(torch.as_tensor(xs[held]))[1].numpy(), z, atol=1e-3)


def test_test_rows_are_predicted_by_the_head_on_all_labelled_rows():
    x, y = _blobs(60)
    fit = np.arange(60) < 45
    cf = crossfit(x, y, fit, np.ones(60, bool), 3, folds=3, iters=30, seed=1)
    xs = standardise(x, np.ones(60, bool)).numpy()
    head = fit_head(torch.as_tensor(xs[fit]), torch.as_tensor(y[fit]), 3, iters=30, seed=1 * 1000 + 3)
    with torch.no_grad():
        z = head(torch.as_tensor(xs[~fit]))[1].numpy()
    np.testing.assert_allclose(cf.logits[~fit], z, rtol=1e-4, atol=1e-4)
    assert (cf.fold[~fit] == -1).all() and (cf.fold[fit] >= 0).all()


def test_mlp_head_separates_blobs():
    x, y = _blobs(90)
    fit = np.ones(90, bool)
    cf = crossfit(x, y, fit, fit, 3, folds=3, kind="mlp", hidden=16, iters=50, seed=0)
    assert cf.last_input.shape == (90, 16)
    assert (cf.probs.argmax(1) == y).mean() > 0.9


def test_stage_uses_given_folds_and_includes_trusted_rows_but_not_test_rows():
    manifest = make_manifest(30, splits=("train", "trusted", "test"))
    feats, _ = _blobs(30)
    folds = np.arange(30) % 2
    res = run_embed(
        manifest, EmbedParams(model="features", folds=2, head_iters=10), num_classes=3, features=feats, fold_ids=folds
    )
    split = np.array(manifest.column("split").to_pylist())
    assert (res.fold[split == "test"] == -1).all()
    np.testing.assert_array_equal(res.fold[split != "test"], folds[split != "test"])
    assert np.isfinite(res.probs).all()


def test_mlp_last_input_of_every_row_comes_from_one_network():
    # h of the gradient embedding (p - y) (x) h must live in one space for all rows: the fold
    # heads' hidden units are unrelated, so per-fold h made rows cluster by fold.
    x, y = _blobs(60)
    fit = np.arange(60) < 45
    cf = crossfit(x, y, fit, np.ones(60, bool), 3, folds=3, kind="mlp", hidden=8, iters=30, seed=2)
    xs = standardise(x, np.ones(60, bool))
    full = fit_head(xs[fit], torch.as_tensor(y[fit]), 3, kind="mlp", hidden=8, iters=30, seed=2 * 1000 + 3)
    with torch.no_grad():
        h, z = full(xs)
    np.testing.assert_allclose(cf.last_input, h.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cf.logits[~fit], z.numpy()[~fit], rtol=1e-4, atol=1e-4)
    assert not np.allclose(cf.logits[fit], z.numpy()[fit], atol=1e-3)  # probs stay out of sample


def test_mlp_gradient_embedding_does_not_cluster_by_fold():
    from winnow.stages.embed.gradembed import gradient_embedding

    x, y = _blobs(300, d=8)
    fit = np.ones(len(y), bool)
    cf = crossfit(x, y, fit, fit, 3, folds=5, kind="mlp", hidden=32, iters=50, seed=0)
    g = gradient_embedding(cf.probs, y, cf.last_input)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    same = []
    for c in range(3):
        rows = np.flatnonzero(y == c)
        s = g[rows] @ g[rows].T
        np.fill_diagonal(s, -9)
        nn_ = np.argsort(-s, 1)[:, :10]
        same.append((cf.fold[rows][nn_] == cf.fold[rows][:, None]).mean())
    assert np.mean(same) < 0.3  # chance is 1/5; per-fold hidden spaces gave far more


@pytest.mark.parametrize("scale", [1e30, 1e-30])
def test_probs_do_not_depend_on_the_embeddings_scale(scale: float):
    # float32 statistics overflowed for large features and a clamped std flattened tiny ones.
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    x = (rng.normal(size=(60, 4)) + y[:, None]).astype(np.float32)
    x[:, 3] = 2.0  # a constant feature is only centred
    fit = np.ones(60, bool)
    base = crossfit(x, y, fit, fit, 3, folds=3, iters=20).probs
    scaled = crossfit(x * np.float32(scale), y, fit, fit, 3, folds=3, iters=20).probs
    assert np.isfinite(scaled).all()
    np.testing.assert_allclose(scaled, base, atol=1e-3)  # float32 rounding of the scaled inputs, through L-BFGS


def test_standardise_of_every_row_equals_the_indexed_copy():
    """Every row selected: the statistics come from the array itself, not a copy (issue 17),
    with the same bits as through the indexed copy."""
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(1000, 7)).astype(np.float32)
    whole = standardise(x, np.ones(1000, bool)).numpy()
    indexed = standardise(x, np.arange(1000)).numpy()
    np.testing.assert_array_equal(whole, indexed)


def test_blockwise_std_equals_numpy_across_blocks(monkeypatch):
    """The standard deviation is summed a block of rows at a time (no float64 copy of the whole
    embedding); it must equal numpy's float64 std, blocks and a last partial block included."""
    from winnow.stages.embed import crossfit as cf

    monkeypatch.setattr(cf, "STD_BLOCK_ROWS", 64)
    x = np.random.default_rng(3).normal(5.0, [1e-3, 1.0, 1e4], size=(1000, 3)).astype(np.float32)
    mean = x.mean(0, dtype=np.float64)
    np.testing.assert_allclose(cf._column_std(x, mean), x.std(0, dtype=np.float64, ddof=1), rtol=1e-12)
    assert (cf._column_std(x[:1], mean) == 0).all()
    constant = np.ones((300, 2), np.float32)
    out = standardise(constant, np.ones(300, bool)).numpy()
    assert (out == 0).all()  # a constant feature is only centred


def test_blockwise_fit_reaches_the_single_batch_minimum(monkeypatch):
    """Above FIT_BLOCK_ROWS fit rows, the loss is summed block by block over all rows with the
    held-out ones weighted 0 (no copy of the fit rows): the same convex problem, so the same head."""
    import torch

    from winnow.stages.embed import crossfit as cf

    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.normal(size=(700, 6)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 3, 700))
    x[:, 0] += 1.5 * y.float()
    rows = rng.random(700) < 0.8
    single = cf.fit_head(x[torch.from_numpy(np.flatnonzero(rows))], y[torch.from_numpy(np.flatnonzero(rows))], 3,
                         iters=200)
    monkeypatch.setattr(cf, "FIT_BLOCK_ROWS", 128)  # 5.5 blocks of 128 rows
    blocked = cf.fit_head(x, y, 3, iters=200, rows=rows)
    with torch.no_grad():
        a, b = torch.softmax(single(x)[1], 1), torch.softmax(blocked(x)[1], 1)
    assert torch.allclose(a, b, atol=2e-4), float((a - b).abs().max())
