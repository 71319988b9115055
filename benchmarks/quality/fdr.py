"""Empirical false-discovery rate of the conformal flags (``export --fdr q``) over many seeds.

    PYTHONPATH=. .venv/bin/python -m benchmarks.quality.fdr                       # digits, 20 seeds
    PYTHONPATH=. .venv/bin/python -m benchmarks.quality.fdr --synthetic --cifar   # + the other two

Per seed and scenario (40% uniform flips; the data, trusted split and noise drawn with that seed):
export's class posterior (:func:`winnow.stages.export.scores.noise_scores`, default options),
then :func:`winnow.stages.export.fdr.fdr_flags` at ``q``. Reported over the seeds: the mean
false-discovery proportion (clean rows among the flagged) with its standard error, and the mean
recall; beside them the default calibrated flags (``winnow.stages.export.export``) and
``cleanlab.filter.find_label_issues`` on the same probabilities. Scenarios:

- digits: pixels / 16, 10 trusted rows per class (:func:`benchmarks.quality.scenarios.digits`);
- synthetic: :func:`benchmarks.synthetic.clustered_features` (20,000 rows, 128 dims, 100 trusted per
  class) with cross-fitted logistic-regression probabilities;
- CIFAR-10: PCA-128 of 20,000 images' pixels, 100 trusted per class (``scenarios.cifar``).
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks.quality.scenarios import CIFAR, Scenario, cifar, crossfit_probs, digits, export_tables
from benchmarks.synthetic import clustered_features
from winnow.stages.common import schema
from winnow.stages.export import ExportParams, export
from winnow.stages.export.fdr import fdr_flags
from winnow.stages.export.scores import noise_scores


def synthetic(seed: int, n: int = 20000) -> Scenario:
    a = clustered_features(n, noise=0.4, seed=seed)
    probs = crossfit_probs(a["embedding"], a["label"], 10, seed)
    return Scenario("synthetic 128-d, 40% uniform", a["embedding"], probs, a["label"].astype(np.int64),
                    a["true_label"].astype(np.int64), a["split"].astype(str), 10)


def measure(sc: Scenario, q: float, seed: int) -> dict[str, tuple[float, float]]:
    """(false-discovery proportion, recall) per method on the train rows."""
    from cleanlab.filter import find_label_issues

    train = sc.split == schema.TRAIN
    noisy = sc.given != sc.true
    s = noise_scores(labels=sc.given, probs=sc.probs, embedding=sc.embedding, split=sc.split,
                     n_classes=sc.n_classes, knn_weight=None, seed=seed)
    fdr = fdr_flags(s.label_signal, s.posterior, sc.given, train=train, trusted=sc.split == schema.TRUSTED, q=q)
    manifest, features = export_tables(sc.embedding, sc.probs, sc.given, sc.true, sc.split, sc.n_classes)
    default = export(manifest, features, None, None, ExportParams(), seed=seed).curated["noise_flag"].to_numpy(
        zero_copy_only=False)
    cl = np.zeros(len(train), dtype=bool)
    cl[train] = find_label_issues(sc.given[train], sc.probs[train])

    def fdp_recall(flag: np.ndarray) -> tuple[float, float]:
        flag = flag & train
        return float((flag & ~noisy).sum() / max(flag.sum(), 1)), float((flag & noisy).sum() / (noisy & train).sum())

    return {f"--fdr {q}": fdp_recall(fdr.flag), "default flags": fdp_recall(default), "cleanlab": fdp_recall(cl),
            "warned": (float(fdr.summary["exchangeability"]["warn"]), 0.0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--q", type=float, default=0.1)
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--cifar", action="store_true")
    ap.add_argument("--cifar-rows", type=int, default=20000)
    args = ap.parse_args()
    makers = [("digits, 40% uniform", lambda s: digits(s))]
    if args.synthetic:
        makers.append(("synthetic 128-d (20,000 rows), 40% uniform", synthetic))
    if args.cifar and (CIFAR / "train.parquet").exists():
        makers.append((f"CIFAR-10 ({args.cifar_rows} rows, PCA-128), 40% uniform",
                       lambda s: cifar(s, args.cifar_rows, scenarios=(("uniform", "uniform", None),))[0]))
    rows = []
    for name, make in makers:
        per: dict[str, list[tuple[float, float]]] = {}
        for seed in range(args.seeds):
            for method, value in measure(make(seed), args.q, seed).items():
                per.setdefault(method, []).append(value)
            print(f"  {name} seed {seed}: " + ", ".join(f"{m} FDP {v[-1][0]:.3f}" for m, v in per.items()
                                                        if m != "warned"), flush=True)
        warned = int(sum(w for w, _ in per.pop("warned")))
        for method, values in per.items():
            fdp, rec = np.array(values).T
            rows.append((name, method, fdp.mean(), fdp.std(ddof=1) / np.sqrt(len(fdp)), rec.mean(), len(fdp),
                         warned if method.startswith("--fdr") else None))
    print("\n| scenario | flags | seeds | mean FDP ± s.e. | mean recall | exchangeability warnings |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for name, method, fdp, se, rec, k, warned in rows:
        print(f"| {name} | {method} | {k} | {fdp:.3f} ± {se:.3f} | {rec:.3f} | {'' if warned is None else warned} |")


if __name__ == "__main__":
    main()
