"""kNN recall@k of IVF (per nprobe) and HNSW against exact search, on one class of the 1M data.

    .venv/bin/python -m benchmarks.select.recall [--n 100000] [--nprobe 32 64 128 256] [--hnsw]
        [--train-per-cell 0 39]     # IVF trained on FAISS's 256 rows a cell (0) or on a sample

One class of the benchmark's Gaussian mixture (the size a class has at n = 1M); recall is
measured on 1000 random queries; "all-queries time" extrapolates the search to every row of
the class (what the kNN graph needs), on top of the one-off build/train time.
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np

from benchmarks.select.data import gaussian_mixture
from winnow.stages.select.knn import IndexSpec, build_index, normalize


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--nprobe", type=int, nargs="+", default=[32, 64, 128, 256])
    ap.add_argument("--hnsw", action="store_true")
    ap.add_argument("--ef", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--train-per-cell", type=int, nargs="+", default=[0],
                    help="IVF training rows sampled per cell (0: FAISS's default 256)")
    args = ap.parse_args()

    x, y = gaussian_mixture(args.n * 10, seed=2)
    xh = normalize(x[y == 0])
    del x, y
    n = len(xh)
    q = np.random.default_rng(0).choice(n, 1000, replace=False)
    flat = faiss.IndexFlatIP(xh.shape[1])
    flat.add(xh)
    _, ref = flat.search(xh[q], args.k + 1)
    truth = [set(r[r != qi][: args.k].tolist()) for r, qi in zip(ref, q)]

    def recall(ids):
        return float(np.mean([len(t & set(i[i != qi].tolist())) / len(t) for t, i, qi in zip(truth, ids, q)]))

    rows = []
    t0 = time.perf_counter()
    flat.search(xh[q], args.k + 1)
    t_exact = (time.perf_counter() - t0) * n / 1000
    rows.append(f"| exact (flat) | - | 0.0 | {t_exact:.1f} | 1.000 |")
    for per_cell in args.train_per_cell:
        t0 = time.perf_counter()
        ivf, _ = build_index(xh, IndexSpec(kind="ivf", train_per_cell=per_cell))
        t_build = time.perf_counter() - t0
        trained = f", trained on {max(per_cell, 39)} a cell" if per_cell else ""
        for nprobe in args.nprobe:
            ivf.nprobe = nprobe
            t0 = time.perf_counter()
            _, ids = ivf.search(xh[q], args.k + 1)
            t_all = (time.perf_counter() - t0) * n / 1000
            rows.append(f"| ivf nlist={ivf.nlist}{trained} | nprobe={nprobe} | {t_build:.1f} | {t_all:.1f} | "
                        f"{recall(ids):.3f} |")
            print(rows[-1], flush=True)
    if args.hnsw:
        t0 = time.perf_counter()
        hnsw, _ = build_index(xh, IndexSpec(kind="hnsw"))
        t_build = time.perf_counter() - t0
        for ef in args.ef:
            hnsw.hnsw.efSearch = ef
            t0 = time.perf_counter()
            _, ids = hnsw.search(xh[q], args.k + 1)
            t_all = (time.perf_counter() - t0) * n / 1000
            rows.append(f"| hnsw M=32 | efSearch={ef} | {t_build:.1f} | {t_all:.1f} | {recall(ids):.3f} |")
            print(rows[-1], flush=True)
    print(f"\nclass size {n}, d={xh.shape[1]}, k={args.k}, 1000 queries")
    print("| index | setting | build/train (s) | all-queries search (s, extrapolated) | recall@k |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
