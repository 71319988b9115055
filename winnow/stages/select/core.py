"""Pure core of the select stage: vectors, labels and an eligibility mask in; coreset columns out.

Per class (classes are independent and run in parallel threads with ``--workers``):

- facility location: kNN graph (:mod:`.knn`), lazy or stochastic greedy
  (:mod:`.facility_location`), then CRAIG weights by an exact search of the class against
  its medoids (:mod:`.craig`);
- set cover: FAISS range search within ``--radius``, greedy cover (:mod:`.set_cover`).

No files, no CLI: the pipeline adapter reads ``features.parquet`` and the manifest, calls
:func:`select` and writes ``coreset.parquet`` and the metrics to ``stage.json``.
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from winnow.stages.common.progress import track
from winnow.stages.common.reprs import short_repr
from winnow.stages.select.craig import assign_to_medoids, craig_weights
from winnow.stages.select.facility_location import facility_location_greedy, graph_coverage, graph_objective
from winnow.stages.select.knn import IndexSpec, faiss_gpu_available, knn_graph, normalize, range_search
from winnow.stages.select.params import SelectParams
from winnow.stages.select.set_cover import default_radius, greedy_set_cover


@dataclass
class SelectResult:
    """Coreset columns (one value per input row) and metrics for ``stage.json``."""

    columns: dict[str, np.ndarray]
    metrics: dict[str, Any] = field(default_factory=dict)

    __repr__ = short_repr


@dataclass
class _ClassOutcome:
    rows: np.ndarray  # (n_c,) rows of the inputs that belong to this class
    order: np.ndarray  # (m,) positions into rows, selection order
    gains: np.ndarray  # (m,)
    cluster: np.ndarray  # (n_c,) position (into rows) of each row's centre, -1 = none
    weights: np.ndarray  # (n_c,) float32 coreset weight
    metrics: dict[str, Any]


def split_budget(class_sizes: np.ndarray, budget: float, mode: str) -> np.ndarray:
    """Per-class number of picks.

    Parameters
    ----------
    class_sizes : (C,) int, rows per class (all > 0).
    budget : fraction of all rows if < 1, a total count if >= 1, 0 = no limit (returns 0s).
    mode : ``proportional`` (CRAIG: in proportion to class size) or ``equal``.

    Returns
    -------
    (C,) int64, each in [1, class size] (at least one pick per class), summing to the total
    budget rounded to the nearest count (or the number of rows, if smaller). Remainders go by
    the largest-remainder rule, then to the lowest class index.
    """
    sizes = np.asarray(class_sizes, dtype=np.int64)
    if budget == 0:
        return np.zeros_like(sizes)
    n = int(sizes.sum())
    total = int(round(budget * n)) if budget < 1 else int(budget)
    total = min(max(total, len(sizes)), n)
    if mode == "proportional":
        share = sizes * (total / n)
    elif mode == "equal":
        share = np.full(len(sizes), total / len(sizes))
    else:
        raise ValueError(f"option --per-class-budget: {mode!r} is not one of proportional, equal")
    alloc = np.clip(np.floor(share).astype(np.int64), 1, sizes)
    # Hand out what is left, largest remainder first; classes that are full pass it on.
    while alloc.sum() < total:
        room = alloc < sizes
        rem = np.where(room, share - alloc, -np.inf)
        order = np.lexsort((np.arange(len(sizes)), -rem))
        need = total - int(alloc.sum())
        take = order[: min(need, int(room.sum()))]
        alloc[take] += 1
    while alloc.sum() > total:  # the at-least-one rule can overshoot
        over = alloc > 1
        rem = np.where(over, alloc - share, -np.inf)
        alloc[int(np.argmax(rem))] -= 1
    return alloc


def _index_spec(params: SelectParams, device: str, seed: int) -> IndexSpec:
    return IndexSpec(
        kind=params.index,
        exact_threshold=params.exact_threshold,
        nlist=params.nlist,
        nprobe=params.nprobe,
        hnsw_m=params.hnsw_m,
        ef_search=params.ef_search,
        device=device,
        seed=seed,
    )


def _facility_location_class(
    x_hat: np.ndarray, budget: int, params: SelectParams, spec: IndexSpec, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    t0 = time.perf_counter()
    graph, kind = knn_graph(x_hat, params.k, spec)
    t1 = time.perf_counter()
    res = facility_location_greedy(graph, budget, epsilon=params.epsilon, rng=rng)
    t2 = time.perf_counter()
    assignment, sim = assign_to_medoids(x_hat, res.order, device=spec.device)
    weights = craig_weights(assignment, x_hat.shape[0])
    t3 = time.perf_counter()
    metrics = {
        "index": kind,
        "graph_nnz": int(graph.nnz),
        "objective": float(sim.sum(dtype=np.float64)),
        "objective_graph": graph_objective(graph, res.order),
        "coverage": graph_coverage(graph, res.order),
        "knn_s": t1 - t0,
        "greedy_s": t2 - t1,
        "weights_s": t3 - t2,
    }
    return res.order, res.gains, assignment, weights, metrics


def _set_cover_class(
    x_hat: np.ndarray, budget: int, params: SelectParams, spec: IndexSpec, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    t0 = time.perf_counter()
    radius = params.radius or default_radius(x_hat, params.k, spec)
    ball, kind = range_search(x_hat, radius, spec)
    t1 = time.perf_counter()
    res, first = greedy_set_cover(
        ball, radius, budget, weighting=params.set_cover_weighting, epsilon=params.epsilon, rng=rng
    )
    t2 = time.perf_counter()
    covered = first >= 0
    weights = np.bincount(first[covered], minlength=x_hat.shape[0]).astype(np.float32)
    metrics = {
        "index": kind,
        "radius": float(radius),
        "ball_nnz": int(ball.nnz),
        "coverage": float(covered.mean()) if covered.size else 0.0,
        "objective": float(covered.sum()),  # points covered
        "knn_s": t1 - t0,
        "greedy_s": t2 - t1,
        "weights_s": 0.0,
    }
    return res.order, res.gains, first, weights, metrics


def check_inputs(vectors: np.ndarray, labels: np.ndarray, eligible: np.ndarray, device: str) -> None:
    """Raise ValueError naming what is wrong with :func:`select`'s inputs (also the Beam executor's
    check before it sends the classes to its workers)."""
    if device not in ("cpu", "auto") and not device.startswith("cuda"):
        raise ValueError(f"select: --device must be auto, cpu or cuda, got {device!r}")
    if vectors.ndim != 2:
        raise ValueError(f"select: vectors must be 2-D (n, d), got shape {vectors.shape}")
    n = vectors.shape[0]
    if labels.shape != (n,) or eligible.shape != (n,):
        raise ValueError(
            f"select: labels {labels.shape} and eligible {eligible.shape} must both have shape ({n},) "
            "to match the vectors"
        )
    if eligible.dtype != bool:
        raise ValueError(f"select: eligible must be a boolean mask, got dtype {eligible.dtype}")
    bad = np.flatnonzero(eligible & ~np.isfinite(vectors).all(axis=1))
    if bad.size:
        raise ValueError(
            f"select: row {int(bad[0])} ({bad.size} rows in all) has a non-finite vector; "
            "set its `error` so it is not eligible"
        )
    neg = np.flatnonzero(eligible & (labels < 0))
    if neg.size:
        raise ValueError(f"select: row {int(neg[0])} has label {int(labels[neg[0]])}; labels must be >= 0")


def empty_columns(n: int) -> dict[str, np.ndarray]:
    """The output columns for ``n`` rows with nothing selected (the fill for ineligible rows)."""
    return {
        "selected": np.zeros(n, dtype=bool),
        "cluster_id": np.full(n, -1, dtype=np.int64),
        "coreset_weight": np.zeros(n, dtype=np.float32),
        "gain": np.full(n, np.nan, dtype=np.float32),
        "rank": np.full(n, -1, dtype=np.int32),
    }


def select(
    vectors: np.ndarray,
    labels: np.ndarray,
    eligible: np.ndarray,
    params: SelectParams,
    *,
    seed: int = 0,
    device: str = "cpu",
) -> SelectResult:
    """Select a per-class coreset with CRAIG weights.

    Parameters
    ----------
    vectors : (n, d) float vectors aligned with the manifest (``embedding`` or
        ``grad_embedding``); rows that are not eligible may hold anything (even NaN).
    labels : (n,) int class labels (>= 0 for eligible rows).
    eligible : (n,) bool, the train rows without error; the others get ``selected=False``,
        ``cluster_id=-1``, ``coreset_weight=0``.
    params : the stage options.
    seed : seeds IVF training and stochastic greedy (per class: ``[seed, label]``).
    device : ``cpu``, ``cuda`` or ``auto``; FAISS runs on GPU only if its build supports it.

    Returns
    -------
    SelectResult with ``columns`` (each of length n):

    - ``selected`` bool;
    - ``cluster_id`` int64, ROW INDEX (into these arrays) of the medoid / centre the row is
      assigned to, -1 if not considered (or, for set cover under a budget, not covered);
    - ``coreset_weight`` float32, cluster size for selected rows (weights of a class sum to
      its size for facility location), 0 otherwise;
    - ``gain`` float32, marginal gain at selection, NaN if not selected;
    - ``rank`` int32, selection order within the class (0 first), -1 if not selected;

    and ``metrics`` (JSON-able): method, objective (exact dense facility-location value, or
    points covered for set cover), objective_graph, coverage, per-class details, timings.
    """
    t_start = time.perf_counter()
    vectors = np.asarray(vectors)
    labels = np.asarray(labels)
    eligible = np.asarray(eligible)
    check_inputs(vectors, labels, eligible, device)
    n = vectors.shape[0]
    cols = empty_columns(n)
    elig_rows = np.flatnonzero(eligible)
    classes, inverse = np.unique(labels[elig_rows], return_inverse=True)
    if elig_rows.size == 0:
        metrics = _head(params, n, 0, device)
        metrics.update(n_selected=0, objective=0.0, coverage=0.0, per_class={})
        return SelectResult(cols, metrics)

    class_rows = [elig_rows[inverse == i] for i in range(len(classes))]
    budgets = split_budget(np.array([len(r) for r in class_rows]), params.budget, params.per_class_budget)
    run_class = _facility_location_class if params.method == "facility-location" else _set_cover_class

    def work(i: int) -> _ClassOutcome:
        rows = class_rows[i]
        x_hat = normalize(vectors[rows])
        spec = _index_spec(params, device, seed)
        rng = np.random.default_rng([seed, int(classes[i])])
        order, gains, cluster, weights, m = run_class(x_hat, int(budgets[i]), params, spec, rng)
        m.update(n=int(rows.size), budget=int(budgets[i]), selected=int(order.size))
        return _ClassOutcome(rows, order, gains, cluster, weights, m)

    workers = params.workers or os.cpu_count() or 1
    if workers > 1 and len(classes) > 1:
        with ThreadPoolExecutor(max_workers=min(workers, len(classes))) as pool:
            outcomes = list(track(pool.map(work, range(len(classes))), f"select ({params.method})", total=len(classes)))
    else:
        outcomes = [work(i) for i in track(range(len(classes)), f"select ({params.method})", total=len(classes))]

    per_class: dict[str, Any] = {}
    for label, out in zip(classes, outcomes):
        picked = out.rows[out.order]
        cols["selected"][picked] = True
        cols["rank"][picked] = np.arange(out.order.size, dtype=np.int32)
        cols["gain"][picked] = out.gains.astype(np.float32)
        assigned = out.cluster >= 0
        cols["cluster_id"][out.rows[assigned]] = out.rows[out.cluster[assigned]]
        cols["coreset_weight"][out.rows] = out.weights
        per_class[str(int(label))] = out.metrics

    metrics = select_metrics(params, per_class, n_rows=n, n_selected=int(cols["selected"].sum()), device=device)
    metrics["timings"]["total_s"] = time.perf_counter() - t_start
    return SelectResult(cols, metrics)


def _head(params: SelectParams, n_rows: int, n_eligible: int, device: str) -> dict[str, Any]:
    return {"method": params.method, "n_rows": int(n_rows), "n_eligible": int(n_eligible),
            "faiss_gpu": bool(device != "cpu" and faiss_gpu_available())}


def select_metrics(params: SelectParams, per_class: dict[str, Any], *, n_rows: int, n_selected: int,
                   device: str) -> dict[str, Any]:
    """The run's metrics from the per-class ones (``per_class``: label -> a class's metrics, each
    with its ``n`` rows): objective, coverage and timings summed over the classes. :func:`select`
    and the Beam executor (whose workers solve one class each) both report these.

    Raises ValueError when the objective is not finite (a vector with a NaN slipped through).
    """
    pc = list(per_class.values())
    n_elig = sum(int(m["n"]) for m in pc)
    metrics = _head(params, n_rows, n_elig, device)
    metrics.update(
        n_selected=int(n_selected),
        objective=float(sum(m["objective"] for m in pc)),
        coverage=float(sum(m["coverage"] * m["n"] for m in pc) / n_elig),
        per_class=per_class,
        timings={k: float(sum(m[k] for m in pc)) for k in ("knn_s", "greedy_s", "weights_s")},
    )
    if params.method == "facility-location":
        metrics["objective_graph"] = float(sum(m["objective_graph"] for m in pc))
        metrics["mean_similarity"] = metrics["objective"] / n_elig
    if not math.isfinite(metrics["objective"]):
        raise ValueError("select: objective is not finite; check the input vectors")
    return metrics
