"""Seed 004's table at CPU scale: facility location, meta weights and both, on noisy CIFAR-10.

The seed paper (CIFAR-10, 40% noise, ResNet-32, best test accuracy): FL weighted 85.16 > weighted
only 84.18 > FL only 83.64 > full data 83.20. This reproduces its arms through the real CLI with
winnow's defaults (default ``winnow embed``: the small CNN warmed up on the run's labels;
default ``winnow train``: the small CNN on the images, 20 epochs), at a size one CPU thread runs.

Data, per seed S: a class-balanced seeded subset of ``/work/shared/data/cifar10`` (``--train-rows``
noisy rows + 100 trusted rows per class from its train split, ``--test-rows`` test rows from its
test split), written as a Parquet manifest and ingested with ``--trusted-per-class 100
--inject-noise uniform:0.4 --seed S`` (exactly 40% of the train rows get another class). Then
``winnow embed`` and ``winnow select`` (facility location, default budget 0.1 of the train rows),
once per seed; each arm works in a copy of that run. Every command gets ``--seed S --threads N``.

Arms (every one trains on the trusted rows too: export's default ``--include-trusted``):
- ``none``: ``export --policy weight --flag-threshold 2`` without a weight stage (every train row
  and every trusted row, weight 1; checked), ``train --weighting none`` (plain shuffled epochs);
- ``FL only``: ``export --policy coreset`` (the coreset with its CRAIG weights), ``train``;
- ``weighted only (M)``, M in l2rw, mwn, bilevel, soseleto: ``weight --method M``, ``export
  --policy weight --flag-threshold 2`` (above 1 flags nothing, so no weight is zeroed), ``train``;
  the table says whether train.parquet carries M's weights (checked against weights.parquet:
  clipped at 0, scaled to median 1) and what export's ``--meta-min-agreement`` check decided;
- ``FL weighted (M)`` for M in ``--fl-methods``: ``export --policy coreset+weight
  --flag-threshold 2`` (CRAIG weight x M's weight), ``train``;
- ``drop-flagged``: ``export --policy drop-flagged`` (default flags; no weight stage, so the flags
  come from the label signal alone), ``train``;
- ``winnow default``: ``weight``, ``export``, ``train``, all with default options (l2rw; flagged rows
  weigh 0);
- ``clean-label oracle``: every train and trusted row with its true label
  (``benchmarks.quality.headroom``'s ``clean`` arm), winnow train's model and default parameters
  with ``weighting none`` as in ``none`` (so the two differ only in the labels), in this process.
``train`` uses its default ``--weighting sampler`` (rows drawn in proportion to weight) unless said.

Per arm: final and best test accuracy (the paper reports the best), the rows train.parquet holds,
the rows that can be drawn (weight > 0), the flipped rows among them, the share of the weight mass
on flipped and on trusted rows, and the SGD steps (epochs x ceil(rows / batch)).

    .venv/bin/python -m benchmarks.weight.seed004 [--seeds 0 1 2] [--train-rows 2500] [--test-rows 2000]
        [--fl-methods l2rw mwn bilevel soseleto] [--train-epochs 0] [--threads 1] [--work /tmp/seed004] [--json PATH]

Prints Markdown tables (each seed's value, mean and median) and writes JSON to --json (after every
seed; ``--resume`` skips the seeds that JSON already holds).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.metrics import roc_auc_score

from benchmarks.common import print_markdown_table

CIFAR = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10"
NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
METHODS = ("l2rw", "mwn", "bilevel", "soseleto")
TRUSTED_PER_CLASS = 100
NO_FLAGS = ("--flag-threshold", "2")  # noise_score is in [0, 1]: a threshold above 1 flags nothing
PAPER = {"none": 83.20, "FL only": 83.64, "weighted only": 84.18, "FL weighted": 85.16}


def winnow(*args: str, threads: int) -> float:
    """Run one CLI command; return its wall time, raise with its stderr if it fails."""
    cmd = [sys.executable, "-m", "winnow.pipeline.cli", *args, "--threads", str(threads), "-q"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"winnow {' '.join(args)} failed:\n{proc.stderr}")
    return time.perf_counter() - t0


def write_source(path: Path, seed: int, *, train_rows: int, test_rows: int) -> None:
    """A class-balanced seeded subset of CIFAR-10 as a manifest (id, label name, image, split)."""
    rng = np.random.default_rng([seed, 4])

    def subset(table: pa.Table, per_class: int, split: str) -> pa.Table:
        y = table["label"].to_numpy()
        idx = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False)
                                      for c in range(len(NAMES))]))
        t = table.take(pa.array(idx))
        return pa.table({"id": [f"{split}-{i}" for i in t["id"].to_pylist()],
                         "label": [NAMES[v] for v in t["label"].to_pylist()],
                         "image": t["image"].combine_chunks(), "split": [split] * t.num_rows})

    train = subset(pq.read_table(CIFAR / "train.parquet"), train_rows // len(NAMES) + TRUSTED_PER_CLASS, "train")
    test = subset(pq.read_table(CIFAR / "test.parquet"), test_rows // len(NAMES), "test")
    pq.write_table(pa.concat_tables([train, test]), path)


def copy_run(base: Path, dest: Path, stages: tuple[str, ...]) -> Path:
    dest.mkdir(parents=True)
    for stage in stages:
        shutil.copytree(base / stage, dest / stage)
    return dest


def truth(run: Path) -> tuple[dict[str, bool], set[str]]:
    """id -> whether the row's given label is wrong (train and trusted rows), and the train rows' ids."""
    m = pq.read_table(run / "ingest" / "manifest.parquet", columns=["id", "label", "true_label", "split"]).to_pydict()
    rows = list(zip(m["id"], m["label"], m["true_label"], m["split"]))
    return {i: g != t for i, g, t, s in rows if s != "test"}, {i for i, _, _, s in rows if s == "train"}


def train_set(table: pa.Table, flipped: dict[str, bool], weighting: str) -> dict[str, Any]:
    """What a training table holds: rows, rows that can be drawn, flipped ones, weight mass shares."""
    ids = table["id"].to_pylist()
    w = np.asarray(table["weight"].to_pylist(), dtype=np.float64)
    if weighting == "none":
        w = np.ones(len(ids))  # ignored by train: every row once per epoch
    flip = np.array([flipped[i] for i in ids])
    trusted = np.asarray(table["split"].to_pylist()) == "trusted"
    return {"rows": len(ids), "drawn": int((w > 0).sum()), "trusted_drawn": int((trusted & (w > 0)).sum()),
            "flipped_drawn": int((flip & (w > 0)).sum()), "mass_flipped": float(w[flip].sum() / w.sum()),
            "mass_trusted": float(w[trusted].sum() / w.sum())}


def export_train(run: Path) -> pa.Table:
    return pq.read_table(run / "export" / "train.parquet", columns=["id", "split", "label", "weight"])


def summary(run: Path) -> dict[str, Any]:
    return json.loads((run / "export" / "summary.json").read_text())


def flag_quality(run: Path, flipped: dict[str, bool]) -> dict[str, Any]:
    """Export's flags on the train rows against the truth."""
    c = pq.read_table(run / "export" / "curated.parquet", columns=["id", "split", "noise_flag"]).to_pydict()
    rows = [(f, flipped[i]) for i, s, f in zip(c["id"], c["split"], c["noise_flag"]) if s == "train"]
    flag = np.array([f for f, _ in rows], bool)
    wrong = np.array([w for _, w in rows], bool)
    tp = int((flag & wrong).sum())
    return {"flagged": int(flag.sum()), "precision": tp / max(int(flag.sum()), 1), "recall": tp / max(int(wrong.sum()), 1)}


def meta_auroc(run: Path, flipped: dict[str, bool], train_ids: set[str]) -> float:
    """AUROC of weights.parquet's ``weight`` for telling clean train rows from flipped ones."""
    w = pq.read_table(run / "weight" / "weights.parquet", columns=["id", "weight"]).to_pydict()
    rows = [(x, not flipped[i]) for i, x in zip(w["id"], w["weight"])
            if i in train_ids and x is not None and np.isfinite(x)]
    return float(roc_auc_score([c for _, c in rows], [x for x, _ in rows]))


def weights_used(run: Path, *, coreset: bool) -> bool:
    """Whether train.parquet's train rows carry the method's weights (times the CRAIG weight with
    ``coreset``) as export writes them: clipped at 0, flagged rows 0, scaled so that the median
    positive unflagged one is 1."""
    t = export_train(run).to_pydict()
    train = [i for i, s in zip(t["id"], t["split"]) if s == "train"]
    w = pq.read_table(run / "weight" / "weights.parquet", columns=["id", "weight"]).to_pydict()
    meta = dict(zip(w["id"], w["weight"]))
    c = pq.read_table(run / "export" / "curated.parquet", columns=["id", "noise_flag"]).to_pydict()
    flagged = np.array([dict(zip(c["id"], c["noise_flag"]))[i] for i in train], bool)
    raw = np.array([np.nan if meta[i] is None else meta[i] for i in train], dtype=np.float64)
    if coreset:
        cs = pq.read_table(run / "select" / "coreset.parquet", columns=["id", "coreset_weight"]).to_pydict()
        cw = dict(zip(cs["id"], cs["coreset_weight"]))
        raw = raw * np.array([cw[i] for i in train])
    raw = np.clip(raw, 0, None)
    expected = np.where(np.isfinite(raw), raw / np.median(raw[(raw > 0) & ~flagged]), 1.0)
    expected[flagged] = 0.0
    actual = np.array([x for x, s in zip(t["weight"], t["split"]) if s == "train"])
    unflagged = actual[~flagged]
    return bool(np.allclose(actual, expected, rtol=1e-4, atol=1e-6)) and not np.allclose(unflagged, unflagged[0])


def train_metrics(run: Path) -> dict[str, Any]:
    m = json.loads((run / "train" / "metrics.json").read_text())
    return {"test_accuracy": m["test_accuracy"], "best_test_accuracy": m["best_test_accuracy"],
            "num_train": m["num_train"], "epochs": len(m["epochs"])}


def oracle(base: Path, seed: int, threads: int, epochs: int) -> dict[str, Any]:
    """headroom's ``clean`` arm with winnow train's default model and schedule, weighting none."""
    from benchmarks.quality.headroom import arm_table
    from winnow.pipeline.rundir import RunDir
    from winnow.pipeline.steps import class_names, load_manifest, test_table
    from winnow.stages.common.threads import cpu_threads
    from winnow.stages.train.core import train_model
    from winnow.stages.train.params import TrainParams

    run = RunDir(str(base))
    table, wrong = arm_table(run, "clean")
    params = TrainParams(weighting="none", **({"epochs": epochs} if epochs else {}))
    with cpu_threads(threads):
        m = train_model(table, test_table(run), params, num_classes=len(class_names(load_manifest(run))),
                        seed=seed, device="cpu").metrics
    trusted = np.asarray(table["split"].to_pylist()) == "trusted"
    return {"test_accuracy": m["test_accuracy"], "best_test_accuracy": m["best_test_accuracy"],
            "num_train": m["num_train"], "epochs": len(m["epochs"]),
            "set": {"rows": table.num_rows, "drawn": table.num_rows, "trusted_drawn": int(trusted.sum()),
                    "flipped_drawn": wrong, "mass_flipped": wrong / table.num_rows,
                    "mass_trusted": float(trusted.mean())}}


def run_seed(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Every arm of one seed: arm name -> scores and diagnostics, plus the seed's timings."""
    t, s = args.threads, str(seed)
    epochs = ("--epochs", str(args.train_epochs)) if args.train_epochs else ()
    work = args.work / f"seed{seed}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    times: dict[str, float] = {}
    source = work / "source.parquet"
    write_source(source, seed, train_rows=args.train_rows, test_rows=args.test_rows)
    base = work / "base"
    times["ingest"] = winnow("ingest", str(source), "--run-dir", str(base), "--seed", s, "--trusted-per-class",
                             str(TRUSTED_PER_CLASS), "--inject-noise", "uniform:0.4", threads=t)
    times["embed"] = winnow("embed", "--run-dir", str(base), "--seed", s, threads=t)
    times["select"] = winnow("select", "--run-dir", str(base), "--seed", s, threads=t)
    flipped, train_ids = truth(base)
    selected = pq.read_table(base / "select" / "coreset.parquet", columns=["selected"])["selected"].to_pylist()
    arms: dict[str, dict[str, Any]] = {}
    info: dict[str, Any] = {"coreset_rows": int(sum(bool(x) for x in selected)), "times": times,
                            "flipped_train_rows": int(sum(flipped[i] for i in train_ids)), "train_rows": len(train_ids)}

    def arm(name: str, run: Path, export: tuple[str, ...], weighting: str = "sampler",
            verify: Any = None, post: Any = None, **extra: Any) -> None:
        """Export with ``export`` options, train, record; ``verify(train table)`` may refuse the export
        and ``post(run)`` adds entries read from the export (flags, weights used)."""
        t0 = time.perf_counter()
        winnow("export", "--run-dir", str(run), "--seed", s, "--force", *export, threads=t)
        table = export_train(run)
        if verify is not None:
            verify(table)
        if post is not None:
            extra = {**extra, **post(run)}
        winnow("train", "--run-dir", str(run), "--seed", s, "--force", "--weighting", weighting, *epochs, threads=t)
        times[name] = time.perf_counter() - t0
        arms[name] = {**train_metrics(run), "set": train_set(table, flipped, weighting),
                      "meta_check": summary(run).get("meta_signal_check"), **extra}
        print(f"seed {seed} {name}: {json.dumps(arms[name])} ({times[name]:.0f} s)", file=sys.stderr, flush=True)

    stages = ("ingest", "embed", "select")
    def every_row_weight_1(table: pa.Table) -> None:
        w = np.asarray(table["weight"].to_pylist())
        if not (np.all(w == 1.0) and sorted(table["id"].to_pylist()) == sorted(flipped)):
            raise RuntimeError(f"none: train.parquet has {table.num_rows} rows (want every train and trusted row, "
                               f"{len(flipped)}) and weights {np.unique(w)} (want 1)")

    arm("none", copy_run(base, work / "none", stages), ("--policy", "weight", *NO_FLAGS), weighting="none",
        verify=every_row_weight_1)
    arm("FL only", copy_run(base, work / "fl", stages), ("--policy", "coreset"))
    run = copy_run(base, work / "drop", stages)
    arm("drop-flagged", run, ("--policy", "drop-flagged"), post=lambda r: {"flags": flag_quality(r, flipped)})
    run = copy_run(base, work / "default", stages)
    times["weight default"] = winnow("weight", "--run-dir", str(run), "--seed", s, threads=t)
    arm("winnow default", run, (), post=lambda r: {"flags": flag_quality(r, flipped),
                                                   "weights_used": weights_used(r, coreset=False)})
    for method in args.methods:
        run = copy_run(base, work / method, stages)
        times[f"weight {method}"] = winnow("weight", "--run-dir", str(run), "--seed", s, "--method", method, threads=t)
        # export's default flags and meta check on these weights, for the record (not trained on)
        winnow("export", "--run-dir", str(run), "--seed", s, threads=t)
        default = {"flags": flag_quality(run, flipped), "meta_check": summary(run).get("meta_signal_check")}
        auroc = meta_auroc(run, flipped, train_ids)
        arm(f"weighted only ({method})", run, ("--policy", "weight", *NO_FLAGS), default_export=default,
            weight_auroc=auroc, post=lambda r: {"weights_used": weights_used(r, coreset=False)})
        if method in args.fl_methods:
            fl = copy_run(run, work / f"fl-{method}", (*stages, "weight"))
            arm(f"FL weighted ({method})", fl, ("--policy", "coreset+weight", *NO_FLAGS), weight_auroc=auroc,
                post=lambda r: {"weights_used": weights_used(r, coreset=True)})
    t0 = time.perf_counter()
    arms["clean-label oracle"] = oracle(base, seed, t, args.train_epochs)
    times["clean-label oracle"] = time.perf_counter() - t0
    print(f"seed {seed} clean-label oracle: {json.dumps(arms['clean-label oracle'])}", file=sys.stderr, flush=True)
    return {"arms": arms, **info}


def cells(values: list[float], scale: float = 100.0, digits: int = 2) -> dict[str, str]:
    v = [x * scale for x in values]
    return {"per_seed": ", ".join(f"{x:.{digits}f}" for x in v), "mean": f"{np.mean(v):.{digits}f}",
            "median": f"{np.median(v):.{digits}f}"}


def paper(arm: str) -> str:
    key = arm.split(" (")[0]
    return f"{PAPER[key]:.2f}" if key in PAPER else "-"


def print_tables(results: dict[str, dict[str, Any]]) -> None:
    seeds = list(results.values())
    names = list(seeds[0]["arms"])
    rows = []
    for name in names:
        acc = cells([r["arms"][name]["test_accuracy"] for r in seeds])
        best = cells([r["arms"][name]["best_test_accuracy"] for r in seeds])
        rows.append({"arm": name, "acc": acc, "best": best, "paper": paper(name)})
    print_markdown_table(rows, [
        ("arm", "{arm}", False),
        ("final test acc % (per seed)", lambda r: r["acc"]["per_seed"], True),
        ("mean", lambda r: r["acc"]["mean"], True),
        ("median", lambda r: r["acc"]["median"], True),
        ("best-epoch test acc % (per seed)", lambda r: r["best"]["per_seed"], True),
        ("best: mean", lambda r: r["best"]["mean"], True),
        ("paper (best acc, ResNet-32, 50k rows)", "{paper}", True),
    ])
    print()
    rows = []
    for name in names:
        a = [r["arms"][name] for r in seeds]
        sets = [x["set"] for x in a]

        def med(key: str, sets: list[dict[str, Any]] = sets) -> float:
            return float(np.median([x[key] for x in sets]))

        used = [x.get("weights_used") for x in a]
        steps = [x["epochs"] * math.ceil(x["num_train"] / 128) for x in a]
        rows.append({
            "arm": name, "rows": f"{med('rows'):.0f}", "drawn": f"{med('drawn'):.0f}",
            "trusted": f"{med('trusted_drawn'):.0f}", "flipped": ", ".join(str(x["flipped_drawn"]) for x in sets),
            "mflip": ", ".join(f"{x['mass_flipped']:.3f}" for x in sets),
            "mtrust": f"{med('mass_trusted'):.3f}", "steps": f"{np.median(steps):.0f}",
            "used": "-" if used[0] is None else f"{sum(bool(u) for u in used)}/{len(used)}",
            "auroc": "-" if "weight_auroc" not in a[0] else ", ".join(f"{x['weight_auroc']:.3f}" for x in a),
        })
    print_markdown_table(rows, [
        ("arm", "{arm}", False), ("rows in train.parquet (median)", "{rows}", True),
        ("rows drawn, weight > 0 (median)", "{drawn}", True), ("trusted rows drawn", "{trusted}", True),
        ("flipped rows drawn (per seed)", "{flipped}", True),
        ("weight mass on flipped rows (per seed)", "{mflip}", True),
        ("weight mass on trusted rows (median)", "{mtrust}", True), ("SGD steps (median)", "{steps}", True),
        ("train.parquet carries the method's weights (seeds)", "{used}", True),
        ("weight AUROC clean vs flipped (per seed)", "{auroc}", True),
    ])
    print()
    rows = []
    for name in names:
        a = [r["arms"][name] for r in seeds]
        for label, key in (("this arm's export", "flags"), ("default export of these weights", "default_export")):
            if key not in a[0]:
                continue
            fl = [x[key]["flags"] if key == "default_export" else x[key] for x in a]
            checks = [(x[key].get("meta_check") if key == "default_export" else x.get("meta_check")) for x in a]
            rows.append({
                "arm": name, "which": label, "flagged": ", ".join(str(f["flagged"]) for f in fl),
                "prec": f"{np.median([f['precision'] for f in fl]):.3f}",
                "rec": f"{np.median([f['recall'] for f in fl]):.3f}",
                "check": ", ".join("-" if not c else (f"{'used' if c['used'] else 'DROPPED'} "
                                                      f"({'-' if c['agreement_auroc'] is None else round(c['agreement_auroc'], 2)})")
                                   for c in checks),
            })
    print_markdown_table(rows, [
        ("arm", "{arm}", False), ("export", "{which}", False), ("rows flagged (per seed)", "{flagged}", True),
        ("flag precision (median)", "{prec}", True), ("recall (median)", "{rec}", True),
        ("meta check: weights used (agreement AUROC), per seed", "{check}", False),
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--train-rows", type=int, default=2500, help="noisy train rows (a multiple of 10)")
    ap.add_argument("--test-rows", type=int, default=2000, help="test rows from CIFAR-10 test (a multiple of 10)")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="weighted only arms")
    ap.add_argument("--fl-methods", nargs="+", default=list(METHODS), choices=METHODS, help="FL weighted arms")
    ap.add_argument("--train-epochs", type=int, default=0,
                    help="--epochs of every winnow train (0: its default, 20); for a quick check of the script")
    ap.add_argument("--threads", type=int, default=1, help="--threads of every winnow command")
    ap.add_argument("--work", type=Path, default=Path("/tmp/seed004"), help="run directories go under it")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--resume", action="store_true", help="keep the seeds --json already holds")
    args = ap.parse_args()
    if not (CIFAR / "train.parquet").is_file():
        sys.exit(f"{CIFAR}/train.parquet not found")
    results: dict[str, dict[str, Any]] = {}
    if args.resume and args.json and args.json.exists():
        results = json.loads(args.json.read_text())
    t0 = time.perf_counter()
    for seed in args.seeds:
        if str(seed) in results:
            continue
        t1 = time.perf_counter()
        results[str(seed)] = run_seed(seed, args)
        results[str(seed)]["seconds"] = time.perf_counter() - t1
        print(f"seed {seed}: {results[str(seed)]['seconds']:.0f} s", file=sys.stderr, flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    print(f"{time.perf_counter() - t0:.0f} s in all", file=sys.stderr)
    first = next(iter(results.values()))
    print(f"CIFAR-10, {args.train_rows} noisy train rows (40% uniform) + {10 * TRUSTED_PER_CLASS} trusted, "
          f"{args.test_rows} test rows; coreset {first['coreset_rows']} rows; seeds {', '.join(results)}\n")
    print_tables(results)


if __name__ == "__main__":
    main()
