"""One seeded generator of clustered features with label noise and a trusted split, written as the
feature table ``winnow ingest --features embedding`` reads. The weight and scale benchmarks share it.

Classes are mixtures of ``clusters`` Gaussian blobs: centres ~ N(0, scale^2 I), points = centre +
N(0, I). ``noise`` of the training rows are flipped, always to another class; ``trusted_per_class``
clean rows per class form the trusted split. The truth is returned beside the table.

    python -m benchmarks.synthetic OUT.parquet --rows 100000 [--dim 128 --seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def clustered_features(n: int, *, d: int = 128, classes: int = 10, clusters: int = 5, scale: float = 1.5,
                       noise: float = 0.4, trusted_per_class: int = 100, seed: int = 0,
                       chunk: int = 200_000) -> dict[str, np.ndarray]:
    """n training rows plus classes * trusted_per_class trusted rows, as arrays.

    Returns ``embedding`` (N, d) float32, ``label`` (given), ``true_label``, ``split`` ("train" or
    "trusted") and ``id``; rows are in a seeded random order. Generated in chunks, so peak memory
    stays near the output's size.
    """
    rng = np.random.default_rng(seed)
    centres = (rng.normal(size=(classes * clusters, d)) * scale).astype(np.float32)
    total = n + classes * trusted_per_class
    component = rng.integers(0, classes * clusters, total)
    truth = (component // clusters).astype(np.int32)
    x = np.empty((total, d), dtype=np.float32)
    for s in range(0, total, chunk):
        e = min(total, s + chunk)
        x[s:e] = centres[component[s:e]] + rng.standard_normal((e - s, d), dtype=np.float32)
    trusted = np.zeros(total, dtype=bool)
    for c in range(classes):
        trusted[np.flatnonzero(truth == c)[:trusted_per_class]] = True
    label = truth.copy()
    flip = (rng.random(total) < noise) & ~trusted
    label[flip] = (label[flip] + rng.integers(1, classes, int(flip.sum()))) % classes
    return {"id": np.array([f"r{i:08d}" for i in range(total)]), "embedding": x, "label": label,
            "true_label": truth, "split": np.where(trusted, "trusted", "train")}


def write_table(arrays: dict[str, np.ndarray], path: Path) -> Path:
    """Write the arrays as a Parquet feature table (``embedding`` a fixed-size list of float32).

    The truth stays out of the table: a benchmark keeps it (ingest would not carry it through).
    """
    x = arrays["embedding"]
    emb = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])
    table = pa.table({"id": arrays["id"], "label": arrays["label"], "split": arrays["split"], "embedding": emb})
    pq.write_table(table, path, row_group_size=65536)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--noise", type=float, default=0.4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    write_table(clustered_features(args.rows, d=args.dim, noise=args.noise, seed=args.seed), args.out)


if __name__ == "__main__":
    main()
