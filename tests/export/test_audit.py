"""The kNN graph's data issues on planted cases: exact and near duplicates (within and across
splits, leakage named), outliers against the trusted rows, class overlap and imbalance."""

from __future__ import annotations

import numpy as np

from winnow.stages.export.audit import (
    audit,
    class_balance,
    class_overlap,
    find_duplicates,
)


def _data(seed: int = 0, n: int = 400, d: int = 16):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    centres = rng.normal(size=(4, d)) * 3
    x = (centres[labels] + rng.normal(size=(n, d))).astype(np.float32)
    split = np.where(np.arange(n) < 80, "trusted", np.where(np.arange(n) >= 360, "test", "train")).astype(object)
    return x, labels, split, rng


def test_planted_exact_and_near_duplicates_with_a_train_test_leak():
    x, labels, split, rng = _data()
    x[150] = x[100]  # exact, train-train
    x[151] = x[100]  # a third copy: same group, first row is 100
    x[200] = x[120] + 1e-4 * rng.normal(size=x.shape[1])  # near, train-train
    x[370] = x[130]  # exact, test-train: leakage
    x[371] = x[10] + 1e-4 * rng.normal(size=x.shape[1])  # near, test-trusted: leakage
    valid = np.ones(len(x), bool)
    dup_of, kind, radius = find_duplicates(x, valid)
    planted = {150: (100, "exact"), 151: (100, "exact"), 200: (120, "near"), 370: (130, "exact"), 371: (10, "near")}
    found = {i: (int(dup_of[i]), kind[i]) for i in np.flatnonzero(dup_of >= 0)}
    assert found == planted
    assert radius > 0
    res = audit(x, np.full((len(x), 4), 0.25), labels, split, valid, ["a", "b", "c", "d"],
                ids=[f"r{i}" for i in range(len(x))])
    dups = res.summary["duplicates"]
    assert dups["exact"] == 3 and dups["near"] == 2
    assert dups["leakage"]["rows"] == 2 and ["r370", "r130"] in dups["leakage"]["examples"]
    cols = dict((f.name, a) for f, a in res.columns([f"r{i}" for i in range(len(x))]))
    assert cols["duplicate_of"][150].as_py() == "r100" and cols["duplicate_of"][100].as_py() is None
    assert cols["duplicate_kind"][371].as_py() == "near"


def _datalab_near_pairs(x: np.ndarray, factor: float = 0.13) -> set[tuple[int, int]]:
    """Datalab's near_duplicate rule by brute force: cosine distance (1 - cos) to a neighbour below
    ``factor`` times the median nearest-neighbour cosine distance; pairs as (later, earlier)."""
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    cos_d = 1.0 - u.astype(np.float64) @ u.T.astype(np.float64)
    np.fill_diagonal(cos_d, np.inf)
    radius = factor * np.median(cos_d.min(axis=1))
    i, j = np.nonzero(cos_d < radius)
    return {(int(a), int(b)) for a, b in zip(i, j) if a > b}


def test_near_duplicates_follow_datalabs_cosine_rule():
    """Pairs at graded cosine distances around Datalab's radius: winnow marks exactly the pairs the
    brute-force rule finds (the unit-sphere reading of 0.13 missed the outer ones)."""
    x, *_ = _data(seed=3)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    median_nn = np.median(np.sort(1.0 - u @ u.T, axis=1)[:, 1])
    rng = np.random.default_rng(4)
    for k, row in enumerate(range(200, 216)):
        target = (0.16 + 0.12 * k) * 0.13 * median_nn  # cosine distance: 0.16x to 1.96x Datalab's radius
        src = 100 + k
        step = rng.normal(size=x.shape[1])
        step -= (step @ u[src]) * u[src]
        step /= np.linalg.norm(step)
        angle = np.arccos(1.0 - target)
        x[row] = (np.cos(angle) * u[src] + np.sin(angle) * step) * np.linalg.norm(x[src])
    expected = _datalab_near_pairs(x)
    dup_of, kind, _ = find_duplicates(x, np.ones(len(x), bool))
    found = {(int(i), int(dup_of[i])) for i in np.flatnonzero(dup_of >= 0)}
    assert found == expected
    assert 4 <= len(expected) < 16  # the grid straddles the radius: some inside, some outside


def test_invalid_rows_are_never_duplicates_and_a_different_label_is_reported():
    x, labels, split, _ = _data(1)
    x[300] = x[200]
    x[301] = x[200]
    labels[300] = (labels[200] + 1) % 4
    valid = np.ones(len(x), bool)
    valid[301] = False
    dup_of, kind, _ = find_duplicates(x, valid)
    assert dup_of[301] == -1 and kind[301] is None and dup_of[300] == 200
    res = audit(x, np.full((len(x), 4), 0.25), labels, split, valid, list("abcd"), ids=[str(i) for i in range(len(x))])
    assert res.summary["duplicates"]["different_labels"]["rows"] == 1


def test_outliers_from_another_distribution_are_flagged_against_the_trusted_threshold():
    rng = np.random.default_rng(2)
    n, d = 400, 16
    labels = rng.integers(0, 4, n)
    centres = np.zeros((4, d))
    centres[:, :8] = rng.normal(size=(4, 8)) * 3  # the clusters live in the first 8 dimensions
    x = (centres[labels] + 0.5 * rng.normal(size=(n, d))).astype(np.float32)
    split = np.where(np.arange(n) < 80, "trusted", "train").astype(object)
    far = np.arange(250, 260)
    x[far] = 0.0
    x[far, 8:] = rng.normal(size=(10, 8)) * 3  # directions no cluster has
    res = audit(x, np.full((len(x), 4), 0.25), labels, split, np.ones(len(x), bool), list("abcd"),
                ids=[str(i) for i in range(len(x))])
    flagged = set(np.flatnonzero(res.outlier_flag))
    assert set(far) <= flagged and len(flagged - set(far)) <= 0.03 * 390, sorted(flagged)  # ~1/81 by design
    top = res.summary["outliers"]
    assert top["calibrated_on"].startswith("the highest trusted row's score") and top["flagged"] == len(flagged)
    assert min(res.outlier_score[far]) > max(np.delete(res.outlier_score, far)[:80])  # beyond every trusted row


def test_class_overlap_and_balance_known_answers():
    labels = np.array([0, 0, 1, 1, 2])
    post = np.array([[0.6, 0.4, 0.0], [0.8, 0.2, 0.0], [0.3, 0.7, 0.0], [0.1, 0.9, 0.0], [0.0, 0.0, 1.0]])
    m, pairs = class_overlap(post, labels, np.ones(5, bool), 3, top=2)
    np.testing.assert_allclose(m[0], [0.7, 0.3, 0.0])
    np.testing.assert_allclose(m[1], [0.2, 0.8, 0.0])
    assert pairs[0] == {"classes": [0, 1], "overlap": 0.5}
    bal = class_balance(np.array([0] * 100 + [1] * 10 + [2] * 2), np.ones(112, bool), 4, list("abcd"))
    assert bal["max_min_ratio"] == 50.0 and bal["near_empty_classes"] == ["c", "d"]
    assert bal["train_rows_per_class"] == {"a": 100, "b": 10, "c": 2, "d": 0}


def test_without_embeddings_only_overlap_and_balance():
    x, labels, split, _ = _data(3)
    res = audit(None, np.full((len(x), 4), 0.25), labels, split, np.ones(len(x), bool), list("abcd"),
                ids=[str(i) for i in range(len(x))])
    assert "duplicates" not in res.summary and "outliers" not in res.summary
    assert (res.duplicate_of == -1).all() and np.isnan(res.outlier_score).all() and not res.outlier_flag.any()


def test_through_the_cli_leakage_is_said_and_inspect_lists_it_first(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from click.testing import CliRunner

    from winnow.pipeline.cli import main

    x, labels, split, _ = _data(4, n=300)
    split[280:] = "test"
    x[290] = x[150]  # a test row that is a train row: leakage
    x[151] = x[150]  # and a train-train exact duplicate
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(len(x))], "label": labels, "split": list(split),
                             "embedding": list(x)}), tmp_path / "f.parquet")
    run = str(tmp_path / "run")
    for args in (["ingest", str(tmp_path / "f.parquet"), "--features", "embedding"],
                 ["embed", "--model", "features", "--folds", "3", "--threads", "1"]):
        assert CliRunner().invoke(main, [*args, "--run-dir", run, "-q"]).exit_code == 0
    res = CliRunner().invoke(main, ["export", "--run-dir", run, "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert "LEAKAGE: 1 test row(s) duplicate a train or trusted row (e.g. 'r290' ~ 'r150')" in res.output
    curated = pq.read_table(tmp_path / "run" / "export" / "curated.parquet")
    assert curated["duplicate_of"][290].as_py() == "r150" and curated["duplicate_kind"][151].as_py() == "exact"
    res = CliRunner().invoke(main, ["inspect", "--run-dir", run, "--issues", "--json"])
    rows = __import__("json").loads(res.stdout)["rows"]
    assert rows[0]["id"] == "r290" and "leakage" in rows[0]["issue"] and rows[1]["id"] == "r151"
    res = CliRunner().invoke(main, ["export", "--run-dir", run, "--no-audit", "--threads", "1", "-q"])
    assert res.exit_code == 0 and "duplicate_of" not in pq.read_table(
        tmp_path / "run" / "export" / "curated.parquet").column_names


def test_exact_representatives_match_sorting_the_rows_and_survive_hash_collisions(monkeypatch):
    from winnow.stages.export import audit as au

    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6)).astype(np.float32)
    x[[7, 300, 499]] = x[3]
    x[41] = x[40]
    x[43] = 0.0
    x[44] = -0.0  # equal to row 43 as numbers, not as bits: not an exact duplicate
    monkeypatch.setattr(au, "HASH_BLOCK_ROWS", 64)  # several blocks and a last partial one
    reference = au._first_of_equal_rows(x.view(np.uint32))
    np.testing.assert_array_equal(au.exact_representatives(x), reference)
    assert reference[[7, 300, 499, 41]].tolist() == [3, 3, 3, 40] and reference[44] == 44

    # Every row hashing alike (a forced collision): the bit-for-bit check still separates them.
    real_unique = np.unique

    def collide(a, *args, **kw):
        return real_unique(np.zeros_like(a) if a.dtype == np.uint64 else a, *args, **kw)

    monkeypatch.setattr(au.np, "unique", collide)
    np.testing.assert_array_equal(au.exact_representatives(x), reference)


def test_duplicates_are_found_through_the_ivf_index_trained_on_a_sample():
    """Above select's exact threshold the duplicate search is IVF, its cells trained on 39 rows
    each: planted exact and near twins are all still found."""
    from winnow.stages.export import audit as au
    from winnow.stages.select.knn import IndexSpec, build_index, normalize

    rng = np.random.default_rng(2)
    n, d = 24_000, 16
    x = rng.normal(size=(n, d)).astype(np.float32)
    src, dst = rng.choice(n // 2, 60, replace=False), n // 2 + rng.choice(n // 2, 60, replace=False)
    x[dst[:30]] = x[src[:30]]
    x[dst[30:]] = x[src[30:]] * (1 + 0.001 * rng.normal(size=(30, d))).astype(np.float32)
    spec = au._duplicate_spec(IndexSpec(seed=0))
    index, kind = build_index(normalize(x), spec)
    assert kind == "ivf" and index.cp.max_points_per_centroid == au.DUPLICATE_TRAIN_PER_CELL
    dup_of, dup_kind, _ = au.find_duplicates(x, np.ones(n, bool), spec=IndexSpec(seed=0))
    assert (dup_of[dst] == src).all()
    assert (dup_kind[dst[:30]] == "exact").all() and (dup_kind[dst[30:]] == "near").all()
    assert int((dup_of >= 0).sum()) == 60
