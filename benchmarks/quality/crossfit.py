"""Out-of-sample probs: ``--crossfit head`` vs ``--crossfit backbone``, on the embed stage itself.

    .venv/bin/python -m benchmarks.quality.crossfit                  # digits, --warmup 10 and 30
    .venv/bin/python -m benchmarks.quality.crossfit --warmup 10 20 --seeds 0 1

Digits as ``winnow demo`` ingests them (40% uniform flips, 10 trusted images per class), embedded
by :func:`winnow.stages.embed.run_embed` with its defaults (small CNN warm-up) and each ``--crossfit``
mode. Reported over the train rows: AUROC of ``1 - p(given label)`` as a flipped-label detector,
how often ``argmax(probs)`` equals the flipped label on flipped rows (memorised noise) and the
true label on all rows, the F1 of cleanlab's ``find_label_issues`` and of winnow's export on
those probs, and the stage's seconds. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from benchmarks.common import print_markdown_table
from benchmarks.quality.flags import compare
from winnow.stages.common import schema
from winnow.stages.embed import EmbedParams, run_embed
from winnow.stages.export.evaluate import auroc
from winnow.stages.ingest.core import ingest
from winnow.stages.ingest.params import IngestParams


def rows_for(warmup: int, seed: int) -> list[dict]:
    """One table row per --crossfit mode for digits embedded with ``--warmup warmup``."""
    m = ingest(IngestParams(source="digits", inject_noise="uniform:0.4", trusted_per_class=10), seed=seed).manifest
    given = m["label"].to_numpy().astype(np.int64)
    true = m["true_label"].to_numpy().astype(np.int64)
    split = np.asarray(m["split"].to_pylist())
    train, flipped = split == schema.TRAIN, (given != true) & (split == schema.TRAIN)
    keep = split != schema.TEST
    out = []
    for mode in ("head", "backbone"):
        t = time.perf_counter()
        res = run_embed(m, EmbedParams(warmup=warmup, crossfit=mode), num_classes=10, seed=seed)
        seconds = time.perf_counter() - t
        p = res.probs
        p_given = p[np.arange(len(given)), given]
        flags = {r["method"]: r for r in compare("", res.embedding[keep], p[keep], given[keep], true[keep],
                                                  split[keep], 10, seed)}
        out.append({
            "warmup": warmup, "seed": seed, "mode": mode, "seconds": seconds,
            "auroc": auroc(flipped[train], 1 - p_given[train]),
            "memorised": float((p[flipped].argmax(1) == given[flipped]).mean()),
            "accuracy": float((p[train].argmax(1) == true[train]).mean()),
            "cleanlab_f1": flags["cleanlab"]["f1"], "winnow_f1": flags["winnow"]["f1"],
        })
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warmup", type=int, nargs="+", default=[10, 30], help="warm-up epochs to compare")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = [r for w in args.warmup for s in args.seeds for r in rows_for(w, s)]
    print(f"\ntorch {torch.__version__}, {args.threads} thread(s)\n")
    print_markdown_table(rows, [
        ("warm-up", "{warmup}", True), ("seed", "{seed}", True), ("--crossfit", "{mode}", False),
        ("AUROC 1-p(given)", "{auroc:.4f}", True), ("argmax = flipped label", "{memorised:.3f}", True),
        ("argmax = true label", "{accuracy:.3f}", True), ("cleanlab F1", "{cleanlab_f1:.3f}", True),
        ("winnow F1", "{winnow_f1:.3f}", True), ("embed seconds", "{seconds:.1f}", True),
    ])


if __name__ == "__main__":
    main()
