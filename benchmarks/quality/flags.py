"""Flag quality: winnow vs cleanlab vs a loss threshold, on the same embeddings and probs.

    .venv/bin/python -m benchmarks.quality.flags                    # digits, 40% uniform
    .venv/bin/python -m benchmarks.quality.flags --cifar            # + CIFAR-10 scenarios
    .venv/bin/python -m benchmarks.quality.flags --manifest RUN/ingest/manifest.parquet \
        --features RUN/embed/features.parquet                       # a real embed stage output

All methods see the same out-of-sample (cross-fitted) probabilities; winnow also uses the
embeddings and the trusted rows (its kNN vote), which is the point of having a trusted set.
- winnow: ``stages.export.export`` with default parameters (calibrated threshold, no weights).
- cleanlab: ``cleanlab.filter.find_label_issues(labels, probs)`` (defaults) for the flags and
  ``cleanlab.rank.get_label_quality_scores`` (self-confidence) for the AUROC; train rows only.
- loss threshold: flag when the cross-entropy of the given label exceeds log(C) (p < 1/C);
  AUROC of the loss.
Noise always flips the label (never redraws the true class). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stages.common import schema
from stages.common.arrow import vectors_from_arrow, vectors_to_arrow, with_metadata
from stages.export import ExportParams, export
from stages.export.evaluate import auroc

CIFAR = Path("/work/shared/data/cifar10")


def inject(labels: np.ndarray, kind: str, rate: float, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Flip a ``rate`` fraction: 'uniform' to another class at random, 'pair' to class c+1."""
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


def compare(name: str, embedding: np.ndarray, probs: np.ndarray, given: np.ndarray, true: np.ndarray,
            split: np.ndarray, n_classes: int, seed: int = 0) -> list[dict]:
    """Rows of the results table for one scenario (metrics over train rows)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    n = len(given)
    ids = pa.array([str(i) for i in range(n)])
    manifest = with_metadata(pa.table({
        "id": ids, "label": pa.array(given, pa.int32()), "split": pa.array(split),
        "error": pa.nulls(n, pa.string()), "true_label": pa.array(true, pa.int32()),
    }), classes=[str(c) for c in range(n_classes)])
    features = pa.table({"id": ids, "embedding": vectors_to_arrow(np.ascontiguousarray(embedding, np.float32)),
                         "probs": vectors_to_arrow(np.ascontiguousarray(probs, np.float32))})
    train = split == schema.TRAIN
    noisy = (given != true)[train]
    out = []

    t = time.perf_counter()
    res = export(manifest, features, None, None, ExportParams(), seed=seed)
    dt = time.perf_counter() - t
    score = res.curated["noise_score"].to_numpy(zero_copy_only=False)[train]
    flag = res.curated["noise_flag"].to_numpy(zero_copy_only=False)[train]
    out.append(_row(name, "winnow", noisy, flag, score, dt))

    p, y = probs[train], given[train]
    t = time.perf_counter()
    cl_flag = find_label_issues(y, p)
    cl_score = 1 - get_label_quality_scores(y, p)
    out.append(_row(name, "cleanlab", noisy, cl_flag, cl_score, time.perf_counter() - t))

    loss = -np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None))
    out.append(_row(name, "loss > log C", noisy, loss > np.log(n_classes), loss, 0.0))
    est = res.summary["noise_estimate"]["rate"]
    print(f"  {name}: true noise {noisy.mean():.3f}, winnow estimate {est:.3f}, "
          f"winnow flagged {flag.mean():.3f}, cleanlab flagged {cl_flag.mean():.3f}")
    return out


def _row(scenario: str, method: str, noisy: np.ndarray, flag: np.ndarray, score: np.ndarray, dt: float) -> dict:
    tp = int((noisy & flag).sum())
    prec = tp / max(int(flag.sum()), 1)
    rec = tp / max(int(noisy.sum()), 1)
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {"scenario": scenario, "method": method, "precision": prec, "recall": rec, "f1": f1,
            "auroc": auroc(noisy, score), "seconds": dt}


def digits(seed: int) -> list[dict]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    split = np.full(len(y), schema.TRAIN, dtype=object)
    for c in range(10):  # 10 trusted rows per class, as in the demo
        split[rng.choice(np.flatnonzero(y == c), 10, replace=False)] = schema.TRUSTED
    given = np.where(split == schema.TRAIN, inject(y, "uniform", 0.4, 10, rng), y)
    emb = (x / 16.0).astype(np.float32)
    probs = crossfit_probs(emb, given, 10, seed)
    return compare("digits, 40% uniform", emb, probs, given, y, split.astype(str), 10, seed)


def _cifar_features(n_train: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Cheap CPU features for CIFAR-10: PCA of colour pixels (no pretrained network offline)."""
    from PIL import Image
    from sklearn.decomposition import PCA

    table = pq.read_table(CIFAR / "train.parquet", columns=["label", "image"])
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(table.num_rows, n_train, replace=False))
    images = table["image"].take(pa.array(rows)).to_pylist()
    x = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB"), dtype=np.float32).ravel() / 255
                  for b in images])
    y = table["label"].to_numpy()[rows].astype(np.int64)
    x = x - x.mean(axis=0)
    emb = PCA(128, whiten=True, random_state=seed).fit_transform(x).astype(np.float32)
    return emb, y


def cifar(seed: int, n_train: int) -> list[dict]:
    emb, y = _cifar_features(n_train, seed)
    out = []
    for name, kind, imbalance in (("uniform", "uniform", None), ("pair", "pair", None), ("imbalance 100", "uniform", 100)):
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
        rate = 0.4 if not imbalance else 0.4
        given = np.where(split == schema.TRAIN, inject(t, kind, rate, 10, rng), t)
        probs = crossfit_probs(e, given, 10, seed)
        label = f"CIFAR-10 ({len(t)} rows), 40% {name}" if not imbalance else f"CIFAR-10 ({len(t)} rows), imbalance 100 + 40% uniform"
        out += compare(label, e, probs, given, t, split.astype(str), 10, seed)
    return out


def from_run(manifest_path: str, features_path: str) -> list[dict]:
    """Use a real run: the manifest must have true_label (synthetic noise)."""
    m = pq.read_table(manifest_path)
    f = pq.read_table(features_path)
    ok = np.array([e is None for e in m["error"].to_pylist()])
    emb = vectors_from_arrow(f["embedding"])[ok]
    probs = vectors_from_arrow(f["probs"])[ok]
    given = m["label"].to_numpy(zero_copy_only=False)[ok].astype(np.int64)
    true = m["true_label"].to_numpy(zero_copy_only=False)[ok].astype(np.int64)
    split = np.asarray(m["split"].to_pylist())[ok]
    keep = split != schema.TEST
    return compare(Path(manifest_path).parent.parent.name, emb[keep], probs[keep], given[keep], true[keep],
                   split[keep], probs.shape[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cifar", action="store_true", help="also run the CIFAR-10 scenarios")
    ap.add_argument("--cifar-rows", type=int, default=20000, help="CIFAR-10 train images to use")
    ap.add_argument("--manifest", help="manifest.parquet of a run with synthetic noise")
    ap.add_argument("--features", help="features.parquet of the same run")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rows = from_run(args.manifest, args.features) if args.manifest else digits(args.seed)
    if args.cifar and (CIFAR / "train.parquet").exists():
        rows += cifar(args.seed, args.cifar_rows)
    print("\n| scenario | method | precision | recall | F1 | AUROC |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['scenario']} | {r['method']} | {r['precision']:.3f} | {r['recall']:.3f} | "
              f"{r['f1']:.3f} | {r['auroc']:.3f} |")


if __name__ == "__main__":
    main()
