"""Greedy set cover of radius-r balls (the seed: "points ordered by number of neighbours within r").

The ball of a point holds every point at L2 distance <= r from it on the unit sphere (FAISS
range search checked in float64, see :func:`winnow.stages.select.knn.range_search`); a point always
lies in its own ball, and so do its exact duplicates, however small r is. Greedy picks
the point whose ball holds the most still-uncovered points, until every point is covered or
the budget is spent. Each pick's ``coreset_weight`` is the number of points it covered first.

Weighting (``--set-cover-weighting``):

- ``count``: the gain of c is the number of uncovered points in its ball;
- ``density``: the seed's "weighted calculation based on the density of the ball": each
  uncovered point j in the ball counts ``1 - ||x_c - x_j||^2 / r^2`` (an Epanechnikov kernel
  density of the uncovered points at c), so centres in the dense core of a ball win over
  centres whose ball merely grazes many points.

Gains only shrink as points get covered, so lazy greedy gives exactly naive greedy's picks.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from winnow.stages.select.greedy import GreedyResult, lazy_greedy, row_positions, stochastic_greedy
from winnow.stages.select.knn import EPS32, IndexSpec, knn_search, pair_sq_distances

# The smallest distance FAISS's float32 inner products resolve on the unit sphere: 1 - 2^-24
# is the largest float32 below 1, i.e. d^2 = 2 - 2 (1 - 2^-24) = 2 eps32. An automatic radius
# below it would describe rounding, not the data; the ball test itself is exact at any radius.
MIN_RADIUS = math.sqrt(2.0 * EPS32)


def default_radius(x_hat: np.ndarray, k: int, spec: IndexSpec) -> float:
    """Median distance to the k-th nearest neighbour, at least MIN_RADIUS (the default ``--radius``).

    A ball of this radius holds about k + 1 points around a typical point, so the cover needs
    on the order of n / (k + 1) centres: with the default k = 10 that is close to the default
    10 % budget. When most points have k exact duplicates the median is 0; MIN_RADIUS (about
    4.9e-4) then makes each ball hold a point's duplicates, and the cover picks one centre per
    distinct vector. Returns a value in [MIN_RADIUS, 2]; 2 (the whole sphere) for a single point.
    """
    ids, _, _ = knn_search(x_hat, k, spec)
    if ids.shape[1] == 0:
        return 2.0
    found = np.flatnonzero(ids[:, -1] >= 0)
    if found.size == 0:
        return 2.0
    # Exact float64 distances (the ball test's own), so the k-th neighbour of the median point
    # is inside the (inclusive) ball of this radius.
    d2 = pair_sq_distances(x_hat, found, ids[found, -1])
    return min(2.0, max(math.sqrt(float(np.median(d2))), MIN_RADIUS))


def ball_weights(ball: sp.csr_matrix, radius: float, weighting: str) -> sp.csr_matrix:
    """Per-pair weights from squared distances: 1 (count) or ``1 - d^2 / r^2`` (density)."""
    w = ball.copy()
    if weighting == "count":
        w.data = np.ones_like(w.data, dtype=np.float64)
    elif weighting == "density":
        w.data = np.clip(1.0 - w.data.astype(np.float64) / (radius * radius), 0.0, 1.0)
    else:
        raise ValueError(f"option --set-cover-weighting: {weighting!r} is not one of count, density")
    return w


def greedy_set_cover(
    ball: sp.csr_matrix,
    radius: float,
    budget: int,
    *,
    weighting: str = "count",
    epsilon: float = 0.0,
    rng: np.random.Generator | None = None,
) -> tuple[GreedyResult, np.ndarray]:
    """Greedy set cover over precomputed balls.

    Parameters
    ----------
    ball : (n, n) CSR; row c holds the squared distances of the points in c's ball (self
        included, stored as an explicit 0).
    radius : the ball radius (> 0), used by the density weighting.
    budget : at most this many centres; 0 = no limit (stop when everything is covered).
    weighting : ``count`` or ``density``.
    epsilon : 0 for lazy greedy; in (0, 1) for stochastic greedy with ``rng``.

    Returns
    -------
    result : GreedyResult, ``order`` the centres in selection order, ``gains`` their gains.
    first_cover : (n,) int64, the centre that covered each point first; -1 if never covered.
    """
    n = ball.shape[0]
    if radius <= 0:
        raise ValueError(f"set cover needs a radius > 0, got {radius}")
    w = ball_weights(ball, radius, weighting)
    indptr, indices, data = w.indptr, w.indices, w.data
    uncovered = np.ones(n, dtype=np.float64)  # 1.0 while uncovered: gains are dot products
    first_cover = np.full(n, -1, dtype=np.int64)

    def gain(c: int) -> float:
        s, e = indptr[c], indptr[c + 1]
        return float(data[s:e] @ uncovered[indices[s:e]])

    def batch_gains(rows: np.ndarray) -> np.ndarray:
        pos, lens = row_positions(indptr, rows)
        d = data[pos] * uncovered[indices[pos]]
        return np.bincount(np.repeat(np.arange(len(rows)), lens), weights=d, minlength=len(rows))

    def select(c: int) -> None:
        nb = indices[indptr[c] : indptr[c + 1]]
        newly = nb[uncovered[nb] > 0]
        first_cover[newly] = c
        uncovered[newly] = 0.0

    limit = n if budget <= 0 else min(int(budget), n)
    if epsilon > 0.0:
        if rng is None:
            raise ValueError("stochastic greedy (--epsilon > 0) needs a seeded rng")
        result = stochastic_greedy(
            n, batch_gains, select, limit, epsilon=epsilon, rng=rng, is_done=lambda: not uncovered.any(),
            drop_zero=True,
            # Without a budget, size samples for the expected cover size n / (mean ball size).
            sample_budget=limit if budget > 0 else max(1, round(n * n / max(ball.nnz, 1))),
        )
    else:
        upper = np.bincount(np.repeat(np.arange(n), np.diff(indptr)), weights=data, minlength=n)
        result = lazy_greedy(upper, gain, select, limit, stop_when_zero=True)
    return result, first_cover
