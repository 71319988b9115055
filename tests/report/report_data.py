"""A small synthetic curated table for the report tests (real digit images, injected noise, hostile strings)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from sklearn.datasets import load_digits

from winnow.stages.common.arrow import with_metadata
from winnow.stages.common.images import encode_png

EVIL_CLASS = "<script>alert(1)</script>"
EVIL_ID = "row\"7'<b>&"


def make_curated(n: int = 160, *, seed: int = 0, truth: bool = True, classes: list[str] | None = None) -> pa.Table:
    rng = np.random.default_rng(seed)
    digits = load_digits(n_class=4)
    idx = rng.choice(len(digits.target), n, replace=False)
    images = (digits.images[idx] * 255 / 16).clip(0, 255).astype(np.uint8)
    true_label = digits.target[idx].astype(np.int32)
    classes = classes or ["zero", "one", EVIL_CLASS, "three"]
    split = np.where(np.arange(n) < n - 20, "train", "trusted")
    noisy = (rng.random(n) < 0.3) & (split == "train")
    label = np.where(noisy, (true_label + rng.integers(1, 4, n)) % 4, true_label).astype(np.int32)
    score = np.clip(np.where(noisy, 0.75, 0.2) + rng.normal(0, 0.12, n), 0, 1)
    flag = (score > 0.5) & (split == "train")
    weight = np.clip(np.where(noisy, 0.1, 0.9) + rng.normal(0, 0.1, n), 0, None).astype(np.float32)
    error = [None] * n
    error[5] = "cannot decode image (<bad> & \"broken\")"
    ids = [f"ex{i:04d}" for i in range(n)]
    ids[int(np.flatnonzero(flag)[0])] = EVIL_ID
    selected = rng.random(n) < 0.2
    cols = {
        "id": ids,
        "uri": [None] * n,
        "image": [encode_png(im) for im in images],
        "label": pa.array(label, pa.int32()),
        "label_name": [classes[c] for c in label],
        "split": list(split),
        "error": error,
        "true_label": pa.array(true_label if truth else [None] * n, pa.int32()),
        "selected": selected,
        "cluster_id": pa.array(rng.integers(0, n, n), pa.int64()),
        "coreset_weight": pa.array(np.where(selected, rng.integers(1, 9, n), 0), pa.float32()),
        "weight": pa.array(weight, pa.float32()),
        "round_0": pa.array(np.clip(weight + 0.2, 0, None), pa.float32()),
        "round_1": pa.array(weight, pa.float32()),
        "noise_score": pa.array(score, pa.float32()),
        "noise_flag": flag,
        "suggested_label": pa.array(np.where(flag, true_label, label), pa.int32()),
        "suggested_confidence": pa.array(rng.uniform(0.5, 1, n), pa.float32()),
    }
    return with_metadata(pa.table(cols), classes=classes)
