"""Greedy set cover against a naive dense reference; full coverage with exact range search."""

from __future__ import annotations

import numpy as np
import pytest

from winnow.stages.select.knn import IndexSpec, knn_search, normalize, range_search
from winnow.stages.select.set_cover import MIN_RADIUS, ball_weights, default_radius, greedy_set_cover


def naive_set_cover(weights: np.ndarray, budget: int) -> tuple[list[int], list[float]]:
    """weights[c, j] > 0 iff j is in c's ball; pick max sum over uncovered j, lowest index on ties."""
    n = weights.shape[0]
    uncovered = np.ones(n)
    chosen: list[int] = []
    gains: list[float] = []
    while len(chosen) < (budget or n) and uncovered.any():
        g = np.array([float(weights[c] @ uncovered) for c in range(n)])
        g[chosen] = -np.inf
        c = int(np.argmax(g))
        chosen.append(c)
        gains.append(float(g[c]))
        uncovered[weights[c] > 0] = 0
    return chosen, gains


def _points(n=150, d=5, seed=0):
    return normalize(np.random.default_rng(seed).normal(size=(n, d)))


@pytest.mark.parametrize("weighting", ["count", "density"])
@pytest.mark.parametrize("seed", range(3))
def test_lazy_set_cover_equals_naive(weighting, seed):
    x = _points(seed=seed)
    r = 0.8
    ball, _ = range_search(x, r, IndexSpec(kind="exact"))
    res, first = greedy_set_cover(ball, r, 0, weighting=weighting)
    mask = np.zeros((len(x), len(x)), dtype=bool)
    coo = ball.tocoo()
    mask[coo.row, coo.col] = True  # members, explicit zeros (self) included
    w = ball_weights(ball, r, weighting).toarray()
    # Boundary points have density weight 0 but are still members: keep them marked.
    w = np.where(mask, np.maximum(w, 1e-300), 0.0)
    ref, ref_gains = naive_set_cover(w, 0)
    assert res.order.tolist() == ref
    np.testing.assert_allclose(res.gains, ref_gains, rtol=1e-9, atol=1e-12)


def test_exact_range_search_covers_every_point_and_weights_count_first_covers():
    x = _points(300, 4, seed=5)
    r = 0.5
    ball, _ = range_search(x, r, IndexSpec(kind="exact"))
    res, first = greedy_set_cover(ball, r, 0)
    assert (first >= 0).all()  # every point ends covered
    assert set(np.unique(first)) == set(res.order.tolist())
    counts = np.bincount(first, minlength=300)
    np.testing.assert_array_equal(counts[res.order], res.gains)  # count gain = points covered first
    assert counts.sum() == 300
    # Each point's coverer really is within r of it.
    d2 = np.maximum(2 - 2 * np.einsum("ij,ij->i", x, x[first]), 0)
    assert (np.sqrt(d2) < r + 1e-5).all()


def test_budget_stops_early_and_leaves_points_uncovered():
    x = _points(200, 6, seed=2)
    ball, _ = range_search(x, 0.4, IndexSpec(kind="exact"))
    res, first = greedy_set_cover(ball, 0.4, 5)
    assert len(res.order) == 5
    assert (first == -1).sum() == 200 - res.gains.sum()


def test_known_answer_on_a_line():
    # Points at angles 0..6 * 0.1 on a circle; radius just over one step: ball(c) = {c-1, c, c+1}.
    ang = np.arange(7) * 0.1
    x = normalize(np.stack([np.cos(ang), np.sin(ang)], axis=1))
    step = float(np.linalg.norm(x[1] - x[0]))
    ball, _ = range_search(x, step * 1.01, IndexSpec(kind="exact"))
    res, first = greedy_set_cover(ball, step * 1.01, 0)
    # 1 covers {0,1,2} (1..5 tie at 3: lowest index); then 4 covers {3,4,5} (4 and 5 tie at 3);
    # then only 6 is left, which 5 and 6 both cover: lowest index 5 wins.
    assert res.order.tolist() == [1, 4, 5]
    assert first.tolist() == [1, 1, 1, 4, 4, 4, 5]


def test_density_weighting_prefers_the_core_of_a_ball():
    # Same counts, but candidate 1 sits in the middle of its neighbours: density picks it.
    x = normalize(np.array([[1.0, 0.0], [1.0, 0.05], [1.0, 0.1], [1.0, 0.15]]))
    r = float(np.linalg.norm(x[3] - x[0])) * 1.01
    ball, _ = range_search(x, r, IndexSpec(kind="exact"))
    count, _ = greedy_set_cover(ball, r, 1, weighting="count")
    dens, _ = greedy_set_cover(ball, r, 1, weighting="density")
    assert count.order.tolist() == [0]  # all 4 balls hold everything: lowest index
    assert dens.order[0] in (1, 2)


def test_default_radius_is_median_kth_neighbour_distance():
    x = _points(100, 3, seed=9)
    r = default_radius(x, 5, IndexSpec(kind="exact"))
    ids, sims, _ = knn_search(x, 5, IndexSpec(kind="exact"))
    d = np.sqrt(4 * (1 - sims[:, -1].astype(np.float64)))
    assert r == pytest.approx(np.sqrt(np.median(d**2)), rel=1e-5)
    assert default_radius(x[:1], 5, IndexSpec(kind="exact")) == 2.0


def test_stochastic_set_cover_still_covers_everything_and_is_seeded():
    x = _points(200, 4, seed=4)
    ball, _ = range_search(x, 0.6, IndexSpec(kind="exact"))
    a, fa = greedy_set_cover(ball, 0.6, 0, epsilon=0.1, rng=np.random.default_rng(0))
    b, fb = greedy_set_cover(ball, 0.6, 0, epsilon=0.1, rng=np.random.default_rng(0))
    assert (fa >= 0).all() and a.order.tolist() == b.order.tolist()
    assert (a.gains > 0).all()  # zero-gain picks are never made


def test_rejects_bad_radius_and_weighting():
    x = _points(10)
    ball, _ = range_search(x, 0.5, IndexSpec(kind="exact"))
    with pytest.raises(ValueError, match="radius"):
        greedy_set_cover(ball, 0.0, 0)
    with pytest.raises(ValueError, match="set-cover-weighting"):
        greedy_set_cover(ball, 0.5, 0, weighting="nope")


# --- duplicates and zero vectors ------------------------------------------------------------


def _two_vectors(copies=20, d=8):
    """Two random vectors, each repeated (duplicated images, say); raw, not normalised.

    The seeds are ones whose normalised float32 self inner product (FAISS's) rounds below 1.
    """
    seeds = {8: (2, 9), 512: (2, 7)}[d]
    a, b = (np.random.default_rng(seed).normal(size=d).astype(np.float32) for seed in seeds)
    return np.vstack([np.repeat(a[None], copies, 0), np.repeat(b[None], copies, 0)])


def test_default_radius_of_duplicates_is_min_radius_and_holds_them():
    x = normalize(_two_vectors())
    r = default_radius(x, 10, IndexSpec(kind="exact"))
    assert r == pytest.approx(MIN_RADIUS) and 4e-4 < r < 5e-4  # median k-th distance is 0
    ball, _ = range_search(x, r, IndexSpec(kind="exact"))
    assert (ball.getnnz(axis=1) == 20).all()


@pytest.mark.parametrize("weighting", ["count", "density"])
@pytest.mark.parametrize("d", [8, 512])
def test_lazy_set_cover_equals_naive_with_duplicates(weighting, d):
    # Duplicates of a few points plus distinct ones: ties everywhere, broken by lowest index.
    rng = np.random.default_rng(d)
    base = rng.normal(size=(30, d))
    x = normalize(base[rng.integers(0, 30, 90)])
    r = 0.9 * float(np.sqrt(np.median(2 - 2 * (x @ x.T))))
    ball, _ = range_search(x, r, IndexSpec(kind="exact"))
    res, _ = greedy_set_cover(ball, r, 0, weighting=weighting)
    mask = np.zeros((90, 90), dtype=bool)
    coo = ball.tocoo()
    mask[coo.row, coo.col] = True
    w = np.where(mask, np.maximum(ball_weights(ball, r, weighting).toarray(), 1e-300), 0.0)
    ref, ref_gains = naive_set_cover(w, 0)
    assert res.order.tolist() == ref
    np.testing.assert_allclose(res.gains, ref_gains, rtol=1e-9, atol=1e-12)
