"""The select() core, CRAIG weights, budget split, online re-selection and params."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from winnow.stages.select import SelectParams, reselect, select, split_budget
from winnow.stages.select.craig import assign_to_medoids, craig_weights
from winnow.stages.select.knn import normalize


def blobs(n=600, d=16, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, 5, d))
    labels = rng.integers(0, classes, n)
    comp = rng.integers(0, 5, n)
    x = centres[labels, comp] + 0.3 * rng.normal(size=(n, d))
    return x.astype(np.float32), labels.astype(np.int32)


# --- CRAIG weights ---------------------------------------------------------------------------


def test_assignment_is_the_most_similar_medoid_over_all_medoids():
    rng = np.random.default_rng(1)
    x = normalize(rng.normal(size=(300, 8)))
    medoids = rng.choice(300, 30, replace=False)
    assign, sim = assign_to_medoids(x, medoids)
    dense = (1 + x.astype(np.float64) @ x[medoids].T.astype(np.float64)) / 2
    ref = medoids[np.argmax(dense, axis=1)]
    ref[medoids] = medoids
    np.testing.assert_array_equal(assign, ref)
    np.testing.assert_allclose(sim, np.where(np.isin(np.arange(300), medoids), 1.0, dense.max(axis=1)), atol=1e-6)
    w = craig_weights(assign, 300)
    assert w.sum() == 300 and (w[medoids] >= 1).all() and w[~np.isin(np.arange(300), medoids)].sum() == 0


def test_duplicate_medoids_each_keep_themselves():
    x = normalize(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    assign, _ = assign_to_medoids(x, np.array([0, 1]))
    assert assign[0] == 0 and assign[1] == 1


# --- select() --------------------------------------------------------------------------------


def test_facility_location_columns_weights_and_objective():
    x, y = blobs()
    eligible = np.ones(len(y), bool)
    eligible[::50] = False  # e.g. rows with an error
    x[::50] = np.nan  # ... whose vectors may be garbage
    res = select(x, y, eligible, SelectParams(budget=0.1, k=8))
    c = res.columns
    n = len(y)
    assert set(c) == {"selected", "cluster_id", "coreset_weight", "gain", "rank"}
    assert all(len(v) == n for v in c.values())
    assert c["selected"].dtype == bool and c["cluster_id"].dtype == np.int64
    assert c["coreset_weight"].dtype == np.float32 and c["gain"].dtype == np.float32
    assert c["rank"].dtype == np.int32
    # Ineligible rows are untouched.
    assert not c["selected"][~eligible].any() and (c["cluster_id"][~eligible] == -1).all()
    assert (c["coreset_weight"][~eligible] == 0).all() and (c["rank"][~eligible] == -1).all()
    # Budget: 10% of eligible rows overall.
    assert c["selected"].sum() == round(0.1 * eligible.sum())
    for label in np.unique(y):
        rows = np.flatnonzero(eligible & (y == label))
        sel = rows[c["selected"][rows]]
        # Weights of a class sum to its size; every row points to a selected row of its class.
        assert c["coreset_weight"][rows].sum() == len(rows)
        assert np.isin(c["cluster_id"][rows], sel).all()
        np.testing.assert_array_equal(c["cluster_id"][sel], sel)
        np.testing.assert_array_equal(np.sort(c["rank"][sel]), np.arange(len(sel)))
        assert np.isfinite(c["gain"][sel]).all() and np.isnan(c["gain"][np.setdiff1d(rows, sel)]).all()
        counts = np.bincount(c["cluster_id"][rows], minlength=n)
        np.testing.assert_array_equal(counts[sel], c["coreset_weight"][sel])
    # Reported objective is the exact dense facility location value of the selection.
    obj = 0.0
    for label in np.unique(y):
        rows = np.flatnonzero(eligible & (y == label))
        xh = normalize(x[rows]).astype(np.float64)
        sel = c["selected"][rows]
        sim = (1 + xh @ xh[sel].T) / 2
        sim[np.flatnonzero(sel), np.arange(sel.sum())] = 1.0
        obj += sim.max(axis=1).sum()
    assert res.metrics["objective"] == pytest.approx(obj, rel=1e-5)
    assert res.metrics["objective_graph"] <= res.metrics["objective"] + 1e-6
    assert 0 < res.metrics["coverage"] <= 1
    assert res.metrics["n_eligible"] == eligible.sum()


def test_selection_is_deterministic_and_thread_count_does_not_matter():
    x, y = blobs(seed=3)
    e = np.ones(len(y), bool)
    p = SelectParams(epsilon=0.1, workers=1)
    a = select(x, y, e, p, seed=5)
    b = select(x, y, e, p, seed=5)
    t = select(x, y, e, dataclasses.replace(p, workers=3), seed=5)
    for key in a.columns:
        np.testing.assert_array_equal(a.columns[key], b.columns[key])
        np.testing.assert_array_equal(a.columns[key], t.columns[key])
    other = select(x, y, e, p, seed=6)
    assert not np.array_equal(a.columns["selected"], other.columns["selected"])


def test_set_cover_through_select_covers_everything_without_budget():
    x, y = blobs(seed=4)
    e = np.ones(len(y), bool)
    res = select(x, y, e, SelectParams(method="set-cover", budget=0))
    c = res.columns
    assert res.metrics["coverage"] == 1.0
    assert (c["cluster_id"] >= 0).all() and c["coreset_weight"].sum() == len(y)
    assert c["selected"][c["cluster_id"]].all()
    assert all(m["radius"] > 0 for m in res.metrics["per_class"].values())
    # Centres cover points of their own class only.
    np.testing.assert_array_equal(y[c["cluster_id"]], y)


def test_set_cover_with_budget_and_explicit_radius():
    x, y = blobs(seed=6)
    e = np.ones(len(y), bool)
    res = select(x, y, e, SelectParams(method="set-cover", budget=9, radius=0.3, set_cover_weighting="density"))
    assert res.columns["selected"].sum() <= 9
    assert res.metrics["coverage"] < 1.0
    assert (res.columns["cluster_id"] == -1).sum() == len(y) - res.columns["coreset_weight"].sum()


@pytest.mark.parametrize("index", ["ivf", "hnsw"])
def test_approximate_indexes_run_end_to_end(index):
    x, y = blobs(n=900, seed=2)
    res = select(x, y, np.ones(len(y), bool), SelectParams(index=index, nprobe=8))
    assert all(m["index"] == index for m in res.metrics["per_class"].values())
    for label in np.unique(y):
        assert res.columns["coreset_weight"][y == label].sum() == (y == label).sum()


def test_no_eligible_rows():
    x, y = blobs(n=20)
    res = select(x, y, np.zeros(20, bool), SelectParams())
    assert not res.columns["selected"].any() and res.metrics["n_selected"] == 0


def test_bad_inputs_name_the_problem():
    x, y = blobs(n=30)
    e = np.ones(30, bool)
    bad = x.copy()
    bad[7, 0] = np.inf
    with pytest.raises(ValueError, match="row 7"):
        select(bad, y, e, SelectParams())
    with pytest.raises(ValueError, match="shape"):
        select(x, y[:-1], e, SelectParams())
    with pytest.raises(ValueError, match="boolean"):
        select(x, y, e.astype(int), SelectParams())
    neg = y.copy()
    neg[3] = -1
    with pytest.raises(ValueError, match="row 3"):
        select(x, neg, e, SelectParams())


# --- budget split ----------------------------------------------------------------------------


def test_split_budget_proportional_and_equal():
    sizes = np.array([50, 30, 20])
    np.testing.assert_array_equal(split_budget(sizes, 0.1, "proportional"), [5, 3, 2])
    np.testing.assert_array_equal(split_budget(sizes, 11, "proportional"), [6, 3, 2])  # 5.5, 3.3, 2.2
    np.testing.assert_array_equal(split_budget(sizes, 30, "equal"), [10, 10, 10])
    np.testing.assert_array_equal(split_budget(np.array([100, 3]), 20, "equal"), [17, 3])  # full class passes on
    np.testing.assert_array_equal(split_budget(np.array([1000, 1, 1]), 0.01, "proportional"), [8, 1, 1])
    np.testing.assert_array_equal(split_budget(sizes, 0, "equal"), [0, 0, 0])
    np.testing.assert_array_equal(split_budget(sizes, 1000, "proportional"), sizes)
    rng = np.random.default_rng(0)
    for _ in range(50):
        s = rng.integers(1, 200, rng.integers(1, 12))
        for mode in ("proportional", "equal"):
            b = split_budget(s, 0.15, mode)
            assert (b >= 1).all() and (b <= s).all()
            assert b.sum() == min(max(round(0.15 * s.sum()), len(s)), s.sum())


# --- online ---------------------------------------------------------------------------------


def test_reselect_returns_rows_and_craig_weights():
    x, y = blobs(n=400, seed=8)
    idx, w = reselect(x, y, params=SelectParams(budget=0.1), seed=1)
    assert idx.dtype == np.int64 and w.dtype == np.float32
    assert len(idx) == 40 and np.all(np.diff(idx) > 0)
    assert w.sum() == 400 and (w >= 1).all()
    full = select(x, y, np.ones(400, bool), SelectParams(budget=0.1), seed=1)
    np.testing.assert_array_equal(idx, np.flatnonzero(full.columns["selected"]))


# --- params --------------------------------------------------------------------------------


def test_every_option_has_help():
    for f in dataclasses.fields(SelectParams):
        assert f.metadata.get("help"), f.name
    assert SelectParams(method="set-cover", budget=0).budget == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [({"method": "kmeans"}, "--method"), ({"budget": 0}, "--budget"), ({"budget": 12.5}, "--budget"),
     ({"epsilon": 1.0}, "--epsilon"), ({"radius": 3.0}, "--radius"), ({"k": 0}, "--k")],
)
def test_bad_options_name_the_option(options: dict, message: str):
    with pytest.raises(ValueError, match=message):
        SelectParams(**options)


def test_tiny_classes_and_bad_device():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [0.1, 1.0], [0.0, -1.0]], dtype=np.float32)
    y = np.array([0, 1, 1, 2])
    res = select(x, y, np.ones(4, bool), SelectParams(budget=0.1))
    # Every class keeps at least one row; singleton classes select themselves with weight 1.
    assert res.columns["selected"][[0, 3]].all() and res.columns["selected"][1:3].sum() == 1
    np.testing.assert_array_equal(res.columns["coreset_weight"].sum(), 4)
    with pytest.raises(ValueError, match="--device"):
        select(x, y, np.ones(4, bool), SelectParams(), device="tpu")


@pytest.mark.gpu
def test_gpu_faiss_gives_the_cpu_selection():
    from winnow.stages.select.knn import faiss_gpu_available

    if not faiss_gpu_available():
        pytest.skip("this FAISS build has no GPU support (install faiss-gpu on a CUDA machine)")
    x, y = blobs(seed=11)
    e = np.ones(len(y), bool)
    cpu = select(x, y, e, SelectParams(), device="cpu")
    gpu = select(x, y, e, SelectParams(), device="cuda")
    assert gpu.metrics["faiss_gpu"]
    # GPU GEMMs round differently, which can flip near-ties: compare quality, not identity.
    assert gpu.metrics["objective"] == pytest.approx(cpu.metrics["objective"], rel=1e-4)
    assert (cpu.columns["selected"] == gpu.columns["selected"]).mean() > 0.98


# --- duplicates and zero vectors -------------------------------------------------------------


def _two_vectors(copies=20, d=8):
    """Two random vectors, each repeated (duplicated images, say); raw, not normalised.

    The seeds are ones whose normalised float32 self inner product (FAISS's) rounds below 1.
    """
    seeds = {8: (2, 9), 512: (2, 7)}[d]
    a, b = (np.random.default_rng(seed).normal(size=d).astype(np.float32) for seed in seeds)
    return np.vstack([np.repeat(a[None], copies, 0), np.repeat(b[None], copies, 0)])


@pytest.mark.parametrize("d", [8, 512])
@pytest.mark.parametrize("radius", [0.0, 1e-6, 1e-4, 3e-4, 1e-3])  # 0.0 = automatic
@pytest.mark.parametrize("budget", [0, 4])
def test_set_cover_picks_one_centre_per_distinct_vector(d, radius, budget):
    x = _two_vectors(d=d)
    params = SelectParams(method="set-cover", budget=budget, radius=radius)
    res = select(x, np.zeros(40, np.int64), np.ones(40, bool), params)
    c = res.columns
    assert np.flatnonzero(c["selected"]).tolist() == [0, 20]  # lowest index of each group
    assert res.metrics["coverage"] == 1.0
    np.testing.assert_array_equal(c["cluster_id"], np.repeat([0, 20], 20))
    np.testing.assert_array_equal(c["coreset_weight"][[0, 20]], [20, 20])


def test_zero_vectors_are_one_cluster_for_both_methods():
    rng = np.random.default_rng(3)
    x = np.vstack([np.zeros((10, 8)), rng.normal(size=(5, 8))]).astype(np.float32)
    y = np.zeros(15, np.int64)
    e = np.ones(15, bool)
    sc = select(x[:10], y[:10], e[:10], SelectParams(method="set-cover", budget=0, radius=1.0))
    assert sc.columns["selected"].sum() == 1 and sc.columns["coreset_weight"].max() == 10
    fl = select(x[:10], y[:10], e[:10], SelectParams(budget=1))
    assert fl.metrics["objective"] == 10.0 and fl.metrics["objective_graph"] == 10.0
    # Mixed with real vectors: zeros stay together and apart from them (similarity 1/2).
    mixed = select(x, y, e, SelectParams(method="set-cover", budget=0, radius=1.0))
    zero_centre = mixed.columns["cluster_id"][:10]
    assert (zero_centre == zero_centre[0]).all() and zero_centre[0] < 10
    assert (mixed.columns["cluster_id"][10:] >= 10).all()


def test_duplicates_have_facility_location_similarity_one():
    x = _two_vectors(d=512)
    res = select(x, np.zeros(40, np.int64), np.ones(40, bool), SelectParams(budget=2))
    picked = np.flatnonzero(res.columns["selected"])
    assert (picked // 20).tolist() == [0, 1]  # one medoid per distinct vector
    np.testing.assert_array_equal(res.columns["coreset_weight"][picked], [20, 20])
    assert res.metrics["objective"] == 40.0
