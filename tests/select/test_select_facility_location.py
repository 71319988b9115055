"""Facility location greedy against a naive O(n^2) dense reference, plus known answers."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from winnow.stages.select.facility_location import facility_location_greedy, graph_coverage, graph_objective
from winnow.stages.select.knn import IndexSpec, knn_graph, normalize


def naive_greedy(sim: np.ndarray, budget: int) -> tuple[list[int], list[float]]:
    """Textbook greedy on a dense similarity matrix: argmax of the exact gain (lowest index on ties)."""
    n = sim.shape[0]
    cur = np.zeros(n)
    chosen: list[int] = []
    gains: list[float] = []
    for _ in range(budget):
        g = np.array([np.maximum(sim[:, c] - cur, 0.0).sum() for c in range(n)])
        g[chosen] = -np.inf
        c = int(np.argmax(g))
        chosen.append(c)
        gains.append(float(g[c]))
        cur = np.maximum(cur, sim[:, c])
    return chosen, gains


def random_graph(n: int, density: float, seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    a = sp.random(n, n, density=density, random_state=rng, dtype=np.float64)
    a.data = rng.uniform(0.05, 0.95, size=a.nnz)
    w = a.maximum(a.T).tolil()
    w.setdiag(1.0)
    w = w.tocsr().astype(np.float32)
    w.sort_indices()
    return w


@pytest.mark.parametrize("seed", range(6))
def test_lazy_greedy_order_equals_naive_greedy(seed):
    n = 60 + 10 * seed
    w = random_graph(n, 0.08, seed)
    budget = n // 3
    res = facility_location_greedy(w, budget)
    ref, ref_gains = naive_greedy(w.toarray().astype(np.float64), budget)
    assert res.order.tolist() == ref
    np.testing.assert_allclose(res.gains, ref_gains, rtol=1e-9, atol=1e-9)


def test_complete_graph_equals_dense_greedy_on_vectors():
    rng = np.random.default_rng(7)
    x = normalize(rng.normal(size=(40, 6)))
    w, _ = knn_graph(x, 39, IndexSpec(kind="exact"))  # k = n-1: the dense similarity itself
    dense = (1.0 + x.astype(np.float64) @ x.T) / 2.0
    np.fill_diagonal(dense, 1.0)
    np.testing.assert_allclose(w.toarray(), dense, atol=1e-6)
    res = facility_location_greedy(w, 8)
    ref, _ = naive_greedy(w.toarray().astype(np.float64), 8)
    assert res.order.tolist() == ref


def test_ties_go_to_lowest_index_like_naive_greedy():
    # All similarities equal: the first pick covers everything; later gains are all 0 and
    # naive greedy fills the budget with the lowest remaining indices.
    w = sp.csr_matrix(np.ones((5, 5), dtype=np.float32))
    res = facility_location_greedy(w, 3)
    assert res.order.tolist() == [0, 1, 2] == naive_greedy(w.toarray(), 3)[0]
    np.testing.assert_allclose(res.gains, [5.0, 0.0, 0.0])


def test_index_zero_gain_is_recomputed_like_any_other():
    """Regression: CRAIG's reference code keeps element 0's gain constant once S is non-empty.

    Row 1 is the best centre and makes row 0 (its near-duplicate) worthless; a correct greedy
    must then pick the far point 3, never 0.
    """
    sim = np.array(
        [
            [1.0, 0.95, 0.9, 0.0],
            [0.95, 1.0, 0.95, 0.0],
            [0.9, 0.95, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    w = sp.csr_matrix(sim.astype(np.float32))
    res = facility_location_greedy(w, 2)
    assert res.order.tolist() == [1, 3] == naive_greedy(sim, 2)[0]
    # The same instance with the roles of 0 and 1 swapped gives the mirrored answer.
    p = np.array([1, 0, 2, 3])
    res_p = facility_location_greedy(sp.csr_matrix(sim[np.ix_(p, p)].astype(np.float32)), 2)
    assert res_p.order.tolist() == [0, 3]


@pytest.mark.parametrize("seed", range(3))
def test_permuting_inputs_permutes_the_selection(seed):
    w = random_graph(80, 0.1, 100 + seed)
    perm = np.random.default_rng(seed).permutation(80)
    res = facility_location_greedy(w, 20)
    res_p = facility_location_greedy(w[perm][:, perm].tocsr(), 20)
    # Same gain sequence whatever the row order; the picks agree up to the first exact tie
    # (adjacent rows whose other neighbours are covered tie structurally; index order decides).
    np.testing.assert_allclose(res_p.gains, res.gains, rtol=1e-12)
    ref = w.toarray().astype(np.float64)
    cur = np.zeros(80)
    for step, (a, b) in enumerate(zip(res.order, perm[res_p.order])):
        g = np.maximum(ref - cur[:, None], 0).sum(axis=0)
        g[res.order[:step]] = -np.inf
        if np.sum(np.isclose(g, g.max(), rtol=1e-12, atol=0)) > 1:
            break
        assert a == b, f"step {step}: {a} != {b} without a tie"
        cur = np.maximum(cur, ref[:, a])


def test_known_answer_two_clusters_pick_one_centre_each():
    # Two tight clusters on the sphere; the medoid of each is its middle point.
    angles = np.array([0.0, 0.1, 0.2, 2.0, 2.1, 2.2])
    x = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    w, _ = knn_graph(normalize(x), 2, IndexSpec(kind="exact"))
    res = facility_location_greedy(w, 2)
    assert sorted(res.order.tolist()) == [1, 4]
    assert graph_coverage(w, res.order) == 1.0
    assert graph_objective(w, res.order) == pytest.approx(w.toarray()[:, [1, 4]].max(axis=1).sum())


def test_stochastic_greedy_is_seeded_and_close_to_lazy():
    w = random_graph(400, 0.03, 11)
    a = facility_location_greedy(w, 40, epsilon=0.05, rng=np.random.default_rng(3))
    b = facility_location_greedy(w, 40, epsilon=0.05, rng=np.random.default_rng(3))
    c = facility_location_greedy(w, 40, epsilon=0.05, rng=np.random.default_rng(4))
    lazy = facility_location_greedy(w, 40)
    assert a.order.tolist() == b.order.tolist() and a.order.tolist() != c.order.tolist()
    assert len(set(a.order.tolist())) == 40
    assert graph_objective(w, a.order) >= 0.9 * graph_objective(w, lazy.order)
    # Gains recorded are the true marginal gains of the sequence.
    np.testing.assert_allclose(a.gains.sum(), graph_objective(w, a.order), rtol=1e-9)


def test_stochastic_greedy_needs_rng():
    with pytest.raises(ValueError, match="rng"):
        facility_location_greedy(random_graph(10, 0.2, 0), 2, epsilon=0.1)


def test_gains_sum_to_objective_and_budget_clipped():
    w = random_graph(30, 0.2, 5)
    res = facility_location_greedy(w, 100)
    assert len(res.order) == 30 and sorted(res.order.tolist()) == list(range(30))
    assert res.gains.sum() == pytest.approx(graph_objective(w, res.order[:30]))
    assert np.all(np.diff(res.gains) <= 1e-12)  # diminishing returns
