"""Facility location on a sparse similarity graph: F(S) = sum_i max_{j in S} sim(i, j).

The seed: "select facilities such that the total distance to them is minimised". With the
similarity of :mod:`winnow.stages.select.knn` (1 - squared distance / 4 on the unit sphere) this is
the same problem stated as a maximisation. On the kNN graph, ``sim(i, j)`` is 0 for pairs that
are not neighbours, so every gain evaluation touches one sparse row (O(k)), never n.

The marginal gain of candidate c given the current coverage ``cur[i] = max_{j in S} sim(i, j)``
is ``sum_i max(0, sim(i, c) - cur[i])`` over the non-zeros of row c (the graph is symmetric).
Unlike the published CRAIG code, every index (0 included) is evaluated the same way.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from winnow.stages.select.greedy import GreedyResult, lazy_greedy, row_positions, stochastic_greedy


def facility_location_greedy(
    graph: sp.csr_matrix,
    budget: int,
    *,
    epsilon: float = 0.0,
    rng: np.random.Generator | None = None,
) -> GreedyResult:
    """Greedy facility location on a symmetric sparse similarity graph.

    Parameters
    ----------
    graph : (n, n) CSR, symmetric, similarities in [0, 1], sorted indices.
    budget : number of medoids to pick (clipped to n).
    epsilon : 0 for lazy greedy (exactly naive greedy's picks, lowest index on ties);
        in (0, 1) for stochastic greedy, which then needs ``rng``.
    rng : seeded generator for stochastic greedy.

    Returns
    -------
    GreedyResult: ``order`` (m,) rows in selection order, ``gains`` (m,) marginal gains.
    """
    n = graph.shape[0]
    if graph.shape != (n, n):
        raise ValueError(f"facility location needs a square graph, got shape {graph.shape}")
    indptr, indices = graph.indptr, graph.indices
    data = graph.data.astype(np.float64)
    cur = np.zeros(n, dtype=np.float64)

    def gain(c: int) -> float:
        s, e = indptr[c], indptr[c + 1]
        return float(np.maximum(data[s:e] - cur[indices[s:e]], 0.0).sum())

    def batch_gains(rows: np.ndarray) -> np.ndarray:
        pos, lens = row_positions(indptr, rows)
        d = np.maximum(data[pos] - cur[indices[pos]], 0.0)
        return np.bincount(np.repeat(np.arange(len(rows)), lens), weights=d, minlength=len(rows))

    def select(c: int) -> None:
        s, e = indptr[c], indptr[c + 1]
        nb = indices[s:e]
        cur[nb] = np.maximum(cur[nb], data[s:e])

    if epsilon > 0.0:
        if rng is None:
            raise ValueError("stochastic greedy (--epsilon > 0) needs a seeded rng")
        return stochastic_greedy(n, batch_gains, select, budget, epsilon=epsilon, rng=rng)
    # Gains on the empty set are the row sums: the initial (exact) heap keys.
    upper = np.bincount(np.repeat(np.arange(n), np.diff(indptr)), weights=data, minlength=n)
    return lazy_greedy(upper, gain, select, budget)


def graph_objective(graph: sp.csr_matrix, selected: np.ndarray) -> float:
    """F(S) on the graph: sum over all rows of the largest similarity to a selected row.

    Parameters
    ----------
    graph : (n, n) CSR similarity graph.
    selected : int array of selected rows (or a boolean mask of length n).
    """
    cols = graph[:, selected] if selected.dtype != bool else graph[:, np.flatnonzero(selected)]
    if cols.shape[1] == 0:
        return 0.0
    return float(cols.max(axis=1).toarray().sum(dtype=np.float64))


def graph_coverage(graph: sp.csr_matrix, selected: np.ndarray) -> float:
    """Fraction of rows with a graph edge (or identity) to a selected row, in [0, 1]."""
    n = graph.shape[0]
    if n == 0:
        return 0.0
    cols = graph[:, selected]
    return float((cols.getnnz(axis=1) > 0).mean())
