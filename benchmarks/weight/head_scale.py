"""Head mode at scale: wall time and peak memory of each method against plain training of the same
head (``--method none``), 1M x 128 features, 10 classes, 5 epochs, default options.

The features (benchmarks.synthetic, 40% uniform noise, 100 trusted per class) are written once to
an .npy file; each method then runs ``run_weight`` in a fresh process that memory-maps them, so
its peak RSS (``ru_maxrss``) is its own. Wall time is ``run_weight`` alone, data loading excluded.

    python -m benchmarks.weight.head_scale [--rows 1000000] [--epochs 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import print_markdown_table

METHODS = ("none", "l2rw", "mwn", "bilevel", "soseleto")


def child(folder: Path, method: str, epochs: int, threads: int) -> None:
    """Run one method on the memory-mapped features and print a JSON line."""
    import torch
    from sklearn.metrics import roc_auc_score

    from winnow.stages.weight.core import run_weight
    from winnow.stages.weight.params import WeightParams

    torch.set_num_threads(threads)
    x = torch.from_numpy(np.load(folder / "x.npy", mmap_mode="r"))
    y = torch.from_numpy(np.load(folder / "y.npy"))
    trusted = np.load(folder / "trusted.npy")
    clean = np.load(folder / "clean.npy")
    tr, ts = torch.from_numpy(np.flatnonzero(~trusted)), torch.from_numpy(np.flatnonzero(trusted))
    train_x, trusted_x = x[tr], x[ts]
    t0 = time.perf_counter()
    r = run_weight(train_x, y[tr], trusted_x, y[ts], WeightParams(method=method, epochs=epochs),
                   num_classes=10, seed=0)
    seconds = time.perf_counter() - t0
    w = r.columns["weight"]
    auc = float(roc_auc_score(clean[~trusted], w)) if np.ptp(w) > 0 else 0.5
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(json.dumps({"method": method, "seconds": seconds, "peak_rss_gib": rss, "auroc": auc}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--child", nargs=2, metavar=("FOLDER", "METHOD"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(Path(args.child[0]), args.child[1], args.epochs, args.threads)
        return
    from benchmarks.synthetic import clustered_features

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = clustered_features(args.rows, seed=0)
        np.save(folder / "x.npy", data["embedding"])
        np.save(folder / "y.npy", data["label"].astype(np.int64))
        np.save(folder / "trusted.npy", data["split"] == "trusted")
        np.save(folder / "clean.npy", data["label"] == data["true_label"])
        del data
        rows = []
        for method in args.methods:
            out = subprocess.run([sys.executable, "-m", "benchmarks.weight.head_scale", "--epochs",
                                  str(args.epochs), "--threads", str(args.threads), "--child", tmp, method],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    base = next((r["seconds"] for r in rows if r["method"] == "none"), float("nan"))
    print(f"{args.rows:,} x 128 features, 10 classes, {args.epochs} epochs, {args.threads} thread(s)\n")
    print_markdown_table(rows, [
        ("method", "{method}", False), ("seconds", "{seconds:.1f}", True),
        ("x `none`", lambda r: f"{r['seconds'] / base:.2f}", True), ("peak RSS (GiB)", "{peak_rss_gib:.2f}", True),
        ("weight AUROC", "{auroc:.3f}", True),
    ])


if __name__ == "__main__":
    main()
