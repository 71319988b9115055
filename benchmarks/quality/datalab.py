"""winnow's audit vs cleanlab's Datalab on planted data issues, same features and probabilities.

    PYTHONPATH=. .venv/bin/python -m benchmarks.quality.datalab                      # digits
    PYTHONPATH=. .venv/bin/python -m benchmarks.quality.datalab --synthetic 10000 100000
    PYTHONPATH=. .venv/bin/python -m benchmarks.quality.datalab --cifar 10000            # + CIFAR-10

Planted into the train rows, with the truth kept: 30 exact copies of train rows, 30 near copies
(each feature + 1% of its spread as Gaussian noise), 30 outliers from another distribution
(digits: CIFAR-10 images from ../shared/data turned into 8x8 grey digits-like arrays when present,
else uniform noise; CIFAR-10: digits images turned into 32x32 RGB CIFAR-like arrays; synthetic:
points far from every cluster) and 10% uniform label flips. CIFAR-10's features are the quality
benchmark's (:func:`benchmarks.quality.scenarios.pixel_pca`: whitened PCA-128 of the pixels, fitted
on the CIFAR rows, the outliers projected with it) on a seeded class-balanced subset of train.parquet.
Both tools see the same features and the same cross-fitted logistic-regression probabilities.

- winnow: :func:`winnow.stages.export.audit.audit` (duplicates, outliers) and the default export
  flags (label issues), with the trusted split the scenario has;
- Datalab: ``Datalab(...).find_issues(features=..., pred_probs=..., issue_types={label, outlier,
  near_duplicate})`` with its defaults (its near_duplicate type covers exact copies too).

Scores per issue type over the train rows: precision, recall, F1. A duplicate row is one of a
planted pair (original or copy); winnow marks a group's later rows (``duplicate_of``) and we count
the row it points to as found too, as Datalab marks every member of a set. Wall time and peak RSS
of each tool's call are measured in a child process each: peak RSS is the child's ``VmHWM``
(``getrusage``'s ``ru_maxrss`` keeps the parent's peak across ``exec`` on Linux, so it read the
parent's, holding every case's arrays, whenever that was larger).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import print_markdown_table
from benchmarks.quality.scenarios import CIFAR, _decode, crossfit_probs, pixel_pca
from benchmarks.synthetic import clustered_features

PLANT = 30
CIFAR_TRUSTED_PER_CLASS = 100  # as scenarios.cifar and the synthetic case


def planted(x: np.ndarray, y: np.ndarray, split: np.ndarray, outliers: np.ndarray, seed: int) -> dict:
    """Append exact copies, near copies and outliers to the train rows; flip 10% of the labels."""
    rng = np.random.default_rng(seed)
    train = np.flatnonzero(split == "train")
    src = rng.choice(train, 2 * PLANT, replace=False)
    exact, near = src[:PLANT], src[PLANT:]
    noise = 0.01 * x[train].std(axis=0) * rng.standard_normal((PLANT, x.shape[1]))
    xs = np.concatenate([x, x[exact], x[near] + noise, outliers[:PLANT]]).astype(np.float32)
    n0 = len(x)
    ys = np.concatenate([y, y[exact], y[near], rng.integers(0, y.max() + 1, PLANT)])
    splits = np.concatenate([split, np.full(3 * PLANT, "train")])
    true = ys.copy()
    flip = (splits == "train") & (rng.random(len(ys)) < 0.1)
    flip[n0 + 2 * PLANT:] = False  # an outlier's label is meaningless: not a label issue
    ys[flip] = (ys[flip] + rng.integers(1, y.max() + 1, flip.sum())) % (y.max() + 1)
    dup = np.zeros(len(ys), bool)
    dup[np.r_[exact, near, np.arange(n0, n0 + 2 * PLANT)]] = True
    out = np.zeros(len(ys), bool)
    out[n0 + 2 * PLANT:] = True
    return {"x": xs, "given": ys, "true": true, "split": splits, "dup": dup, "outlier": out, "flip": flip}


def digits_case(seed: int) -> dict:
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = (d.data / 16.0).astype(np.float32), d.target
    rng = np.random.default_rng(seed)
    split = np.full(len(y), "train", dtype=object)
    for c in range(10):
        split[rng.choice(np.flatnonzero(y == c), 10, replace=False)] = "trusted"
    if (CIFAR / "train.parquet").exists():
        import io

        import pyarrow.parquet as pq
        from PIL import Image

        t = pq.read_table(CIFAR / "train.parquet", columns=["image"]).slice(0, PLANT)
        other = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("L").resize((8, 8)), np.float32).ravel() / 255
                          for b in t["image"].to_pylist()])
    else:
        other = rng.random((PLANT, 64)).astype(np.float32)
    return planted(x, y, split.astype(str), other, seed)


def cifar_case(n: int, seed: int) -> dict:
    """``n`` CIFAR-10 train images (n // 10 per class, seeded), 100 trusted per class drawn as
    :func:`digits_case` draws its own; outliers: digits images as 32x32 RGB through the same PCA."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image
    from sklearn.datasets import load_digits

    table = pq.read_table(CIFAR / "train.parquet", columns=["label", "image"])
    labels = table["label"].to_numpy().astype(np.int64)
    rng = np.random.default_rng(seed)
    per = n // 10
    rows = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), per, replace=False) for c in range(10)]))
    y = labels[rows]
    x, project = pixel_pca(_decode(table["image"].take(pa.array(rows)).to_pylist()), seed)
    split = np.full(len(y), "train", dtype=object)
    for c in range(10):
        split[rng.choice(np.flatnonzero(y == c), CIFAR_TRUSTED_PER_CLASS, replace=False)] = "trusted"
    digits = np.clip(np.rint(load_digits().images[:PLANT] * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    other = np.stack([np.asarray(Image.fromarray(d, "L").resize((32, 32)).convert("RGB"), np.float32).ravel() / 255
                      for d in digits])
    return planted(x, y, split.astype(str), project(other), seed)


def synthetic_case(n: int, seed: int) -> dict:
    a = clustered_features(n, noise=0.0, seed=seed)
    rng = np.random.default_rng(seed + 1)
    far = (rng.standard_normal((PLANT, a["embedding"].shape[1])) * 12).astype(np.float32)
    return planted(a["embedding"], a["true_label"].astype(np.int64), a["split"].astype(str), far, seed)


def run_winnow(case: dict, probs: np.ndarray) -> dict[str, np.ndarray]:
    from benchmarks.quality.scenarios import export_tables
    from winnow.stages.export import ExportParams, export
    from winnow.stages.export.audit import audit

    n_classes = probs.shape[1]
    manifest, features = export_tables(case["x"], probs, case["given"], case["true"], case["split"], n_classes)
    res = export(manifest, features, None, None, ExportParams(audit=False), seed=0)
    label = res.curated["noise_flag"].to_numpy(zero_copy_only=False)
    posterior = np.full((len(probs), n_classes), 1.0 / n_classes)
    a = audit(case["x"], posterior, case["given"], case["split"], np.ones(len(probs), bool),
              [str(c) for c in range(n_classes)], ids=[str(i) for i in range(len(probs))])
    dup = a.duplicate_of >= 0
    dup[a.duplicate_of[dup]] = True
    return {"label": label, "dup": dup, "outlier": a.outlier_flag}


def run_datalab(case: dict, probs: np.ndarray) -> dict[str, np.ndarray]:
    from cleanlab import Datalab

    lab = Datalab(data={"label": case["given"].tolist()}, label_name="label", verbosity=0)
    lab.find_issues(features=case["x"], pred_probs=probs,
                    issue_types={"label": {}, "outlier": {}, "near_duplicate": {}})
    return {"label": lab.get_issues("label")["is_label_issue"].to_numpy(),
            "dup": lab.get_issues("near_duplicate")["is_near_duplicate_issue"].to_numpy(),
            "outlier": lab.get_issues("outlier")["is_outlier_issue"].to_numpy()}


def peak_rss_gib() -> float:
    """This process's peak resident set in GiB: ``VmHWM`` (Linux), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 2**20  # kB
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def child(tool: str, path: str) -> None:
    """Run one tool on a saved case; print its flags, wall seconds and peak RSS as JSON."""
    data = np.load(path, allow_pickle=False)
    case = {k: data[k] for k in data.files if k != "probs"}
    t = time.perf_counter()
    flags = (run_winnow if tool == "winnow" else run_datalab)(case, data["probs"])
    seconds = time.perf_counter() - t
    rss = peak_rss_gib()
    print(json.dumps({"seconds": seconds, "rss_gib": rss, **{k: np.flatnonzero(v).tolist() for k, v in flags.items()}}))


def score(found: np.ndarray, truth: np.ndarray, rows: np.ndarray) -> tuple[float, float, float]:
    f, t = found[rows], truth[rows]
    p = (f & t).sum() / max(f.sum(), 1)
    r = (f & t).sum() / max(t.sum(), 1)
    return float(p), float(r), float(2 * p * r / (p + r)) if p + r else 0.0


def measure(name: str, case: dict, tmp: Path) -> list[dict]:
    n_classes = int(case["true"].max()) + 1
    probs = crossfit_probs(case["x"], case["given"], n_classes, 0)
    path = tmp / f"{name.split()[0]}-{len(probs)}.npz"
    np.savez(path, probs=probs, **{k: np.asarray(v) for k, v in case.items()})
    train = case["split"] == "train"
    rows = []
    for tool in ("winnow", "datalab"):
        out = subprocess.run([sys.executable, "-m", "benchmarks.quality.datalab", "--child", tool, str(path)],
                             capture_output=True, text=True, check=True)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        for issue, truth in (("label", case["flip"]), ("duplicate", case["dup"]), ("outlier", case["outlier"])):
            found = np.zeros(len(probs), bool)
            found[res["label" if issue == "label" else "dup" if issue == "duplicate" else "outlier"]] = True
            p, r, f1 = score(found, truth, train)
            rows.append({"data": name, "rows": len(probs), "tool": tool, "issue": issue, "precision": f"{p:.3f}",
                         "recall": f"{r:.3f}", "F1": f"{f1:.3f}", "seconds": f"{res['seconds']:.1f}",
                         "peak RSS GiB": f"{res['rss_gib']:.2f}"})
        print(f"  {name}: {tool} {res['seconds']:.1f} s", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synthetic", type=int, nargs="*", default=[], help="also synthetic features at these sizes")
    ap.add_argument("--cifar", type=int, metavar="N", help="also N CIFAR-10 train rows (class-balanced, "
                    "seeded) from ../shared/data/cifar10, e.g. 10000")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--tmp", type=Path, default=Path("/tmp/winnow-datalab"))
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.cifar is not None:
        if not (CIFAR / "train.parquet").exists():
            sys.exit(f"--cifar: CIFAR-10 as Parquet not found ({CIFAR / 'train.parquet'} is absent); "
                     "see ../shared/data/cifar10/README.md, or run without --cifar")
        if not 20 * CIFAR_TRUSTED_PER_CLASS <= args.cifar <= 50_000:
            sys.exit(f"--cifar N: N must be in [{20 * CIFAR_TRUSTED_PER_CLASS}, 50000] "
                     f"(N // 10 rows per class, {CIFAR_TRUSTED_PER_CLASS} of them trusted)")
    args.tmp.mkdir(parents=True, exist_ok=True)
    rows = measure("digits (64 pixels)", digits_case(0), args.tmp)
    if args.cifar is not None:
        rows += measure("CIFAR-10 (PCA-128 pixels)", cifar_case(args.cifar, 0), args.tmp)
    for n in args.synthetic:
        rows += measure("synthetic 128-d", synthetic_case(n, 0), args.tmp)
    names = ["data", "rows", "tool", "issue", "precision", "recall", "F1", "seconds", "peak RSS GiB"]
    print_markdown_table(rows, [(c, lambda r, c=c: str(r[c]), c not in ("data", "tool", "issue")) for c in names])


if __name__ == "__main__":
    main()
