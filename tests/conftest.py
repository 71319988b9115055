"""Shared fixtures: small data the tests make themselves."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image


def png_bytes(value: int, size: int = 8, mode: str = "L") -> bytes:
    arr = np.full((size, size) if mode == "L" else (size, size, 3), value, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def write_digits_features(path: Path, *, seed: int = 0, noise: float = 0.4, trusted_per_class: int = 10) -> np.ndarray:
    """Write digits as a feature table (pixels / 16 as ``embedding``): the cheapest realistic input.

    ``trusted_per_class`` rows of each class are the trusted split; each train row's label is
    flipped to another class with probability ``noise``. Returns the true labels in row order.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(seed)
    split = np.array(["train"] * len(d.target), dtype=object)
    for c in range(10):
        split[rng.permutation(np.flatnonzero(d.target == c))[:trusted_per_class]] = "trusted"
    labels = d.target.copy()
    flip = (split == "train") & (rng.random(len(labels)) < noise)
    labels[flip] = (labels[flip] + rng.integers(1, 10, flip.sum())) % 10
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(len(labels))], "label": labels,
                             "embedding": list((d.data / 16.0).astype(np.float32)), "split": list(split)}), path)
    return d.target


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """root/<class>/<file>: 3 classes x 4 tiny RGB images."""
    root = tmp_path / "photos"
    for c, name in enumerate(["cat", "dog", "eel"]):
        (root / name).mkdir(parents=True)
        for i in range(4):
            (root / name / f"{i}.png").write_bytes(png_bytes(40 * c + i, mode="RGB"))
    return root


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Run a test on one torch thread and restore the setting: tiny models on a shared 2-core
    machine are 10-100x slower with two OpenMP threads spinning against other processes.
    The embed, weight and train tests opt in from their own conftest."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
