"""Class imbalance, no label noise: do the meta weights rescue rare classes? Balanced test accuracy
(mean per-class recall, sklearn's ``balanced_accuracy_score``) of ``winnow train`` under each
weighting, through the real CLI with default options.

Scenarios (issue "weight": the seeds' class-imbalance experiments on digits):
- ``4v9``: L2RW's first experiment (Ren et al. 2018, figure 2: MNIST 4 vs 9, rare class at 0.5%)
  on scikit-learn's digits (~180 images a class). Ingest has no class filter, so the benchmark
  writes a Parquet manifest (``id``, ``label`` "4"/"9", ``image`` PNG bytes, ``split``): per
  class ``--test-per-class`` held-out test rows (balanced) and ``--trusted-per-class`` trusted
  rows; the rest of the majority class (9) is training data and the rare class (4) gets
  ``rare_fraction`` of the training rows (5%: 6 of 126).
- ``digits20``: ``winnow ingest digits --imbalance 20 --trusted-per-class 10`` (all ten classes,
  exponential long tail, 132 to 7 training rows a class; ingest's balanced 20% test split).

One ingest + ``winnow embed`` per scenario and seed; then, each arm in a copy of that run:
- ``no weight stage``: ``winnow export`` then ``winnow train``, both with defaults: what winnow
  gives without ``winnow weight`` (rows export flags weigh 0; sampler with weights 1 otherwise);
- ``none``: that export's train.parquet with every row at weight 1 (flags ignored),
  ``winnow train --weighting none`` (plain shuffled training);
- ``proportion``: the same rows with weight ``n / (C * n_c)`` (inverse class frequency over
  train.parquet's rows), ``--weighting loss``;
- ``resample``: those weights with ``--weighting sampler`` (class-balanced in expectation);
- each method M: ``winnow weight --method M``, ``winnow export`` (``--policy weight``, the
  default), ``winnow train`` (``--weighting sampler``, the default). Export drops the meta weights
  from train.parquet when they disagree with the label signal (``--meta-min-agreement``, 0.7);
  ``M, weights kept`` re-exports with ``--meta-min-agreement 0`` and trains again (reported only
  when that changes train.parquet).

The baselines keep every row export writes (train + trusted, export's default ``--include-trusted``)
and ignore its flags; the method arms train on what export writes. ``--no-include-trusted`` passes
that option to every export: the trusted rows then only guide the weights and no arm trains on
them (the papers' setting: L2RW's 10 balanced images are its validation set, not training data).
Balanced accuracy is computed by sklearn from train's saved model on the manifest's test split and
checked against the mean of train's ``per_class_accuracy``.

    python -m benchmarks.weight.imbalance [--seeds 0 1 2] [--scenarios 4v9 digits20] [--threads 1]
                                          [--no-include-trusted] [--json PATH]

Prints Markdown tables (median over seeds, and each seed's value) and writes JSON to --json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from sklearn.datasets import load_digits
from sklearn.metrics import balanced_accuracy_score, recall_score

from winnow.stages.common.arrow import class_names
from winnow.stages.common.images import decode_batch, encode_png
from winnow.stages.train.models import SmallCNN

METHODS = ("l2rw", "mwn", "bilevel", "soseleto")
BASELINES = ("none", "proportion", "resample")
SCENARIOS = ("4v9", "digits20")


def winnow(*args: str, threads: int) -> None:
    """Run one CLI command; raise with its stderr if it fails."""
    cmd = [sys.executable, "-m", "winnow.pipeline.cli", *args, "--threads", str(threads), "-q"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"winnow {' '.join(args)} failed:\n{proc.stderr}")


def manifest_4v9(path: Path, seed: int, *, rare: int, major: int, rare_fraction: float,
                 test_per_class: int, trusted_per_class: int) -> dict[str, int]:
    """Write the 4-vs-9 manifest; return its row counts by split and class."""
    digits = load_digits()
    pixels = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)  # as `ingest digits`
    rng = np.random.default_rng([seed, 49])
    rows: list[tuple[int, str]] = []  # (digits index, split)
    pools = {}
    for c in (rare, major):
        members = rng.permutation(np.flatnonzero(digits.target == c))
        rows += [(i, "test") for i in members[:test_per_class]]
        rows += [(i, "trusted") for i in members[test_per_class:test_per_class + trusted_per_class]]
        pools[c] = members[test_per_class + trusted_per_class:]
    n_rare = max(1, int(round(rare_fraction / (1 - rare_fraction) * len(pools[major]))))
    rows += [(i, "train") for i in pools[major]] + [(i, "train") for i in pools[rare][:n_rare]]
    rows.sort()
    idx = [i for i, _ in rows]
    pq.write_table(pa.table({
        "id": [f"digits-{i:04d}" for i in idx],
        "label": [str(digits.target[i]) for i in idx],
        "image": pa.array([encode_png(pixels[i]) for i in idx], pa.binary()),
        "split": [s for _, s in rows],
    }), path)
    counts: dict[str, int] = {}
    for i, s in rows:
        key = f"{s}_{digits.target[i]}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def prepare(scenario: str, seed: int, run: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Ingest and embed one scenario; return what the rare and majority classes are."""
    t = args.threads
    if scenario == "4v9":
        source = run.parent / "digits-4v9.parquet"
        counts = manifest_4v9(source, seed, rare=args.rare, major=args.major, rare_fraction=args.rare_fraction,
                              test_per_class=args.test_per_class, trusted_per_class=args.trusted_per_class)
        print(f"4v9 seed {seed} rows: {counts}", file=sys.stderr, flush=True)
        winnow("ingest", str(source), "--run-dir", str(run), "--seed", str(seed), threads=t)
        rare, major = str(args.rare), str(args.major)
    else:
        winnow("ingest", "digits", "--run-dir", str(run), "--imbalance", "20", "--trusted-per-class",
               str(args.trusted_per_class), "--seed", str(seed), threads=t)
        rare, major = "9", "0"  # ingest's long tail: class 0 is the head, class C-1 the rarest
    winnow("embed", "--run-dir", str(run), "--seed", str(seed), threads=t)
    return {"rare": rare, "major": major}


def copy_run(base: Path, dest: Path, stages: tuple[str, ...]) -> Path:
    dest.mkdir(parents=True)
    for stage in stages:
        shutil.copytree(base / stage, dest / stage)
    return dest


def classes_of(run: Path) -> list[str]:
    return class_names(pq.read_schema(run / "ingest" / "manifest.parquet"))


def test_scores(run: Path, rare: str) -> dict[str, float]:
    """Balanced accuracy and rare-class recall of train's saved model on the test split (sklearn),
    checked against train's own per-class accuracies."""
    metrics = json.loads((run / "train" / "metrics.json").read_text())
    if metrics["model"] != "cnn":
        raise RuntimeError(f"expected winnow train's CNN, got {metrics['model']}")
    classes = classes_of(run)
    m = pq.read_table(run / "ingest" / "manifest.parquet", columns=["id", "image", "uri", "label", "split", "error"])
    m = m.filter(pc.and_(pc.equal(m["split"], "test"), pc.is_null(m["error"])))
    x = torch.from_numpy(decode_batch(m["image"].to_pylist(), m["uri"].to_pylist()))
    y = np.asarray(m["label"].to_pylist())
    model = SmallCNN(x.shape[1], len(classes))
    model.load_state_dict(torch.load(run / "train" / "model.pt", weights_only=True))
    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(1).numpy()
    bal = float(balanced_accuracy_score(y, pred))
    own = float(np.mean(list(metrics["per_class_accuracy"].values())))
    if abs(bal - own) > 1e-9:
        raise RuntimeError(f"{run}: sklearn balanced accuracy {bal} but train's per-class mean {own}")
    recall = recall_score(y, pred, labels=list(range(len(classes))), average=None)
    return {"balanced_accuracy": bal, "rare_recall": float(recall[classes.index(rare)]),
            "accuracy": float(metrics["test_accuracy"])}


def rewrite_weights(run: Path, kind: str) -> None:
    """Replace the weight column of the run's export/train.parquet: 1, or inverse class frequency."""
    path = run / "export" / "train.parquet"
    table = pq.read_table(path)
    labels = np.asarray(table["label"].to_pylist())
    if kind == "none":
        w = np.ones(len(labels))
    else:
        values, counts = np.unique(labels, return_counts=True)
        freq = dict(zip(values.tolist(), counts.tolist()))
        w = np.array([len(labels) / (len(values) * freq[v]) for v in labels.tolist()])
    i = table.schema.get_field_index("weight")
    table = table.set_column(i, table.schema.field(i), pa.array(w, pa.float32()))
    pq.write_table(table, path)


def export_diagnostics(run: Path, rare: str, major: str) -> dict[str, Any]:
    """What export did to the rare class: flags, whether the meta weights were used, final weights."""
    s = json.loads((run / "export" / "summary.json").read_text())
    by = {c["name"]: c for c in s["classes"]}
    t = pq.read_table(run / "export" / "train.parquet", columns=["label_name", "split", "weight"]).to_pydict()
    def final(name: str) -> float:
        w = [v for n, sp, v in zip(t["label_name"], t["split"], t["weight"]) if n == name and sp == "train"]
        return float(np.mean(w)) if w else float("nan")
    check = s.get("meta_signal_check") or {}
    return {"flagged": int(s["flagged"]), "rare_flagged": int(by[rare]["flagged"]),
            "rare_train_rows": int(by[rare]["train_rows"]), "meta_used": check.get("used"),
            "meta_agreement": check.get("agreement_auroc"),
            "final_weight_rare": final(rare), "final_weight_major": final(major)}


def meta_weights(run: Path, rare: str, major: str) -> dict[str, float]:
    """Mean ``weight`` (weights.parquet, train rows) of the rare and the majority class."""
    w = pq.read_table(run / "weight" / "weights.parquet", columns=["id", "weight"]).to_pydict()
    m = pq.read_table(run / "ingest" / "manifest.parquet", columns=["id", "label_name", "split"]).to_pydict()
    name = {i: (n, s) for i, n, s in zip(m["id"], m["label_name"], m["split"])}
    out = {}
    for key, cls in (("weight_rare", rare), ("weight_major", major)):
        v = [x for i, x in zip(w["id"], w["weight"]) if x is not None and name[i] == (cls, "train")]
        out[key] = float(np.mean(v))
    return out


def train_weights(run: Path) -> np.ndarray:
    return np.asarray(pq.read_table(run / "export" / "train.parquet", columns=["weight"])["weight"].to_pylist())


def run_seed(scenario: str, seed: int, work: Path, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Every arm of one scenario and seed: arm name -> scores and diagnostics."""
    t, s = args.threads, str(seed)
    base = work / "base"
    info = prepare(scenario, seed, base, args)
    rare, major = info["rare"], info["major"]
    out: dict[str, dict[str, Any]] = {}

    def train(run: Path, *extra: str) -> dict[str, Any]:
        t0 = time.perf_counter()
        winnow("train", "--run-dir", str(run), "--seed", s, "--force", *extra, threads=t)
        return {**test_scores(run, rare), "train_seconds": time.perf_counter() - t0}

    ex = ("--no-include-trusted",) if args.no_include_trusted else ()
    plain = copy_run(base, work / "plain", ("ingest", "embed"))
    winnow("export", "--run-dir", str(plain), "--seed", s, *ex, threads=t)
    out["no weight stage"] = {**train(plain), "diag": export_diagnostics(plain, rare, major)}
    print(f"{scenario} seed {seed} no weight stage: {json.dumps(out['no weight stage'])}", file=sys.stderr, flush=True)
    for arm, weighting in zip(BASELINES, ("none", "loss", "sampler")):
        run = copy_run(plain, work / arm, ("ingest", "embed", "export"))
        rewrite_weights(run, arm)
        out[arm] = train(run, "--weighting", weighting)
        print(f"{scenario} seed {seed} {arm}: {json.dumps(out[arm])}", file=sys.stderr, flush=True)
    for method in args.methods:  # a spec M[:OPT,VALUE,...] passes options to winnow weight
        name, _, extra = method.partition(":")
        run = copy_run(base, work / method.replace(":", "_").replace(",", "_"), ("ingest", "embed"))
        t0 = time.perf_counter()
        winnow("weight", "--run-dir", str(run), "--method", name, *[a for a in extra.split(",") if a], "--seed", s,
               threads=t)
        weight_seconds = time.perf_counter() - t0
        winnow("export", "--run-dir", str(run), "--seed", s, *ex, threads=t)
        default = train_weights(run)
        out[method] = {**train(run), "diag": {**export_diagnostics(run, rare, major), **meta_weights(run, rare, major)},
                       "weight_seconds": weight_seconds}
        print(f"{scenario} seed {seed} {method}: {json.dumps(out[method])}", file=sys.stderr, flush=True)
        winnow("export", "--run-dir", str(run), "--seed", s, "--meta-min-agreement", "0", "--force", *ex, threads=t)
        kept = f"{method}, weights kept"
        if np.array_equal(train_weights(run), default):
            out[kept] = {**{k: v for k, v in out[method].items() if k != "diag"}, "same_as_default": True,
                         "diag": {**export_diagnostics(run, rare, major), **meta_weights(run, rare, major)}}
        else:
            out[kept] = {**train(run), "same_as_default": False,
                         "diag": {**export_diagnostics(run, rare, major), **meta_weights(run, rare, major)}}
        print(f"{scenario} seed {seed} {kept}: {json.dumps(out[kept])}", file=sys.stderr, flush=True)
    return out


def fmt(values: list[float], digits: int = 3) -> str:
    return f"{np.median(values):.{digits}f} ({', '.join(f'{v:.{digits}f}' for v in values)})"


def print_tables(results: dict[str, list[dict[str, dict[str, Any]]]]) -> None:
    print("| scenario | arm | balanced test accuracy (median; per seed) | rare-class recall (median; per seed) | "
          "plain test accuracy (median) |")
    print("| --- | --- | --- | --- | ---: |")
    for scenario, seeds in results.items():
        arms = [a for a in seeds[0] if "balanced_accuracy" in seeds[0][a]]
        for arm in arms:
            bal = [r[arm]["balanced_accuracy"] for r in seeds]
            rec = [r[arm]["rare_recall"] for r in seeds]
            acc = [r[arm]["accuracy"] for r in seeds]
            if arm.endswith("weights kept"):
                differ = sum(not r[arm]["same_as_default"] for r in seeds)
                if not differ:
                    continue  # export used the weights in every seed: the same manifest as the default
                arm = f"{arm} ({differ}/{len(seeds)} seeds differ)"
            print(f"| {scenario} | {arm} | {fmt(bal)} | {fmt(rec)} | {np.median(acc):.3f} |")
    print()
    print("| scenario | arm | export used the meta weights (seeds) | agreement AUROC (per seed) | "
          "rows flagged / rare-class rows flagged (per seed) | mean `weight` of the rare / majority class (median) | "
          "train.parquet weight, rare / majority class mean (ratio, median) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for scenario, seeds in results.items():
        for arm in seeds[0]:
            if "diag" not in seeds[0][arm] or arm.endswith("weights kept"):
                continue
            d = [r[arm]["diag"] for r in seeds]
            used = "-" if d[0]["meta_used"] is None else f"{sum(bool(x['meta_used']) for x in d)}/{len(d)}"
            agree = ", ".join("-" if x["meta_agreement"] is None else f"{x['meta_agreement']:.2f}" for x in d)
            flags = ", ".join(f"{x['flagged']}/{x['rare_flagged']} of {x['rare_train_rows']}" for x in d)
            means = (f"{np.median([x['weight_rare'] for x in d]):.2f} / {np.median([x['weight_major'] for x in d]):.2f}"
                     if "weight_rare" in d[0] else "-")
            kept = [r[f"{arm}, weights kept"]["diag"] for r in seeds] if f"{arm}, weights kept" in seeds[0] else d
            final = np.median([x["final_weight_rare"] / x["final_weight_major"] for x in d])
            final_kept = np.median([x["final_weight_rare"] / x["final_weight_major"] for x in kept])
            print(f"| {scenario} | {arm} | {used} | {agree} | {flags} | "
                  f"{means} | "
                  f"{final:.2f}{'' if kept is d else f' (weights kept: {final_kept:.2f})'} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    ap.add_argument("--methods", nargs="+", default=list(METHODS),
                    help="methods, or specs M:OPT,VALUE,... with options for winnow weight")
    ap.add_argument("--threads", type=int, default=1, help="--threads of every winnow command")
    ap.add_argument("--rare", type=int, default=4, help="4v9: the rare class")
    ap.add_argument("--major", type=int, default=9, help="4v9: the majority class")
    ap.add_argument("--rare-fraction", type=float, default=0.05, help="4v9: rare share of the train split")
    ap.add_argument("--test-per-class", type=int, default=50, help="4v9: held-out test rows per class")
    ap.add_argument("--trusted-per-class", type=int, default=10)
    ap.add_argument("--no-include-trusted", action="store_true",
                    help="pass --no-include-trusted to every export: the trusted rows only guide the weights (the "
                         "papers' setting) and no arm trains on them")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    results: dict[str, list[dict[str, dict[str, Any]]]] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in args.scenarios:
            results[scenario] = []
            for seed in args.seeds:
                work = Path(tmp) / f"{scenario}-{seed}"
                work.mkdir()
                results[scenario].append(run_seed(scenario, seed, work, args))
    print(f"{time.perf_counter() - t0:.0f} s in all", file=sys.stderr)
    print_tables(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
