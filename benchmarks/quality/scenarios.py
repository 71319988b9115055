"""The quality benchmark's noisy-label scenarios, shared by ``flags.py`` and ``downstream.py``.

Each scenario is a set of train + trusted rows with an embedding, cross-fitted (out-of-sample)
probabilities of a logistic regression on the given labels, the given (noisy) and true labels,
and optionally a held-out test split with clean labels.

- digits: raw pixels / 16, 10 trusted rows per class, 40% uniform flips.
- CIFAR-10: whitened PCA-128 of the colour pixels of ``n_train`` train images (no pretrained
  network offline), 100 trusted rows per class (fewer for tiny classes), 40% uniform, 40% pair
  (c -> c+1) and imbalance 100 (class c keeps 100^(-c/9) of its rows) + 40% uniform.
Noise always flips the label (never redraws the true class).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from winnow.stages.common import schema
from winnow.stages.common.arrow import vectors_to_arrow, with_metadata

CIFAR = Path("/work/shared/data/cifar10")


@dataclass
class Scenario:
    """One noisy-label scenario. Arrays over the ``n`` train + trusted rows unless named ``test_*``."""

    name: str
    embedding: np.ndarray  # (n, d) float32
    probs: np.ndarray  # (n, C) out-of-sample probabilities of the given labels
    given: np.ndarray  # (n,) int64, noisy on train rows, clean on trusted rows
    true: np.ndarray  # (n,) int64
    split: np.ndarray  # (n,) str, "train" or "trusted"
    n_classes: int
    images: np.ndarray | None = None  # (n, H, W) uint8, when the scenario has small images
    test_embedding: np.ndarray | None = None  # (m, d) float32
    test_labels: np.ndarray | None = None  # (m,) int64, clean
    test_images: np.ndarray | None = None  # (m, H, W) uint8


def inject(labels: np.ndarray, kind: str, rate: float, n_classes: int, rng: np.random.Generator,
           x: np.ndarray | None = None) -> np.ndarray:
    """Flip a ``rate`` fraction: 'uniform' to another class at random, 'pair' to class c+1,
    'model' the most confusable rows of ``x`` to their likeliest wrong class (ingest's
    ``--inject-noise model:P``, over all rows given here)."""
    if kind == "model":
        from winnow.stages.ingest.noise import model_noise

        return model_noise(x, labels, np.arange(len(labels)), rate=rate, num_classes=n_classes, rng=rng)
    noisy = labels.copy()
    flip = rng.random(len(labels)) < rate
    if kind == "uniform":
        noisy[flip] = (labels[flip] + rng.integers(1, n_classes, size=flip.sum())) % n_classes
    elif kind == "pair":
        noisy[flip] = (labels[flip] + 1) % n_classes
    else:
        raise ValueError(kind)
    return noisy


def crossfit_probs(x: np.ndarray, y: np.ndarray, n_classes: int, seed: int, folds: int = 5) -> np.ndarray:
    """Out-of-sample class probabilities from a logistic regression, ``folds``-fold cross-fitting."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    probs = np.zeros((len(y), n_classes))
    skf = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for fit, held in skf.split(x, y):
        clf = LogisticRegression(max_iter=300, C=0.1)
        clf.fit(x[fit], y[fit])
        probs[np.ix_(held, clf.classes_)] = clf.predict_proba(x[held])
    return probs


def digits(seed: int, *, holdout: float = 0.0, noise: str = "uniform") -> Scenario:
    """Digits at 40% uniform; ``holdout`` > 0 keeps a stratified clean test fraction aside first.

    With ``holdout == 0`` the random draws are exactly those of the original flag benchmark.
    """
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    images = load_digits().images
    test_x = test_y = test_img = None
    if holdout > 0:
        from sklearn.model_selection import train_test_split

        idx = np.arange(len(y))
        fit, held = train_test_split(idx, test_size=holdout, stratify=y, random_state=seed)
        fit, held = np.sort(fit), np.sort(held)
        test_x, test_y, test_img = x[held], y[held], images[held]
        x, y, images = x[fit], y[fit], images[fit]
    rng = np.random.default_rng(seed)
    split = np.full(len(y), schema.TRAIN, dtype=object)
    for c in range(10):  # 10 trusted rows per class, as in the demo
        split[rng.choice(np.flatnonzero(y == c), 10, replace=False)] = schema.TRUSTED
    emb = (x / 16.0).astype(np.float32)
    given = np.where(split == schema.TRAIN, inject(y, noise, 0.4, 10, rng, x=emb), y)
    probs = crossfit_probs(emb, given, 10, seed)

    def to_u8(a: np.ndarray) -> np.ndarray:  # 0-16 -> 0-255, as ingest's digits source does
        return np.clip(np.rint(a * (255.0 / 16.0)), 0, 255).astype(np.uint8)

    return Scenario(
        f"digits, 40% {noise}", emb, probs, given.astype(np.int64), y.astype(np.int64), split.astype(str), 10,
        images=to_u8(images),
        test_embedding=None if test_x is None else (test_x / 16.0).astype(np.float32),
        test_labels=None if test_y is None else test_y.astype(np.int64),
        test_images=None if test_img is None else to_u8(test_img),
    )


def _decode(images: list[bytes]) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB"), dtype=np.float32).ravel() / 255
                     for b in images])


def cifar_features(n_train: int, seed: int, *, with_test: bool = False
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Cheap CPU features for CIFAR-10: PCA of colour pixels (no pretrained network offline).

    Returns ``(emb, y, test_emb, test_y)``; the test part (``test.parquet`` projected with the
    PCA fitted on the train rows) only with ``with_test``.
    """
    table = pq.read_table(CIFAR / "train.parquet", columns=["label", "image"])
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(table.num_rows, n_train, replace=False))
    y = table["label"].to_numpy()[rows].astype(np.int64)
    emb, project = pixel_pca(_decode(table["image"].take(pa.array(rows)).to_pylist()), seed)
    if not with_test:
        return emb, y, None, None
    test = pq.read_table(CIFAR / "test.parquet", columns=["label", "image"])
    return emb, y, project(_decode(test["image"].to_pylist())), test["label"].to_numpy().astype(np.int64)


def pixel_pca(x: np.ndarray, seed: int) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """Whitened PCA-128 of centred pixel rows ``x`` (as :func:`_decode` makes them): ``(emb,
    project)``, the fitted rows' features and the same transform for other pixel rows."""
    from sklearn.decomposition import PCA

    mean = x.mean(axis=0)
    pca = PCA(128, whiten=True, random_state=seed)
    emb = pca.fit_transform(x - mean).astype(np.float32)
    return emb, lambda other: pca.transform(other - mean).astype(np.float32)


CIFAR_SCENARIOS = (("uniform", "uniform", None), ("pair", "pair", None), ("imbalance 100", "uniform", 100))


def cifar(seed: int, n_train: int, *, with_test: bool = False,
          scenarios: tuple = CIFAR_SCENARIOS) -> list[Scenario]:
    """The CIFAR-10 scenarios (default: three) on the same features (test split balanced and clean);
    ``("model", "model", None)`` adds model noise."""
    emb, y, test_emb, test_y = cifar_features(n_train, seed, with_test=with_test)
    out = []
    for name, kind, imbalance in scenarios:
        rng = np.random.default_rng(seed)
        keep = np.ones(len(y), dtype=bool)
        if imbalance:  # class c keeps a fraction imbalance^(-c/9) of its rows
            frac = imbalance ** (-np.arange(10) / 9)
            keep = rng.random(len(y)) < frac[y]
        e, t = emb[keep], y[keep]
        split = np.full(len(t), schema.TRAIN, dtype=object)
        for c in range(10):  # 1000 trusted: 100 per class (fewer when the class is smaller)
            pool = np.flatnonzero(t == c)
            split[rng.choice(pool, min(100, len(pool) // 2), replace=False)] = schema.TRUSTED
        given = np.where(split == schema.TRAIN, inject(t, kind, 0.4, 10, rng, x=e), t)
        probs = crossfit_probs(e, given, 10, seed)
        label = (f"CIFAR-10 ({len(t)} rows), 40% {name}" if not imbalance
                 else f"CIFAR-10 ({len(t)} rows), imbalance 100 + 40% uniform")
        out.append(Scenario(label, e, probs, given.astype(np.int64), t, split.astype(str), 10,
                            test_embedding=test_emb, test_labels=test_y))
    return out


def export_tables(embedding: np.ndarray, probs: np.ndarray, given: np.ndarray, true: np.ndarray,
                  split: np.ndarray, n_classes: int) -> tuple[pa.Table, pa.Table]:
    """``(manifest, features)`` for ``winnow.stages.export.export``; ids are the row numbers as strings."""
    n = len(given)
    ids = pa.array([str(i) for i in range(n)])
    manifest = with_metadata(pa.table({
        "id": ids, "label": pa.array(given, pa.int32()), "split": pa.array(split),
        "error": pa.nulls(n, pa.string()), "true_label": pa.array(true, pa.int32()),
    }), classes=[str(c) for c in range(n_classes)])
    features = pa.table({"id": ids, "embedding": vectors_to_arrow(np.ascontiguousarray(embedding, np.float32)),
                         "probs": vectors_to_arrow(np.ascontiguousarray(probs, np.float32))})
    return manifest, features
