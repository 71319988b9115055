"""Which rows to review first: a simulated reviewer who answers with the true label.

    PYTHONPATH=. .venv/bin/python -m benchmarks.review.simulated              # digits, 40% uniform
    PYTHONPATH=. .venv/bin/python -m benchmarks.review.simulated --cifar      # + CIFAR-10, 40% uniform

Per scenario (:mod:`benchmarks.quality.scenarios`: the same embeddings and cross-fitted
probabilities as the flag benchmark) and budget (1%, 2%, 5% of the train rows), three orders pick
the rows to review; the reviewer sets each reviewed row's label to the truth:

- winnow: :func:`winnow.stages.review.review_order` on export's curated table (default export,
  ``flagged_only=False``: the flagged rows first by expected gain, then the rest by the same key);
- cleanlab: ascending ``cleanlab.rank.get_label_quality_scores(given, probs)`` on the same probs;
- random: a seeded permutation of the train rows.

Reported: labels fixed (reviewed rows whose label was wrong), the train rows' label accuracy
after the corrections, and the test accuracy of ``winnow.stages.train.core.train_model`` (MLP on
the embedding, 20 epochs, seeds 0-2) trained on every train and trusted row with the corrected
labels. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from benchmarks.quality.downstream import _table
from benchmarks.quality.scenarios import CIFAR, Scenario, cifar, digits, export_tables
from winnow.stages.common import schema
from winnow.stages.export import ExportParams, export
from winnow.stages.review import review_order
from winnow.stages.train.core import train_model
from winnow.stages.train.params import TrainParams

BUDGETS = (0.01, 0.02, 0.05)
ORDERS = ("winnow", "cleanlab", "random")


def orders(sc: Scenario, seed: int) -> dict[str, np.ndarray]:
    """Each order as scenario row indices (train rows only)."""
    from cleanlab.rank import get_label_quality_scores

    manifest, features = export_tables(sc.embedding, sc.probs, sc.given, sc.true, sc.split, sc.n_classes)
    curated = export(manifest, features, None, None, ExportParams(), seed=seed).curated
    train = np.flatnonzero(sc.split == schema.TRAIN)
    quality = get_label_quality_scores(sc.given[train], sc.probs[train])
    return {
        "winnow": review_order(curated, flagged_only=False),
        "cleanlab": train[np.argsort(quality, kind="stable")],
        "random": np.random.default_rng(seed).permutation(train),
    }


def run(sc: Scenario, seeds: list[int], data_seed: int, epochs: int) -> list[dict]:
    params = TrainParams(features="embedding", model="mlp", epochs=epochs)
    n_train = int((sc.split == schema.TRAIN).sum())
    m = len(sc.test_labels) if sc.test_labels is not None else 0
    test = _table(np.arange(m), sc.test_labels, np.ones(m), np.full(m, schema.TEST), sc.test_embedding, None,
                  sc.n_classes) if m else None
    out = []
    for name, order in orders(sc, data_seed).items():
        for budget in BUDGETS:
            k = int(round(budget * n_train))
            reviewed = order[:k]
            labels = sc.given.copy()
            labels[reviewed] = sc.true[reviewed]
            train = sc.split == schema.TRAIN
            row = {"scenario": sc.name, "order": name, "budget": budget, "reviewed": k,
                   "fixed": int((sc.given[reviewed] != sc.true[reviewed]).sum()),
                   "label_acc": float((labels[train] == sc.true[train]).mean())}
            if test is not None:
                table = _table(np.arange(len(labels)), labels, np.ones(len(labels)), sc.split, sc.embedding, None,
                               sc.n_classes)
                acc = [train_model(table, test, params, num_classes=sc.n_classes, seed=s).metrics["test_accuracy"]
                       for s in seeds]
                row["test_acc"] = np.array(acc)
            out.append(row)
            print(f"  {sc.name} | {name} | {budget:.0%}: fixed {row['fixed']}/{k}, label acc {row['label_acc']:.4f}"
                  + (f", test acc {row['test_acc'].mean():.4f}" if "test_acc" in row else ""), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cifar", action="store_true", help="also CIFAR-10 40%% uniform from ../shared/data")
    ap.add_argument("--cifar-rows", type=int, default=20000)
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    rows = run(digits(args.data_seed, holdout=0.2), args.seeds, args.data_seed, args.epochs)
    if args.cifar and (CIFAR / "train.parquet").exists():
        uniform = [sc for sc in cifar(args.data_seed, args.cifar_rows, with_test=True) if "uniform" in sc.name
                   and "imbalance" not in sc.name]
        for sc in uniform:
            rows += run(sc, args.seeds, args.data_seed, args.epochs)
    print(f"\ntotal {time.perf_counter() - start:.0f} s; training seeds {args.seeds}, data seed {args.data_seed}")
    print("\n| scenario | order | reviewed | labels fixed | train label accuracy | test accuracy |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        acc = r.get("test_acc")
        acc_s = f"{acc.mean():.3f} ± {acc.std(ddof=1):.3f}" if acc is not None and len(acc) > 1 else "-"
        print(f"| {r['scenario']} | {r['order']} | {r['budget']:.0%} ({r['reviewed']}) | {r['fixed']} | "
              f"{r['label_acc']:.4f} | {acc_s} |")


if __name__ == "__main__":
    main()
