"""Shared helpers of the select benchmarks: Gaussian-mixture data, dense objective, peak memory."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import psutil

from winnow.stages.select.knn import normalize


def gaussian_mixture(n: int, *, d: int = 128, classes: int = 10, components: int = 10,
                     spread: float = 0.75, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n points in d dims, 10 classes; each class a mixture of ``components`` isotropic Gaussians.

    Component centres ~ N(0, I); points = centre + spread * N(0, I); component weights ~
    Dirichlet(2), so classes have dense and sparse modes. Labels are balanced at random.
    Generated in chunks to keep peak memory near the output size (float32).
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, components, d)).astype(np.float32)
    mix = rng.dirichlet(np.full(components, 2.0), size=classes)
    labels = rng.integers(0, classes, n).astype(np.int32)
    x = np.empty((n, d), dtype=np.float32)
    chunk = 200_000
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        lab = labels[s:e]
        u = rng.random(e - s)
        comp = (u[:, None] > np.cumsum(mix[lab], axis=1)).sum(axis=1).clip(0, components - 1)
        x[s:e] = centres[lab, comp] + spread * rng.standard_normal((e - s, d), dtype=np.float32)
    return x, labels


def dense_similarity(x: np.ndarray) -> np.ndarray:
    """The documented similarity (1 + cos) / 2 as a dense float32 matrix (small classes only)."""
    xh = normalize(x)
    s = xh @ xh.T
    s += 1.0
    s *= 0.5
    np.fill_diagonal(s, 1.0)
    return np.clip(s, 0.0, 1.0, out=s)


def dense_objective(x: np.ndarray, labels: np.ndarray, selected: np.ndarray) -> float:
    """Sum over classes of sum_i max_{j in S_c} sim(i, j), exact (chunked dense products)."""
    total = 0.0
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        xh = normalize(x[rows])
        sel = xh[selected[rows]]
        if sel.shape[0] == 0:
            continue
        best = np.empty(len(rows), dtype=np.float64)
        for s in range(0, len(rows), 8192):
            best[s:s + 8192] = (sel @ xh[s:s + 8192].T).max(axis=0)
        sim = np.clip((1.0 + best) / 2.0, 0.0, 1.0)
        sim[np.flatnonzero(selected[rows])] = 1.0
        total += float(sim.sum())
    return total


def measure(fn: Callable[[], Any], interval: float = 0.005) -> tuple[Any, float, float]:
    """Run fn; return (result, seconds, peak RSS growth in MiB) sampled by a background thread."""
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(interval)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    done.set()
    t.join()
    peak[0] = max(peak[0], proc.memory_info().rss)
    return out, dt, (peak[0] - base) / 2**20


def per_class_budgets(labels: np.ndarray, fraction: float) -> dict[int, int]:
    """The proportional split winnow uses, so every tool gets the same per-class budgets."""
    from winnow.stages.select.core import split_budget

    classes, counts = np.unique(labels, return_counts=True)
    return dict(zip(classes.tolist(), split_budget(counts, fraction, "proportional").tolist()))
