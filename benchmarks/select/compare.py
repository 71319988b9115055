"""winnow facility location vs apricot and submodlib, same similarity, same per-class budgets.

    .venv/bin/python -m benchmarks.select.compare [--sizes 10000 20000] [--k 10]

Data: Gaussian mixture (benchmarks/select/data.py), d=128, 10 classes, budget 10 % split over
classes in proportion to size. Similarity for every tool: (1 + cos) / 2 (winnow/stages/select/knn.py).
Objective: the exact dense facility-location value sum_i max_{j in S} sim(i, j), per class,
computed the same way for every tool's selection. Times include building the similarity
(dense matrix or FAISS kNN graph) and, for winnow, the CRAIG weights.
"""

from __future__ import annotations

import argparse
import platform
import warnings

import numpy as np

from benchmarks.select.data import (
    dense_objective,
    dense_similarity,
    gaussian_mixture,
    measure,
    per_class_budgets,
)
from winnow.stages.select import SelectParams, select
from winnow.stages.select.knn import IndexSpec, knn_graph, normalize

warnings.filterwarnings("ignore")


def run_winnow(x, y, k, epsilon=0.0):
    res = select(x, y, np.ones(len(y), bool), SelectParams(budget=0.1, k=k, epsilon=epsilon))
    return res.columns["selected"]


def _per_class(x, y, pick):
    budgets = per_class_budgets(y, 0.1)
    selected = np.zeros(len(y), bool)
    for c, b in budgets.items():
        rows = np.flatnonzero(y == c)
        selected[rows[np.asarray(pick(x[rows], b), dtype=np.int64)]] = True
    return selected


def apricot_dense(x, y):
    from apricot import FacilityLocationSelection

    def pick(xc, b):
        return FacilityLocationSelection(b, metric="precomputed", optimizer="lazy").fit(dense_similarity(xc)).ranking

    return _per_class(x, y, pick)


def apricot_sparse(x, y, k):
    """apricot's sparse (n_neighbors) path, fed the same FAISS kNN graph winnow uses."""
    from apricot import FacilityLocationSelection

    def pick(xc, b):
        g, _ = knn_graph(normalize(xc), k, IndexSpec(kind="exact"))
        return FacilityLocationSelection(b, metric="precomputed", optimizer="lazy").fit(g).ranking

    return _per_class(x, y, pick)


def submodlib_dense(x, y):
    from submodlib import FacilityLocationFunction

    def pick(xc, b):
        f = FacilityLocationFunction(n=len(xc), mode="dense", sijs=dense_similarity(xc), separate_rep=False)
        return [i for i, _ in f.maximize(budget=b, optimizer="LazyGreedy", show_progress=False)]

    return _per_class(x, y, pick)


def submodlib_sparse(x, y, k):
    from submodlib import FacilityLocationFunction

    def pick(xc, b):
        f = FacilityLocationFunction(n=len(xc), mode="sparse", data=normalize(xc), metric="cosine", num_neighbors=k)
        return [i for i, _ in f.maximize(budget=b, optimizer="LazyGreedy", show_progress=False)]

    return _per_class(x, y, pick)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000, 20000])
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--skip-submodlib-sparse", action="store_true")
    args = ap.parse_args()

    # Warm up JIT-compiled code (apricot's numba kernels) so no tool pays compilation in its time.
    xw, yw = gaussian_mixture(300, seed=99)
    for f in (lambda: run_winnow(xw, yw, args.k), lambda: apricot_dense(xw, yw),
              lambda: apricot_sparse(xw, yw, args.k)):
        f()

    rows = []
    for n in args.sizes:
        x, y = gaussian_mixture(n, seed=n)
        tools = {
            "winnow lazy (kNN graph, FAISS exact)": lambda x=x, y=y: run_winnow(x, y, args.k),
            "winnow stochastic eps=0.1": lambda x=x, y=y: run_winnow(x, y, args.k, epsilon=0.1),
            "apricot dense (lazy)": lambda x=x, y=y: apricot_dense(x, y),
            "apricot sparse (lazy, same kNN graph)": lambda x=x, y=y: apricot_sparse(x, y, args.k),
            "submodlib dense (LazyGreedy)": lambda x=x, y=y: submodlib_dense(x, y),
        }
        if not args.skip_submodlib_sparse:
            tools["submodlib sparse (LazyGreedy, its own kNN, cosine)"] = lambda x=x, y=y: submodlib_sparse(x, y, args.k)
        results = {}
        for name, fn in tools.items():
            try:
                sel, dt, mem = measure(fn)
                results[name] = (dt, mem, dense_objective(x, y, sel), int(sel.sum()))
            except Exception as e:  # report a tool that fails instead of hiding it
                results[name] = (float("nan"), float("nan"), float("nan"), f"failed: {type(e).__name__}: {e}"[:80])
            print(name, results[name], flush=True)
        ref_t, _, ref_f, _ = results["apricot dense (lazy)"]
        for name, (dt, mem, f, m) in results.items():
            rows.append(f"| {n} | {name} | {dt:.2f} | {mem:.0f} | {f:.1f} | {f / ref_f:.4f} | {ref_t / dt:.1f}x | {m} |")

    print()
    print(f"machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} CPU cores")
    print("| n | tool | time (s) | peak RSS growth (MiB) | dense objective | objective / apricot dense "
          "| speed-up vs apricot dense | selected |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
