"""Do the weights find the flipped labels? AUROC of each method's ``weight`` (clean vs flipped)
beside ``loss_mean`` of the same run, through the real CLI with default options.

Scenarios (issue "weight", its table):
- digits: ``winnow ingest digits --inject-noise uniform:0.4 --trusted-per-class 10 --seed S``,
  default ``winnow embed``, then ``winnow weight --method M``; also ``pair:0.4`` (each class
  flipped into the next, structured noise);
- synthetic: 100k x 128 clustered features (benchmarks.synthetic: 10 classes, 5 clusters each,
  centres scaled 1.5, unit noise), 40% uniform, 100 trusted per class; ``ingest --features
  embedding``, ``embed --model features``, ``weight --method M``;
- hard (not in the default list): the same features with the centres scaled 0.15, 20k rows, where
  a linear head underfits (trusted accuracy ~0.5) and the loss tells flipped rows apart far less.

    python -m benchmarks.weight.auroc [--seeds 0 1 2] [--scenarios digits pair synthetic] [--rows 100000]
        [--methods l2rw mwn mwn:--trusted-batch-size,100 ...]

A method may carry extra ``winnow weight`` options after a colon, comma-separated (the table
names the row by the whole spec).

Prints a Markdown table (median over seeds, and each seed's value) and writes JSON to --json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from sklearn.metrics import roc_auc_score

from benchmarks.synthetic import clustered_features, write_table

METHODS = ("l2rw", "mwn", "bilevel", "soseleto")


def winnow(*args: str) -> None:
    """Run one CLI command; raise with its stderr if it fails."""
    proc = subprocess.run([sys.executable, "-m", "winnow.pipeline.cli", *args, "-q"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"winnow {' '.join(args)} failed:\n{proc.stderr}")


def prepare(scenario: str, seed: int, run: Path, rows: int) -> dict[str, int]:
    """Ingest and embed one scenario; return the truth by id (train rows)."""
    if scenario in ("digits", "pair"):
        kind = "uniform" if scenario == "digits" else "pair"
        winnow("ingest", "digits", "--run-dir", str(run), "--inject-noise", f"{kind}:0.4",
               "--trusted-per-class", "10", "--seed", str(seed))
        winnow("embed", "--run-dir", str(run), "--seed", str(seed))
        m = pq.read_table(run / "ingest" / "manifest.parquet", columns=["id", "split", "true_label"]).to_pydict()
        return {i: t for i, s, t in zip(m["id"], m["split"], m["true_label"]) if s == "train"}
    # hard: the centres shrunk 10-fold (20k rows), where a linear head reaches ~0.5 trusted accuracy
    arrays = clustered_features(rows, seed=seed) if scenario == "synthetic" else \
        clustered_features(20_000, seed=seed, scale=0.15)
    table = write_table(arrays, run.parent / f"features-{seed}.parquet")
    winnow("ingest", str(table), "--features", "embedding", "--run-dir", str(run), "--seed", str(seed))
    winnow("embed", "--run-dir", str(run), "--model", "features", "--seed", str(seed))
    train = arrays["split"] == "train"
    return dict(zip(arrays["id"][train].tolist(), arrays["true_label"][train].tolist()))


def measure(run: Path, truth: dict[str, int], spec: str, seed: int) -> dict[str, float]:
    """Run ``winnow weight --method M [options]`` (spec ``M[:OPT,VALUE,...]``) and score its
    columns against the truth."""
    method, _, extra = spec.partition(":")
    t0 = time.perf_counter()
    winnow("weight", "--run-dir", str(run), "--method", method, *[a for a in extra.split(",") if a],
           "--seed", str(seed), "--force")
    seconds = time.perf_counter() - t0
    w = pq.read_table(run / "weight" / "weights.parquet").to_pydict()
    labels = pq.read_table(run / "ingest" / "manifest.parquet", columns=["id", "label"]).to_pydict()
    given = dict(zip(labels["id"], labels["label"]))
    keep = [k for k, i in enumerate(w["id"]) if i in truth and w["weight"][k] is not None]
    clean = np.array([given[w["id"][k]] == truth[w["id"][k]] for k in keep])
    out = {"seconds": seconds}
    for col, sign in (("weight", 1), ("loss_mean", -1)):
        v = sign * np.array([w[col][k] for k in keep], dtype=np.float64)
        out[col] = float(roc_auc_score(clean, v)) if np.ptp(v) > 0 else 0.5
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--scenarios", nargs="+", default=["digits", "pair", "synthetic"])
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in args.scenarios:
            results[scenario] = {m: [] for m in args.methods}
            for seed in args.seeds:
                run = Path(tmp) / f"{scenario}-{seed}" / "run"
                run.parent.mkdir(parents=True)
                truth = prepare(scenario, seed, run, args.rows)
                for method in args.methods:
                    r = measure(run, truth, method, seed)
                    results[scenario][method].append(r)
                    print(f"{scenario} seed {seed} {method}: {json.dumps(r)}", file=sys.stderr, flush=True)
    print("| scenario | method | AUROC `weight` (median; per seed) | AUROC `loss_mean` (median) | "
          "weight - loss_mean (worst seed) | seconds (median) |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for scenario, by_method in results.items():
        for method, runs in by_method.items():
            w = [r["weight"] for r in runs]
            loss = [r["loss_mean"] for r in runs]
            gap = min(a - b for a, b in zip(w, loss))
            print(f"| {scenario} | {method} | {np.median(w):.3f} ({', '.join(f'{v:.3f}' for v in w)}) | "
                  f"{np.median(loss):.3f} | {gap:+.3f} | {np.median([r['seconds'] for r in runs]):.1f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
