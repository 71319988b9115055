"""Flags under instance-dependent noise (``--inject-noise model:0.4``): winnow vs cleanlab.

    PYTHONPATH=. .venv/bin/python -m benchmarks.quality.model_noise            # digits, seeds 0-2
    PYTHONPATH=. .venv/bin/python -m benchmarks.quality.model_noise --cifar    # + CIFAR-10 (PCA-128)

The scenarios of :mod:`benchmarks.quality.scenarios` with model noise at 40%: a cross-fitted
logistic regression on the scenario's embedding gives the 40% most confusable train rows its
likeliest wrong class. Flags as in :mod:`benchmarks.quality.flags` (winnow's default export vs
``cleanlab.filter.find_label_issues`` on the same probabilities); median over the seeds.
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks.quality.flags import scenario_rows
from benchmarks.quality.scenarios import CIFAR, cifar, digits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cifar", action="store_true")
    ap.add_argument("--cifar-rows", type=int, default=20000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    rows = []
    for seed in args.seeds:
        rows += [dict(r, seed=seed) for r in scenario_rows(digits(seed, noise="model"), seed)]
        if args.cifar and (CIFAR / "train.parquet").exists():
            for sc in cifar(seed, args.cifar_rows, scenarios=(("model", "model", None),)):
                rows += [dict(r, seed=seed) for r in scenario_rows(sc, seed)]
    print("\n| scenario | method | seeds | precision | recall | F1 | AUROC |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    keys = dict.fromkeys((r["scenario"].split(" (")[0], r["method"]) for r in rows)
    for scenario, method in keys:
        sel = [r for r in rows if r["scenario"].split(" (")[0] == scenario and r["method"] == method]
        med = {k: float(np.median([r[k] for r in sel])) for k in ("precision", "recall", "f1", "auroc")}
        print(f"| {scenario} | {method} | {len(sel)} (median) | {med['precision']:.3f} | {med['recall']:.3f} | "
              f"{med['f1']:.3f} | {med['auroc']:.3f} |")


if __name__ == "__main__":
    main()
