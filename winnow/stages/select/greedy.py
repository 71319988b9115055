"""Lazy and stochastic greedy maximisation, shared by facility location and set cover.

Both selectors have the same shape: a candidate's marginal gain is a sum over its row of a
sparse matrix, gains only shrink as the set grows (submodularity), and selecting a candidate
updates a per-point state vector. This module holds the two search loops; the callers supply
``gain(c)``, ``batch_gains(rows)`` and ``select(c)``.

Tie rule (both loops): among equal gains the lowest index wins, as ``np.argmax`` does in a
naive greedy, so lazy greedy returns EXACTLY the naive greedy order.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass
class GreedyResult:
    """Selection order and the marginal gain of each pick (same length)."""

    order: np.ndarray  # (m,) int64 rows, in selection order
    gains: np.ndarray  # (m,) float64 marginal gain at the time of selection


def lazy_greedy(
    upper_bounds: np.ndarray,
    gain: Callable[[int], float],
    select: Callable[[int], None],
    budget: int,
    *,
    stop_when_zero: bool = False,
) -> GreedyResult:
    """Minoux's lazy greedy over ``n = len(upper_bounds)`` candidates.

    Parameters
    ----------
    upper_bounds : (n,) initial gains (gains on the empty set); any valid upper bounds work.
    gain : current marginal gain of a candidate (>= 0, non-increasing as the set grows).
    select : called once per pick, to update the caller's state.
    budget : number of picks (at most n).
    stop_when_zero : stop early once the best gain is 0 (set cover: everything covered).

    Returns
    -------
    GreedyResult with the picks in order.
    """
    n = len(upper_bounds)
    budget = min(int(budget), n)
    # Heap keys (-gain, index): the smallest key is the largest gain, lowest index on ties.
    heap = list(zip((-np.asarray(upper_bounds, dtype=np.float64)).tolist(), range(n)))
    heapq.heapify(heap)
    fresh = np.full(n, -1, dtype=np.int64)  # step at which a heap key was last recomputed
    order: list[int] = []
    gains: list[float] = []
    step = 0
    while len(order) < budget and heap:
        neg, c = heapq.heappop(heap)
        if fresh[c] != step:
            g = gain(c)
            fresh[c] = step
            # Every other key is an upper bound of its gain: c wins if it still beats the top.
            if heap and (-g, c) > heap[0]:
                heapq.heappush(heap, (-g, c))
                continue
            neg = -g
        if stop_when_zero and neg >= 0.0:
            break
        select(c)
        order.append(c)
        gains.append(-neg)
        step += 1
    return GreedyResult(np.asarray(order, dtype=np.int64), np.asarray(gains, dtype=np.float64))


def stochastic_greedy(
    n: int,
    batch_gains: Callable[[np.ndarray], np.ndarray],
    select: Callable[[int], None],
    budget: int,
    *,
    epsilon: float,
    rng: np.random.Generator,
    is_done: Callable[[], bool] | None = None,
    drop_zero: bool = False,
    sample_budget: int | None = None,
) -> GreedyResult:
    """Stochastic greedy (Mirzasoleiman et al. 2015): each step scans a random sample.

    Each step draws ``s = ceil(n / budget * log(1 / epsilon))`` of the remaining candidates
    without replacement and picks the best of them (lowest index on ties); in expectation a
    (1 - 1/e - epsilon) approximation with O(n log 1/epsilon) gain evaluations in total.

    Parameters
    ----------
    n : number of candidates.
    batch_gains : current gains of an int64 array of candidates.
    select : called once per pick.
    budget : number of picks (at most n).
    epsilon : in (0, 1).
    rng : the seeded generator that draws the samples.
    is_done : stop early when it returns True (set cover: everything covered).
    drop_zero : never pick a zero-gain candidate (set cover); facility location keeps
        filling its budget like naive greedy does.
    sample_budget : the k used to size the samples when ``budget`` is only a cap (set cover
        without a budget passes its expected number of picks); defaults to ``budget``.
    """
    if not 0.0 < epsilon < 1.0:
        raise ValueError(f"option --epsilon must be in (0, 1) for stochastic greedy, got {epsilon}")
    budget = min(int(budget), n)
    if budget == 0:
        return GreedyResult(np.empty(0, np.int64), np.empty(0, np.float64))
    k = min(max(1, sample_budget or budget), budget)
    sample_size = max(1, math.ceil(n / k * math.log(1.0 / epsilon)))
    remaining = np.arange(n, dtype=np.int64)  # unselected candidates (order irrelevant)
    m = n
    order: list[int] = []
    gains: list[float] = []
    while len(order) < budget and m > 0 and not (is_done is not None and is_done()):
        pos = rng.choice(m, size=sample_size, replace=False) if sample_size < m else np.arange(m)
        cand = remaining[pos]
        g = batch_gains(cand)
        best = g.max()
        if drop_zero and best <= 0.0:
            # Gains never grow, so zero-gain candidates can never be useful picks: forget them.
            keep = np.ones(m, dtype=bool)
            keep[pos] = False
            remaining = remaining[:m][keep]
            m = remaining.size
            continue
        winners = g == best
        j = int(np.flatnonzero(winners)[np.argmin(cand[winners])])
        c = int(cand[j])
        select(c)
        order.append(c)
        gains.append(float(best))
        # O(1) removal: move the last remaining candidate into the freed slot.
        remaining[pos[j]] = remaining[m - 1]
        m -= 1
    return GreedyResult(np.asarray(order, dtype=np.int64), np.asarray(gains, dtype=np.float64))


def row_positions(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions into a CSR's ``data``/``indices`` of the given rows, and their row lengths.

    Vectorised gather used by batch gain evaluations (no Python loop over rows).
    """
    starts = indptr[rows]
    lens = indptr[rows + 1] - starts
    offsets = np.repeat(starts - (np.cumsum(lens) - lens), lens)
    return offsets + np.arange(int(lens.sum()), dtype=np.int64), lens
