"""Downstream test accuracy: training on winnow's manifest vs cleanlab-filtered vs noisy vs clean labels.

    .venv/bin/python -m benchmarks.quality.downstream                 # digits only
    .venv/bin/python -m benchmarks.quality.downstream --cifar         # + the three CIFAR-10 scenarios

Per scenario (:mod:`benchmarks.quality.scenarios`, the same data, embeddings and cross-fitted
probabilities as ``flags.py``), the SAME model, schedule and seed is trained by
``winnow.stages.train.core.train_model`` on five training sets, each holding the train AND trusted rows
(the trusted rows are clean and every method may use them):

- winnow: ``winnow.stages.export.export`` with default parameters -> ``result.train`` and its final
  ``weight`` (flagged rows weigh 0; no meta weights in this benchmark, so the others weigh 1),
  used by the trainer's default weighted sampler;
- winnow soft: the same with ``--policy soft`` (every row weighted by 1 - noise_score);
- cleanlab: train rows not in ``cleanlab.filter.find_label_issues(given, probs)`` (defaults), weight 1;
- noisy: every row with its given label, weight 1;
- clean: every row with its true label, weight 1 (the ceiling).

Models: an MLP on the embeddings (``TrainParams(features="embedding")``, fast on a CPU) for every
scenario, and for digits also the built-in small CNN on the 8x8 images. Test sets are clean:
digits = a stratified 20% held out before anything else; CIFAR-10 = ``test.parquet`` (10,000
balanced images) projected with the PCA fitted on the train images. ``final`` is the accuracy
after the last epoch; ``best`` is the best epoch's (chosen on the test set, so optimistic).
Several training seeds give mean +- std (the data and noise use the fixed ``--data-seed``).
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import pyarrow as pa
import torch

from benchmarks.common import print_markdown_table
from benchmarks.quality.scenarios import CIFAR, Scenario, cifar, digits, export_tables
from winnow.stages.common import schema
from winnow.stages.common.arrow import vectors_to_arrow, with_metadata
from winnow.stages.common.images import encode_png
from winnow.stages.export import ExportParams, export
from winnow.stages.train.core import train_model
from winnow.stages.train.params import TrainParams

ARMS = ("winnow", "winnow soft", "cleanlab", "noisy", "clean")


def _table(rows: np.ndarray, labels: np.ndarray, weight: np.ndarray, split: np.ndarray,
           embedding: np.ndarray, images: list[bytes] | None, n_classes: int) -> pa.Table:
    """A training/test manifest over ``rows`` (indices into the scenario) with an embedding column."""
    cols = {
        "id": pa.array([str(i) for i in rows]),
        "label": pa.array(labels, pa.int32()),
        "split": pa.array(split),
        "weight": pa.array(weight, pa.float32()),
        "embedding": vectors_to_arrow(np.ascontiguousarray(embedding, np.float32)),
    }
    if images is not None:
        cols["image"] = pa.array(images, pa.binary())
    return with_metadata(pa.table(cols), classes=[str(c) for c in range(n_classes)])


def training_sets(sc: Scenario, seed: int) -> tuple[dict[str, pa.Table], pa.Table, dict]:
    """The five training manifests, the clean test manifest, and facts about each training set.

    Facts per arm: ``rows`` with weight > 0 and ``label_noise``, the fraction of those rows whose
    training label differs from the truth.
    """
    from cleanlab.filter import find_label_issues

    if sc.test_labels is None or sc.test_embedding is None:
        raise ValueError(f"scenario {sc.name!r} has no test split; build it with a holdout / with_test")
    n = len(sc.given)
    pngs = [encode_png(a) for a in sc.images] if sc.images is not None else None
    train = sc.split == schema.TRAIN
    everything = np.arange(n)

    manifest, features = export_tables(sc.embedding, sc.probs, sc.given, sc.true, sc.split, sc.n_classes)
    winnow = {}
    for arm, policy in (("winnow", "weight"), ("winnow soft", "soft")):
        res = export(manifest, features, None, None, ExportParams(policy=policy), seed=seed)
        rows = np.asarray([int(i) for i in res.train["id"].to_pylist()])
        winnow[arm] = (rows, sc.given[rows], res.train["weight"].to_numpy().astype(np.float64))

    issues = np.zeros(n, dtype=bool)
    issues[train] = find_label_issues(sc.given[train], sc.probs[train])
    c_rows = np.flatnonzero(~issues)

    picks = {
        **winnow,
        "cleanlab": (c_rows, sc.given[c_rows], np.ones(len(c_rows))),
        "noisy": (everything, sc.given, np.ones(n)),
        "clean": (everything, sc.true, np.ones(n)),
    }
    tables, facts = {}, {}
    for arm, (rows, labels, weight) in picks.items():
        imgs = [pngs[i] for i in rows] if pngs is not None else None
        tables[arm] = _table(rows, labels, weight, sc.split[rows], sc.embedding[rows], imgs, sc.n_classes)
        used = weight > 0
        facts[arm] = {"rows": int(used.sum()), "label_noise": float((labels != sc.true[rows])[used].mean())}
    m = len(sc.test_labels)
    test_pngs = [encode_png(a) for a in sc.test_images] if sc.test_images is not None else None
    test = _table(np.arange(m), sc.test_labels, np.ones(m), np.full(m, schema.TEST), sc.test_embedding,
                  test_pngs, sc.n_classes)
    return tables, test, facts


def run(sc: Scenario, models: dict[str, TrainParams], seeds: list[int], data_seed: int) -> list[dict]:
    """Rows of the results table for one scenario: every model x arm, accuracies over ``seeds``."""
    tables, test, facts = training_sets(sc, data_seed)
    out = []
    for model, params in models.items():
        for arm in ARMS:
            final, best, secs = [], [], 0.0
            for seed in seeds:
                t = time.perf_counter()
                m = train_model(tables[arm], test, params, num_classes=sc.n_classes, seed=seed).metrics
                secs += time.perf_counter() - t
                final.append(m["test_accuracy"])
                best.append(m["best_test_accuracy"])
            row = {"scenario": sc.name, "model": model, "arm": arm, **facts[arm], "final": np.array(final),
                   "best": np.array(best), "seconds": secs}
            out.append(row)
            print(f"  {sc.name} | {model} | {arm}: final {_pm(row['final'])}, best {_pm(row['best'])} "
                  f"({secs:.1f} s)", flush=True)
    return out


def _pm(a: np.ndarray) -> str:
    return f"{a.mean():.3f} ± {a.std(ddof=1):.3f}" if len(a) > 1 else f"{a.mean():.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cifar", action="store_true", help="also run the CIFAR-10 scenarios")
    ap.add_argument("--cifar-rows", type=int, default=20000, help="CIFAR-10 train images to use")
    ap.add_argument("--data-seed", type=int, default=0, help="seed of the data split and the noise")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    ap.add_argument("--epochs", type=int, default=20, help="epochs of every training run")
    ap.add_argument("--no-cnn", action="store_true", help="skip the small CNN on the digits images")
    args = ap.parse_args()

    torch.set_num_threads(1)  # fastest for these small models on a shared CPU
    mlp = TrainParams(features="embedding", model="mlp", epochs=args.epochs)
    digit_models = {"MLP on embedding": mlp}
    if not args.no_cnn:
        digit_models["small CNN on images"] = replace(mlp, features="", model="cnn")
    start = time.perf_counter()
    rows = run(digits(args.data_seed, holdout=0.2), digit_models, args.seeds, args.data_seed)
    if args.cifar and (CIFAR / "train.parquet").exists():
        for sc in cifar(args.data_seed, args.cifar_rows, with_test=True):
            rows += run(sc, {"MLP on embedding": mlp}, args.seeds, args.data_seed)
    print(f"\ntotal {time.perf_counter() - start:.0f} s; training seeds {args.seeds}, data seed {args.data_seed}")
    print()
    print_markdown_table(rows, [
        ("scenario", "{scenario}", False), ("model", "{model}", False), ("trained on", "{arm}", False),
        ("rows used", "{rows}", True), ("label noise in them", "{label_noise:.3f}", True),
        ("test acc final", lambda r: _pm(r["final"]), True), ("test acc best", lambda r: _pm(r["best"]), True),
    ])


if __name__ == "__main__":
    main()
