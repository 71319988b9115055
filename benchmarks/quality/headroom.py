"""How much a perfect curator would gain: oracle training sets on a finished run with injected noise.

    .venv/bin/python -m benchmarks.quality.headroom RUN_DIR [--arms oracle-drop,clean] [--seeds 0]

On a run directory whose ingest used ``--inject-noise`` (so the manifest has ``true_label``) and
whose export has finished, trains ``winnow train``'s model with the run's own train parameters
(its ``train`` record, else the defaults) on each arm, and evaluates on the run's test split:

- ``noisy``: every train and trusted row with its given label (evaluate's baseline);
- ``winnow``: export's ``train.parquet`` as it is;
- ``relabel``: every train and trusted row, flagged rows carrying ``suggested_label``;
- ``oracle-drop``: the rows whose given label is right (a flagger with precision and recall 1);
- ``clean``: every train and trusted row with its true label (the ceiling).

Prints a markdown table: arm, rows, wrong labels among them, final and best test accuracy.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import pyarrow as pa

from winnow.pipeline.artifacts import read_table
from winnow.pipeline.rundir import RunDir
from winnow.pipeline.steps import (
    class_names,
    load_curated,
    load_manifest,
    test_table,
    with_feature_column,
)
from winnow.stages.common import schema
from winnow.stages.common.rows import split_array, usable_mask
from winnow.stages.train.core import train_model
from winnow.stages.train.params import TrainParams

ARMS = ("noisy", "winnow", "relabel", "oracle-drop", "clean")


def arm_table(run: RunDir, arm: str) -> tuple[pa.Table, int]:
    """The training table of ``arm`` and how many of its drawable rows carry a wrong label."""
    manifest = load_manifest(run)
    if "true_label" not in manifest.column_names:
        raise SystemExit(f"{run.root}: the manifest has no true_label column (ingest with --inject-noise)")
    if arm == "winnow":
        table = read_table(run.path("export", schema.TRAIN_MANIFEST))
        truth = dict(zip(manifest["id"].to_pylist(), manifest["true_label"].to_pylist()))
        drawn = table["weight"].to_numpy() > 0
        wrong = np.array([truth[i] != lab for i, lab in zip(table["id"].to_pylist(), table["label"].to_pylist())])
        return table, int((wrong & drawn).sum())
    table = manifest.filter(pa.array(usable_mask(manifest) & np.isin(split_array(manifest), [schema.TRAIN, schema.TRUSTED])))
    given = table["label"].to_numpy().astype(np.int64)
    true = table["true_label"].to_numpy().astype(np.int64)
    labels, keep = given, np.ones(len(given), bool)
    if arm == "relabel":
        curated = load_curated(run)
        flags = curated.filter(curated["noise_flag"])
        suggested = dict(zip(flags["id"].to_pylist(), flags["suggested_label"].to_pylist()))
        labels = np.array([suggested.get(i, g) for i, g in zip(table["id"].to_pylist(), given)], np.int64)
    elif arm == "oracle-drop":
        keep = given == true
    elif arm == "clean":
        labels = true
    elif arm != "noisy":
        raise SystemExit(f"unknown arm {arm!r}; choose from {', '.join(ARMS)}")
    table = table.set_column(table.column_names.index("label"), "label", pa.array(labels, pa.int32()))
    table = table.filter(pa.array(keep))
    table = table.append_column("weight", pa.array(np.ones(table.num_rows, np.float32)))
    return table, int((labels[keep] != true[keep]).sum())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--arms", default="oracle-drop,clean", help=f"comma-separated, from {', '.join(ARMS)}")
    ap.add_argument("--seeds", default="0", help="comma-separated training seeds")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                    help="override a train parameter, e.g. features=embedding or epochs=40 (repeatable)")
    args = ap.parse_args()
    run = RunDir(args.run_dir)
    record = run.record("train")
    params = TrainParams(**record["params"]) if record else TrainParams()
    for item in args.param:
        key, _, value = item.partition("=")
        params = replace(params, **{key: type(getattr(params, key))(value)})
    test = with_feature_column(run, test_table(run), params.features, what="test manifest")
    n_classes = len(class_names(load_manifest(run)))
    print(f"run {args.run_dir}: {params.model} model, {params.epochs} epochs, features {params.features or 'images'!r}\n")
    print("| arm | rows drawn | wrong labels | seed | test acc final | best | minutes |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for arm in args.arms.split(","):
        table, wrong = arm_table(run, arm)
        table = with_feature_column(run, table, params.features, what=f"{arm} table")
        drawn = int((table["weight"].to_numpy() > 0).sum())
        for seed in (int(s) for s in args.seeds.split(",")):
            t0 = time.perf_counter()
            m = train_model(table, test, params, num_classes=n_classes, seed=seed, device=args.device).metrics
            print(f"| {arm} | {drawn} | {wrong} | {seed} | {m['test_accuracy']:.3f} | {m['best_test_accuracy']:.3f} "
                  f"| {(time.perf_counter() - t0) / 60:.1f} |", flush=True)


if __name__ == "__main__":
    main()
