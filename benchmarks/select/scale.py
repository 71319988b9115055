"""winnow select at scale: n=50k end to end, "gap closed" against dense greedy, optional n=1M.

    .venv/bin/python -m benchmarks.select.scale [--n 50000] [--subsample 20000] [--million [--million-index hnsw]]

- End to end = kNN graph (FAISS) + lazy greedy + CRAIG weights, through ``select()``.
- Gap closed = (f - f_random) / (f_dense_greedy - f_random) with f the exact dense facility
  location value, on a subsample where the dense greedy fits; f_dense_greedy by submodlib's
  dense LazyGreedy (exact greedy on the full similarity matrix; winnow's own lazy greedy on the
  complete graph if submodlib is missing), f_random the mean of 5 random subsets of the same
  per-class sizes.
- 1M: IVF or HNSW index (``--million-index``), kNN recall@k measured against exact search on 1000 query
  points of class 0.
"""

from __future__ import annotations

import argparse
import os

import faiss
import numpy as np

from benchmarks.select.data import (
    dense_objective,
    dense_similarity,
    gaussian_mixture,
    measure,
    per_class_budgets,
)
from winnow.stages.select import SelectParams, select
from winnow.stages.select.knn import IndexSpec, knn_search, normalize


def dense_greedy(x, y):
    budgets = per_class_budgets(y, 0.1)
    selected = np.zeros(len(y), bool)
    for c, b in budgets.items():
        rows = np.flatnonzero(y == c)
        s = dense_similarity(x[rows])
        try:
            from submodlib import FacilityLocationFunction

            f = FacilityLocationFunction(n=len(rows), mode="dense", sijs=s, separate_rep=False)
            pick = [i for i, _ in f.maximize(budget=b, optimizer="LazyGreedy", show_progress=False)]
        except ImportError:
            import scipy.sparse as sp

            from winnow.stages.select.facility_location import facility_location_greedy

            pick = facility_location_greedy(sp.csr_matrix(s), b).order
        selected[rows[np.asarray(pick, dtype=np.int64)]] = True
    return selected


def random_subset(y, seed):
    rng = np.random.default_rng(seed)
    selected = np.zeros(len(y), bool)
    for c, b in per_class_budgets(y, 0.1).items():
        rows = np.flatnonzero(y == c)
        selected[rng.choice(rows, b, replace=False)] = True
    return selected


def end_to_end(x, y, params, label, rows):
    res, dt, mem = measure(lambda: select(x, y, np.ones(len(y), bool), params))
    t = res.metrics["timings"]
    rows.append(
        f"| {label} | {len(y)} | {dt:.2f} | {t['knn_s']:.2f} | {t['greedy_s']:.2f} | {t['weights_s']:.2f} "
        f"| {mem:.0f} | {res.metrics['objective']:.1f} | {res.metrics['n_selected']} |"
    )
    print(rows[-1], flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--subsample", type=int, default=20000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--million", action="store_true", help="also run n=1M (index: --million-index)")
    ap.add_argument("--million-index", choices=("ivf", "hnsw"), default="ivf")
    ap.add_argument("--nprobe", type=int, default=32)
    ap.add_argument("--ef-search", type=int, default=128)
    ap.add_argument("--skip-small", action="store_true", help="only the 1M run")
    args = ap.parse_args()
    print(f"{os.cpu_count()} CPU cores")

    x, y = gaussian_mixture(args.n, seed=1)
    select(x[:500], y[:500], np.ones(500, bool), SelectParams())  # warm-up (imports, FAISS init)
    rows: list[str] = []
    gap_rows: list[str] = []
    if not args.skip_small:
        small(x, y, args, rows, gap_rows)
    if args.million:
        million(args, rows)
    print("\n| run | n | total (s) | kNN (s) | greedy (s) | weights (s) | peak RSS growth (MiB) | objective | selected |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("\n| greedy | subsample n | k | f_random | f_dense_greedy | f_winnow | gap closed |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(gap_rows))


def small(x, y, args, rows, gap_rows) -> None:
    end_to_end(x, y, SelectParams(budget=0.1, k=args.k, workers=1), "lazy greedy, exact kNN, 1 class thread", rows)
    end_to_end(x, y, SelectParams(budget=0.1, k=args.k, workers=2), "lazy greedy, exact kNN, 2 class threads (default)", rows)
    end_to_end(x, y, SelectParams(budget=0.1, k=args.k, epsilon=0.1), "stochastic greedy eps=0.1", rows)

    # Gap closed on a subsample where the dense greedy fits.
    sub = np.random.default_rng(0).choice(args.n, min(args.subsample, args.n), replace=False)
    xs, ys = x[sub], y[sub]
    f_random = np.mean([dense_objective(xs, ys, random_subset(ys, s)) for s in range(5)])
    f_dense = dense_objective(xs, ys, dense_greedy(xs, ys))
    for label, eps in (("lazy", 0.0), ("stochastic eps=0.1", 0.1)):
        sel = select(xs, ys, np.ones(len(ys), bool), SelectParams(budget=0.1, k=args.k, epsilon=eps)).columns["selected"]
        f = dense_objective(xs, ys, sel)
        gap_rows.append(
            f"| {label} | {len(ys)} | {args.k} | {f_random:.1f} | {f_dense:.1f} | {f:.1f} "
            f"| {(f - f_random) / (f_dense - f_random):.3f} |"
        )
        print(gap_rows[-1], flush=True)



def million(args, rows) -> None:
    xm, ym = gaussian_mixture(1_000_000, seed=2)
    kind = args.million_index
    params = SelectParams(budget=0.1, k=args.k, index=kind, nprobe=args.nprobe, ef_search=args.ef_search)
    knob = f"nprobe={args.nprobe}" if kind == "ivf" else f"M=32 efSearch={args.ef_search}"
    end_to_end(xm, ym, params, f"1M, {kind} {knob}", rows)
    # Recall of the same index settings on class 0 (1000 queries against exact search).
    xh = normalize(xm[ym == 0])
    del xm, ym
    ids, _, _ = knn_search(xh, args.k, IndexSpec(kind=kind, nprobe=args.nprobe, ef_search=args.ef_search))
    q = np.random.default_rng(0).choice(len(xh), 1000, replace=False)
    flat = faiss.IndexFlatIP(xh.shape[1])
    flat.add(xh)
    _, ref = flat.search(xh[q], args.k + 1)
    recalls = []
    for i, qi in enumerate(q):
        truth = set(ref[i][ref[i] != qi][: args.k].tolist())
        recalls.append(len(truth & set(ids[qi].tolist())) / len(truth))
    rows.append(f"| (1M {kind} kNN recall@{args.k}, class 0, 1000 queries: {np.mean(recalls):.3f}) | | | | | | | | |")
    print(rows[-1], flush=True)


if __name__ == "__main__":
    main()
