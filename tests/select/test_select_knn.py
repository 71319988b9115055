"""kNN graph and range search against brute force on small random data."""

from __future__ import annotations

import numpy as np
import pytest

from winnow.stages.select.knn import (
    IndexSpec,
    graph_from_neighbors,
    knn_graph,
    knn_search,
    normalize,
    pair_sq_distances,
    range_search,
)


def _data(n=200, d=16, seed=0):
    rng = np.random.default_rng(seed)
    return normalize(rng.normal(size=(n, d)))


def _dense_sim(x_hat):
    return (1.0 + x_hat.astype(np.float64) @ x_hat.T.astype(np.float64)) / 2.0


def test_normalize_unit_rows_and_zero_rows_get_their_own_axis():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [0.0, 0.0]])
    out = normalize(x)
    # Zero rows: identical to each other, orthogonal to the rest.
    np.testing.assert_allclose(out, [[0.6, 0.8, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]], rtol=1e-6)
    assert out.dtype == np.float32 and out.flags.c_contiguous and x[0, 0] == 3.0  # input untouched
    assert normalize(x[:1]).shape == (1, 2)  # no zero row: no extra column


def _duplicates(copies=20, d=256):
    """Two random directions, each repeated; their float32 self inner products are 1 - 1.2e-7."""
    a, b = (np.random.default_rng(seed).normal(size=d) for seed in (7, 15))
    return normalize(np.vstack([np.repeat(a[None], copies, 0), np.repeat(b[None], copies, 0)]))


def test_duplicates_have_similarity_exactly_one():
    x = _duplicates()
    ids, sims, _ = knn_search(x, 5, IndexSpec(kind="exact"))
    assert ((ids < 20) == (np.arange(40) < 20)[:, None]).all()  # neighbours are the copies
    assert (sims == 1.0).all()


@pytest.mark.parametrize("radius", [0.0, 1e-6, 1e-4, 3e-4, 1e-3])
def test_range_search_puts_duplicates_in_each_others_ball(radius):
    x = _duplicates()
    ball, _ = range_search(x, radius, IndexSpec(kind="exact"))
    group = np.arange(40) // 20
    expected = group[:, None] == group[None, :]
    coo = ball.tocoo()
    got = np.zeros((40, 40), bool)
    got[coo.row, coo.col] = True
    np.testing.assert_array_equal(got, expected)
    assert (ball.data == 0).all()  # duplicates are at distance exactly 0


def test_range_search_is_inclusive_at_the_radius():
    x = _data(30, 8, seed=4)
    r = float(np.sqrt(pair_sq_distances(x, [0], [1])[0]))  # a realised distance
    ball, _ = range_search(x, r, IndexSpec(kind="exact"))
    assert ball[0, 1] == pytest.approx(r * r) and 1 in ball[0].indices and 0 in ball[1].indices


def test_zero_vectors_are_each_others_nearest_neighbours():
    rng = np.random.default_rng(2)
    x = normalize(np.vstack([np.zeros((4, 6)), rng.normal(size=(6, 6))]))
    ids, sims, _ = knn_search(x, 3, IndexSpec(kind="exact"))
    assert (ids[:4] < 4).all() and (sims[:4] == 1.0).all()
    assert (ids[4:] >= 4).all() or np.allclose(sims[4:][ids[4:] < 4], 0.5)
    ball, _ = range_search(x, 1.0, IndexSpec(kind="exact"))
    np.testing.assert_array_equal(ball[:4].indices, np.tile(np.arange(4), 4))  # only each other
    assert (ball[:4].data == 0).all()


def test_knn_search_matches_brute_force():
    x = _data()
    k = 7
    ids, sims, kind = knn_search(x, k, IndexSpec(kind="exact"))
    assert kind == "exact" and ids.shape == (200, k)
    s = _dense_sim(x)
    np.fill_diagonal(s, -np.inf)
    ref = np.argsort(-s, axis=1, kind="stable")[:, :k]
    # Same neighbour sets (no ties in continuous data), similarities per the documented formula.
    assert all(set(a) == set(b) for a, b in zip(ids, ref))
    np.testing.assert_allclose(sims, np.take_along_axis(s, ids, axis=1), atol=1e-6)
    assert (ids != np.arange(200)[:, None]).all()


def test_graph_symmetric_diagonal_one_and_sparse():
    x = _data(150)
    k = 5
    w, _ = knn_graph(x, k, IndexSpec(kind="exact"))
    assert w.shape == (150, 150)
    assert abs(w - w.T).max() == 0
    np.testing.assert_array_equal(w.diagonal(), np.ones(150, np.float32))
    assert w.nnz <= 150 * (2 * k + 1)
    assert w.data.min() >= 0 and w.data.max() <= 1
    # Every listed neighbour is in the graph with its similarity.
    ids, sims, _ = knn_search(x, k, IndexSpec(kind="exact"))
    dense = w.toarray()
    np.testing.assert_allclose(dense[np.arange(150)[:, None], ids], sims, atol=1e-7)


def test_duplicates_keep_self_out_of_neighbour_list():
    x = normalize(np.repeat(np.eye(3), 4, axis=0))  # 3 groups of 4 identical points
    ids, sims, _ = knn_search(x, 3, IndexSpec(kind="exact"))
    assert (ids != np.arange(12)[:, None]).all()
    np.testing.assert_allclose(sims, 1.0)
    w = graph_from_neighbors(ids, sims)
    assert w[0, 0] == 1.0 and w.nnz == 12 * 4  # each group is a 4-clique with itself


def test_k_larger_than_class_is_clipped():
    x = _data(4)
    ids, sims, _ = knn_search(x, 10, IndexSpec(kind="exact"))
    assert ids.shape == (4, 3)
    ids, sims, _ = knn_search(x[:1], 10, IndexSpec(kind="exact"))
    assert ids.shape == (1, 0)


def test_range_search_matches_brute_force():
    x = _data(120, 8, seed=3)
    r = 0.9
    ball, _ = range_search(x, r, IndexSpec(kind="exact"))
    d2 = np.maximum(2.0 - 2.0 * (x.astype(np.float64) @ x.T), 0.0)
    ref = d2 < r * r
    np.fill_diagonal(ref, True)
    got = np.zeros_like(ref)
    coo = ball.tocoo()
    got[coo.row, coo.col] = True
    # Only pairs within float error of the boundary may disagree.
    diff = got != ref
    assert np.all(np.abs(d2[diff] - r * r) < 1e-5)
    np.testing.assert_allclose(ball.toarray()[got], d2[got], atol=1e-5)
    assert (ball.diagonal() == 0).all() and ball.getnnz(axis=1).min() >= 1


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_have_high_recall_on_easy_data(kind):
    rng = np.random.default_rng(1)
    x = normalize(rng.normal(size=(2000, 16)))
    spec = IndexSpec(kind=kind, nprobe=16, seed=0)
    ids, _, used = knn_search(x, 5, spec)
    ref, _, _ = knn_search(x, 5, IndexSpec(kind="exact"))
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(ids, ref)])
    assert used == kind and recall >= 0.9


def test_auto_switches_on_threshold():
    assert IndexSpec(kind="auto", exact_threshold=100).resolve(100) == "exact"
    assert IndexSpec(kind="auto", exact_threshold=100).resolve(101) == "ivf"
    assert IndexSpec(kind="hnsw").resolve(5) == "hnsw"


def test_many_duplicates_when_self_is_not_returned():
    # 6 identical points, k=2: FAISS may return 3 other copies and not self; still k non-self ids.
    x = normalize(np.ones((6, 4)))
    ids, sims, _ = knn_search(x, 2, IndexSpec(kind="exact"))
    assert ids.shape == (6, 2) and (ids != np.arange(6)[:, None]).all() and (ids >= 0).all()
