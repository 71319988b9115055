"""Shared helpers for the embed tests: tiny manifests, one torch thread (the CI box is shared)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from winnow.stages.common.images import encode_png


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """Every test here runs on one torch thread (see tests/conftest.py)."""


def make_manifest(
    n: int = 24,
    *,
    size: int = 8,
    channels: int = 1,
    num_classes: int = 3,
    seed: int = 0,
    splits: tuple[str, ...] = ("train",),
    errors: dict[int, str] | None = None,
    images: np.ndarray | None = None,
    labels: np.ndarray | None = None,
) -> pa.Table:
    """A manifest with PNG-encoded images whose brightness pattern depends on the class."""
    rng = np.random.default_rng(seed)
    if labels is None:
        labels = np.arange(n) % num_classes
    if images is None:
        base = rng.integers(0, 256, (num_classes, size, size, channels))
        noise = rng.integers(-40, 41, (n, size, size, channels))
        images = np.clip(base[labels] + noise, 0, 255).astype(np.uint8)
    errors = errors or {}
    return pa.table(
        {
            "id": [f"r{i}" for i in range(n)],
            "uri": pa.array([None] * n, pa.string()),
            "image": [encode_png(images[i]) for i in range(n)],
            "label": pa.array(labels, pa.int32()),
            "label_name": [str(v) for v in labels],
            "split": [splits[i % len(splits)] for i in range(n)],
            "error": pa.array([errors.get(i) for i in range(n)], pa.string()),
            "true_label": pa.array(labels, pa.int32()),
        }
    )
