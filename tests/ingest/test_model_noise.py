"""``--inject-noise model:P``: a model fit on other rows gives the most confusable rows its most
likely wrong class (instance-dependent noise, as people make it)."""

from __future__ import annotations

import numpy as np
import pytest

from winnow.stages.ingest import IngestParams, ingest
from winnow.stages.ingest.noise import model_noise, parse_noise


def test_known_answer_the_ambiguous_rows_flip_first():
    rng = np.random.default_rng(0)
    far = np.r_[rng.normal(-6, 0.5, 100), rng.normal(6, 0.5, 100)]
    near = rng.normal(0, 0.3, 20)  # the region where the classes meet
    x = np.c_[np.r_[far, near], rng.normal(size=220)]
    y = np.r_[np.zeros(100, int), np.ones(100, int), np.arange(20) % 2]
    cand = np.arange(220)
    noisy = model_noise(x, y, cand, rate=10 / 220, num_classes=2, rng=np.random.default_rng(1))
    flipped = np.flatnonzero(noisy != y)
    assert len(flipped) == 10 and (flipped >= 200).all(), "only rows from the ambiguous region flip"


def test_three_classes_flip_to_the_confusable_one_exactly_rate_and_seeded():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [2.0, 0.0], [30.0, 30.0]])  # 0 and 1 overlap, 2 is far away
    y = np.repeat(np.arange(3), 200)
    x = centres[y] + rng.normal(size=(600, 2))
    cand = np.arange(0, 600, 2)  # only half the rows may change
    a = model_noise(x, y, cand, rate=0.2, num_classes=3, rng=np.random.default_rng(5))
    b = model_noise(x, y, cand, rate=0.2, num_classes=3, rng=np.random.default_rng(5))
    changed = np.flatnonzero(a != y)
    assert np.array_equal(a, b) and len(changed) == 60 and np.isin(changed, cand).all()
    assert set(zip(y[changed], a[changed])) <= {(0, 1), (1, 0)}, "flips go to the confusable class only"


def test_ingest_digits_with_model_noise():
    assert parse_noise("model:0.4") == ("model", 0.4, 0)
    with pytest.raises(ValueError, match="only background noise takes a CLASS"):
        parse_noise("model:0.4:1")
    r = ingest(IngestParams(source="digits", inject_noise="model:0.3", trusted_per_class=10), seed=0)
    m = r.manifest
    train = np.asarray(m["split"].to_pylist()) == "train"
    given, true = m["label"].to_numpy(), m["true_label"].to_numpy()
    assert r.summary["noise"]["kind"] == "model"
    assert (given != true)[train].mean() == pytest.approx(0.3, abs=0.001) and (given == true)[~train].all()
    pairs = np.bincount(true[given != true] * 10 + given[given != true], minlength=100)
    assert pairs.max() > 3 * (given != true).sum() / 90, "instance-dependent: some class pairs dominate"
