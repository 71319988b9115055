"""Flag quality: winnow vs cleanlab vs a loss threshold, on the same embeddings and probs.

    .venv/bin/python -m benchmarks.quality.flags                    # digits, 40% uniform
    .venv/bin/python -m benchmarks.quality.flags --cifar            # + CIFAR-10 scenarios
    .venv/bin/python -m benchmarks.quality.flags --manifest RUN/ingest/manifest.parquet \
        --features RUN/embed/features.parquet                       # a real embed stage output

All methods see the same out-of-sample (cross-fitted) probabilities; winnow also uses the
embeddings and the trusted rows (its kNN vote), which is the point of having a trusted set.
- winnow: ``winnow.stages.export.export`` with default parameters (calibrated threshold, no weights).
- cleanlab: ``cleanlab.filter.find_label_issues(labels, probs)`` (defaults) for the flags and
  ``cleanlab.rank.get_label_quality_scores`` (self-confidence) for the AUROC; train rows only.
- loss threshold: flag when the cross-entropy of the given label exceeds log(C) (p < 1/C);
  AUROC of the loss.
Noise always flips the label (never redraws the true class); the scenarios are built in
:mod:`benchmarks.quality.scenarios`. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from benchmarks.common import print_markdown_table
from benchmarks.quality.scenarios import CIFAR, Scenario, cifar, digits, export_tables
from winnow.stages.common import schema
from winnow.stages.common.arrow import vectors_from_arrow
from winnow.stages.export import ExportParams, export
from winnow.stages.export.evaluate import auroc


def compare(name: str, embedding: np.ndarray, probs: np.ndarray, given: np.ndarray, true: np.ndarray,
            split: np.ndarray, n_classes: int, seed: int = 0) -> list[dict]:
    """Rows of the results table for one scenario (metrics over train rows)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    manifest, features = export_tables(embedding, probs, given, true, split, n_classes)
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


def scenario_rows(sc: Scenario, seed: int) -> list[dict]:
    """Rows of the results table for a :class:`~benchmarks.quality.scenarios.Scenario`."""
    return compare(sc.name, sc.embedding, sc.probs, sc.given, sc.true, sc.split, sc.n_classes, seed)


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
    rows = from_run(args.manifest, args.features) if args.manifest else scenario_rows(digits(args.seed), args.seed)
    if args.cifar and (CIFAR / "train.parquet").exists():
        for sc in cifar(args.seed, args.cifar_rows):
            rows += scenario_rows(sc, args.seed)
    print()
    print_markdown_table(rows, [
        ("scenario", "{scenario}", False), ("method", "{method}", False), ("precision", "{precision:.3f}", True),
        ("recall", "{recall:.3f}", True), ("F1", "{f1:.3f}", True), ("AUROC", "{auroc:.3f}", True),
    ])


if __name__ == "__main__":
    main()
