"""Synthetic data for the export tests: well-separated clusters, seeded label flips."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from winnow.stages.common.arrow import vectors_to_arrow, with_metadata

CLASSES = ["ant", "bee", "cat", "dog"]


def make_run(seed: int = 0, n_train: int = 400, noise: float = 0.25, n_trusted: int = 10, n_test: int = 20,
             n_errors: int = 3, dim: int = 16) -> dict:
    """Manifest, features, weights and coreset tables of a toy run, plus the truth."""
    rng = np.random.default_rng(seed)
    c = len(CLASSES)
    centers = rng.normal(size=(c, dim)) * 4
    split = np.array(["train"] * n_train + ["trusted"] * (n_trusted * c) + ["test"] * n_test)
    true = np.concatenate([rng.integers(0, c, n_train), np.repeat(np.arange(c), n_trusted),
                           rng.integers(0, c, n_test)])
    n = len(true)
    emb = centers[true] + rng.normal(size=(n, dim))
    given = true.copy()
    flip = (split == "train") & (rng.random(n) < noise)
    given[flip] = (true[flip] + rng.integers(1, c, flip.sum())) % c
    # "out-of-sample" probs: posterior of the true centres, softened
    d2 = ((emb[:, None, :] - centers[None]) ** 2).sum(-1)
    logits = -d2 / (2 * dim)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    errors = [None] * n
    err_rows = rng.choice(np.flatnonzero(split == "train"), n_errors, replace=False)
    for i in err_rows:
        errors[i] = "unreadable image"
    valid = np.array([e is None for e in errors])
    ids = pa.array([f"ex{i:05d}" for i in range(n)])
    manifest = with_metadata(pa.table({
        "id": ids,
        "uri": pa.array([f"img/{i}.png" for i in range(n)]),
        "image": pa.nulls(n, pa.binary()),
        "label": pa.array(given, pa.int32()),
        "label_name": pa.array([CLASSES[g] for g in given]),
        "split": pa.array(split),
        "error": pa.array(errors, pa.string()),
        "true_label": pa.array(true, pa.int32()),
    }), classes=CLASSES)
    features = pa.table({"id": ids, "embedding": vectors_to_arrow(emb, valid),
                         "probs": vectors_to_arrow(probs, valid)})
    is_train = (split == "train") & valid
    # meta weights: clean rows ~1, noisy rows ~0.1 (with some overlap), null off the train split
    w = np.where(flip, rng.uniform(0.0, 0.4, n), rng.uniform(0.3, 1.5, n)) / 64
    zero = np.where(flip, rng.uniform(0.2, 0.8, n), rng.uniform(0.0, 0.3, n))
    weights = pa.table({
        "id": ids,
        "weight": pa.array(w, pa.float32(), mask=~is_train),
        "weight_last": pa.array(w, pa.float32(), mask=~is_train),
        "weight_std": pa.array(np.zeros(n), pa.float32(), mask=~is_train),
        "times_seen": pa.array(np.full(n, 5), pa.int32(), mask=~is_train),
        "zero_fraction": pa.array(zero, pa.float32(), mask=~is_train),
        "loss_mean": pa.array(np.ones(n), pa.float32(), mask=~is_train),
        "round_0": pa.array(w, pa.float32(), mask=~is_train),
    })
    selected = is_train & (rng.random(n) < 0.3)
    coreset = pa.table({
        "id": ids,
        "selected": pa.array(selected),
        "cluster_id": pa.array(np.arange(n), pa.int64()),
        "coreset_weight": pa.array(np.where(selected, rng.integers(1, 8, n), 0), pa.float32()),
        "gain": pa.array(np.zeros(n), pa.float32()),
        "rank": pa.array(np.zeros(n), pa.int32()),
        "method": pa.array(["facility-location"] * n),
    })
    return {"manifest": manifest, "features": features, "weights": weights, "coreset": coreset,
            "true": true, "given": given, "split": split, "valid": valid, "flip": flip}


@pytest.fixture(scope="session")
def run() -> dict:
    return make_run()


@pytest.fixture(scope="session")
def make() -> object:
    """The :func:`make_run` factory, for tests that need other sizes or seeds."""
    return make_run
