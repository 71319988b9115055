import numpy as np
import pytest

from winnow.stages.export.calibrate import (
    confident_joint,
    estimated_noisy_per_class,
    threshold_for_count,
    threshold_max_expected_f1,
)
from winnow.stages.export.evaluate import auroc
from winnow.stages.export.scores import (
    choose_trusted_vote,
    meta_signal,
    noise_scores,
    synthetic_flips,
    trusted_knn_votes,
    trusted_linear_votes,
)


def naive_votes(emb, labels, trusted, query, c, k, smoothing):
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    out = np.full((len(labels), c), np.nan)
    pool = np.flatnonzero(trusted)
    for i in np.flatnonzero(query):
        cand = [j for j in pool if j != i]
        sims = np.array([e[i] @ e[j] for j in cand])
        order = np.argsort(-sims, kind="stable")[:k]
        v = np.full(c, smoothing / c)
        for o in order:
            v[labels[cand[o]]] += (1 + sims[o]) / 2
        out[i] = v / v.sum()
    return out


def test_knn_votes_match_naive_leave_one_out():
    rng = np.random.default_rng(1)
    n, c = 60, 3
    emb = rng.normal(size=(n, 5)).astype(np.float32)
    labels = rng.integers(0, c, n)
    trusted = rng.random(n) < 0.4
    query = np.ones(n, dtype=bool)
    got = trusted_knn_votes(emb, labels, trusted=trusted, query=query, n_classes=c, k=4, smoothing=0.5)
    want = naive_votes(emb, labels, trusted, query, c, 4, 0.5)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.sum(1), 1.0)


def test_knn_votes_skip_nan_rows_and_non_queries():
    emb = np.array([[1, 0], [0.9, 0.1], [0, 1], [np.nan, np.nan]], dtype=np.float32)
    labels = np.array([0, 0, 1, 1])
    trusted = np.array([True, False, True, True])
    v = trusted_knn_votes(emb, labels, trusted=trusted, query=np.array([True, True, False, True]),
                          n_classes=2, k=1, smoothing=0.0)
    np.testing.assert_allclose(v[1], [1.0, 0.0])  # nearest trusted of row 1 is row 0
    np.testing.assert_allclose(v[0], [0.0, 1.0])  # row 0 cannot vote for itself: row 2
    assert np.isnan(v[2]).all() and np.isnan(v[3]).all()


def test_scores_in_range_and_noisy_rows_rank_first(run):
    from winnow.stages.common.arrow import vectors_from_arrow

    f = run["features"]
    sc = noise_scores(labels=run["given"], probs=vectors_from_arrow(f["probs"]),
                      embedding=vectors_from_arrow(f["embedding"]), split=run["split"],
                      weights=run["weights"]["weight"].to_numpy(zero_copy_only=False),
                      zero_fraction=run["weights"]["zero_fraction"].to_numpy(zero_copy_only=False),
                      valid=run["valid"], n_classes=4)
    scored = np.isfinite(sc.score)
    assert (scored == (run["valid"] & (run["split"] == "train"))).all()
    assert (sc.score[scored] >= 0).all() and (sc.score[scored] <= 1).all()
    assert auroc(run["flip"][scored], sc.score[scored]) > 0.97
    assert sc.signals == ["trusted_knn", "probs", "meta_weight"]
    # suggestions recover the truth on the separable clusters
    ok = run["valid"]
    assert (sc.suggested_label[ok] == run["true"][ok]).mean() > 0.95
    assert ((sc.suggested_confidence[ok] > 0) & (sc.suggested_confidence[ok] <= 1)).all()
    assert (sc.suggested_label[~ok] == -1).all()


def test_each_signal_alone_orders_obvious_rows():
    labels = np.array([0, 0, 1, 1])
    split = np.array(["train"] * 4)
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.1, 0.9], [0.7, 0.3]])
    sc = noise_scores(labels=labels, probs=probs, embedding=None, split=split, n_classes=2)
    np.testing.assert_allclose(sc.score, [0.1, 0.8, 0.1, 0.7])
    assert sc.signals == ["probs"]
    w = np.array([1.0, 0.0, 2.0, 0.5])
    sc = noise_scores(labels=labels, probs=None, embedding=None, split=split, weights=w, n_classes=2)
    assert list(np.argsort(-sc.score)) == [1, 3, 0, 2]
    assert np.isnan(sc.suggested_confidence).all()


def test_meta_signal_known_answer():
    w = np.array([0.0, 1.0, 2.0, np.nan, 3.0])
    z = np.array([1.0, 0.0, 0.0, 0.0, 0.0])
    scored = np.array([True, True, True, True, False])
    np.testing.assert_allclose(meta_signal(w, z, scored), [1.0, 0.25, 0.0, np.nan, np.nan])


def test_confident_joint_known_answer():
    # 10 rows labelled 0; 3 are confidently class 1. 10 rows labelled 1, all clean.
    post = np.vstack([np.tile([0.9, 0.1], (7, 1)), np.tile([0.05, 0.95], (3, 1)), np.tile([0.1, 0.9], (10, 1))])
    labels = np.array([0] * 10 + [1] * 10)
    joint = confident_joint(post, labels, 2)
    np.testing.assert_allclose(joint, [[7, 3], [0, 10]])
    np.testing.assert_allclose(estimated_noisy_per_class(joint), [3, 0])


def test_threshold_for_count():
    s = np.array([0.1, 0.9, np.nan, 0.5, 0.7])
    assert threshold_for_count(s, 2) == 0.7
    assert threshold_for_count(s, 10) == 0.1
    assert (s[np.isfinite(s)] >= threshold_for_count(s, 0)).sum() == 0


def test_threshold_max_expected_f1_separable_and_naive():
    clean = np.array([0.1, 0.2, 0.3])
    noisy = np.array([0.6, 0.8])
    thr, f1 = threshold_max_expected_f1(clean, noisy, 0.4)
    assert 0.3 < thr <= 0.6 and f1 == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    clean, noisy, pi = rng.normal(0.3, 0.15, 300), rng.normal(0.6, 0.15, 200), 0.3
    thr, f1 = threshold_max_expected_f1(clean, noisy, pi)
    grid = np.unique(np.concatenate([clean, noisy]))
    tpr = np.array([(noisy >= t).mean() for t in grid])
    fpr = np.array([(clean >= t).mean() for t in grid])
    ref = 2 * pi * tpr / (pi * tpr + (1 - pi) * fpr + pi)
    assert f1 == pytest.approx(ref.max()) and thr == grid[np.argmax(ref)]


def test_bad_options_raise():
    with pytest.raises(ValueError, match="knn-weight"):
        noise_scores(labels=np.zeros(2, int), probs=np.full((2, 2), 0.5), embedding=np.ones((2, 2)),
                     split=np.array(["train", "trusted"]), n_classes=2, knn_weight=2.0)
    with pytest.raises(ValueError, match="knn-k"):
        trusted_knn_votes(np.ones((2, 2)), np.zeros(2, int), trusted=np.ones(2, bool),
                          query=np.ones(2, bool), n_classes=2, k=0)


def _onehotish(labels, c, good, rng):
    """Posterior rows: leaning to the label where ``good`` (not separable: ties would decide), random elsewhere."""
    p = rng.dirichlet(np.ones(c), size=len(labels))
    p[good] *= 0.7
    p[good, labels[good]] += 0.3
    return p


def _choose(probs, votes, labels, **kw):
    name, b, info = choose_trusted_vote(probs, {"knn": votes}, labels, **kw)
    assert name == "knn"
    return b, info


def test_choose_trusted_vote_follows_the_informative_signal():
    rng = np.random.default_rng(0)
    c, n = 4, 200
    labels = rng.integers(0, c, n)
    trusted = np.arange(n) < 100
    train = ~trusted
    everywhere = np.ones(n, bool)
    good, bad = _onehotish(labels, c, everywhere, rng), _onehotish(labels, c, ~everywhere, rng)
    b, info = _choose(good, bad, labels, trusted=trusted, train=train, n_classes=c)
    assert b == 0.0 and info["trusted_rows"] == 100
    aucs = info["trusted_auroc"]
    assert aucs["knn 0.0"] > aucs["knn 0.5"] > aucs["knn 1.0"]
    assert _choose(bad, good, labels, trusted=trusted, train=train, n_classes=c)[0] == 1.0
    # Indistinguishable signals: every b ties, the previous fixed default wins.
    assert _choose(good, good, labels, trusted=trusted, train=train, n_classes=c)[0] == 0.3
    # Too few trusted rows to choose from.
    b, info = _choose(good, bad, labels, trusted=np.arange(n) < 5, train=train, n_classes=c)
    assert b == 0.3 and info["method"].startswith("default")
    # Between two votes the better one wins whatever its place; a tie goes to the first.
    name, b, _ = choose_trusted_vote(bad, {"knn": bad, "linear": good}, labels, trusted=trusted, train=train,
                                     n_classes=c)
    assert (name, b) == ("linear", 1.0)
    assert choose_trusted_vote(bad, {"knn": good, "linear": good}, labels, trusted=trusted, train=train,
                               n_classes=c)[0] == "knn"
    # A share set by the user is kept; only the vote is chosen.
    name, b, info = choose_trusted_vote(good, {"knn": bad, "linear": good}, labels, trusted=trusted, train=train,
                                        n_classes=c, knn_weight=0.4)
    assert (name, b) == ("linear", 0.4) and list(info["trusted_auroc"]) == ["knn 0.4", "linear 0.4"]


def test_choose_trusted_vote_weighs_trusted_rows_by_the_train_class_mix():
    """Probs are right on class 0, the votes on class 1; the train split is (almost) all class 1."""
    rng = np.random.default_rng(1)
    c, n = 3, 300
    labels = np.r_[np.zeros(50, int), np.ones(50, int), np.ones(200, int)]
    trusted = np.arange(n) < 100
    on0, on1 = labels == 0, labels != 0
    probs, votes = _onehotish(labels, c, on0, rng), _onehotish(labels, c, on1, rng)
    b, _ = _choose(probs, votes, labels, trusted=trusted, train=~trusted, n_classes=c)
    assert b == 1.0
    labels_train0 = labels.copy()
    labels_train0[100:] = 0  # now the train split is all class 0: the probs should win
    b, _ = _choose(probs, votes, labels_train0, trusted=trusted, train=~trusted, n_classes=c)
    assert b == 0.0


def test_linear_vote_matches_scikit_learn_on_standardised_embeddings():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(4)
    c, d, n = 3, 6, 400
    labels = rng.integers(0, c, n)
    emb = rng.normal(size=(n, d)) + 1.5 * np.eye(c, d)[labels]
    trusted = np.arange(n) < 90
    emb[95] = np.nan  # no embedding: no vote
    out, info = trusted_linear_votes(emb, labels, trusted=trusted, query=np.arange(n) != 99, n_classes=c, seed=3,
                                     cs=(0.1, 1.0))
    assert info["c"] in (0.1, 1.0) and info["trusted_rows"] == 90
    scaler = StandardScaler().fit(emb[:90])
    ref = LogisticRegression(C=info["c"], max_iter=1000).fit(scaler.transform(emb[:90]), labels[:90])
    rest = np.r_[90:95, 96:99, 100:n]
    np.testing.assert_allclose(out[rest], ref.predict_proba(scaler.transform(emb[rest])), atol=1e-9)
    assert np.isnan(out[[95, 99]]).all()
    # Trusted rows: out of fold, exactly as scikit-learn's own cross-fitting with the same folds.
    folds = StratifiedKFold(5, shuffle=True, random_state=3).split(emb[:90], labels[:90])
    for fit, held in folds:
        s = StandardScaler().fit(emb[:90])  # standardised once on every trusted row, as the vote does
        m = LogisticRegression(C=info["c"], max_iter=1000).fit(s.transform(emb[fit]), labels[fit])
        np.testing.assert_allclose(out[held], m.predict_proba(s.transform(emb[held])), atol=1e-9)
    # Two classes: scikit-learn keeps one logit column; the chunked prediction must match it too.
    two = labels % 2
    out2, info2 = trusted_linear_votes(emb, two, trusted=trusted, query=np.ones(n, bool), n_classes=2, cs=(1.0,))
    ref2 = LogisticRegression(C=1.0, max_iter=1000).fit(scaler.transform(emb[:90]), two[:90])
    np.testing.assert_allclose(out2[rest], ref2.predict_proba(scaler.transform(emb[rest])), atol=1e-9)
    # A class with fewer trusted rows than folds: no linear vote, and the reason.
    few = trusted & (labels != 2)
    few[np.flatnonzero(trusted & (labels == 2))[:3]] = True  # class 2: 3 trusted rows
    out, info = trusted_linear_votes(emb, labels, trusted=few, query=np.ones(n, bool), n_classes=c)
    assert out is None and "5 trusted rows" in info["skipped"]


def test_the_trusted_vote_is_not_fooled_by_noise_the_probs_learned():
    """Image-dependent noise (known answer): in a band of the feature space, train labels are
    systematically 0 -> 1, so probs learned from them believe the wrong label there; the trusted
    rows say otherwise and the chosen vote ranks those rows above the clean ones."""
    rng = np.random.default_rng(5)
    c, d, n_trusted, n_train = 2, 4, 200, 2000
    n = n_trusted + n_train
    true = rng.integers(0, c, n)
    emb = rng.normal(size=(n, d))
    emb[:, 0] += 2.0 * true
    band = (true == 0) & (emb[:, 1] > 0.8)
    split = np.where(np.arange(n) < n_trusted, "trusted", "train")
    given = np.where(band & (split == "train"), 1, true)
    # Probs that learned the noise: they follow the given label in the band, the truth elsewhere.
    probs = np.full((n, c), 0.1)
    probs[np.arange(n), np.where(band, 1, true)] = 0.9
    sc = noise_scores(labels=given, probs=probs, embedding=emb, split=split, n_classes=c, knn_weight=None)
    train = split == "train"
    noisy = (given != true)[train]
    assert "trusted_linear" in sc.signals or "trusted_knn" in sc.signals
    assert auroc(noisy, sc.score[train]) > 0.9
    assert auroc(noisy, 1 - probs[train, given[train]]) < 0.55  # the probs alone cannot see it
    assert sc.knn_weight_choice["vote"] in ("knn", "linear")


def test_trusted_vote_option_picks_the_model():
    rng = np.random.default_rng(6)
    c, n = 3, 300
    labels = rng.integers(0, c, n)
    emb = rng.normal(size=(n, 5)) + 2 * np.eye(c, 5)[labels]
    split = np.where(np.arange(n) < 100, "trusted", "train")
    kw = dict(labels=labels, probs=None, embedding=emb, split=split, n_classes=c, knn_weight=None)
    knn = noise_scores(**kw, trusted_vote="knn")
    assert knn.signals == ["trusted_knn"] and knn.knn_weight_choice["method"] == "no probs: the trusted vote alone"
    assert noise_scores(**kw, trusted_vote="linear").signals == ["trusted_linear"]
    both = noise_scores(**kw).knn_weight_choice
    assert both["method"].startswith("no probs: the trusted vote alone; the vote with the best AUROC")
    with pytest.raises(ValueError, match="--trusted-vote"):
        noise_scores(**kw, trusted_vote="forest")
    # Too large a linear fit for auto: the nearest neighbours alone, and the summary says why.
    import winnow.stages.export.scores as scores_mod

    real = scores_mod.LINEAR_VOTE_MAX_WORK
    scores_mod.LINEAR_VOTE_MAX_WORK = 10.0
    try:
        big = noise_scores(**kw)
        assert big.signals == ["trusted_knn"] and "--trusted-vote linear fits it anyway" in \
            big.knn_weight_choice["linear_skipped"]
        assert noise_scores(**kw, trusted_vote="linear").signals == ["trusted_linear"]
    finally:
        scores_mod.LINEAR_VOTE_MAX_WORK = real
    few = np.where(np.arange(n) < 8, "trusted", "train")
    with pytest.raises(ValueError, match="--trusted-vote linear: needs >= 5 trusted rows"):
        noise_scores(**{**kw, "split": few}, trusted_vote="linear")
    assert noise_scores(**{**kw, "split": few}).signals == ["trusted_knn"]  # auto falls back


def test_exact_flips_change_every_label_to_every_other_class_once():
    y = np.array([0, 1, 2, 2, 3])
    flips = synthetic_flips(y, 4, repeats=0, seed=0)
    assert len(flips) == 3
    stacked = np.stack(flips)  # (C - 1, n)
    assert (stacked != y).all()
    for i, label in enumerate(y):
        assert sorted(stacked[:, i].tolist()) == sorted(set(range(4)) - {int(label)})
    # Seeded random flips on request: still always another class, and the seed matters.
    a, b = synthetic_flips(y, 4, repeats=5, seed=1), synthetic_flips(y, 4, repeats=5, seed=2)
    assert len(a) == 5 and all((f != y).all() for f in a)
    assert len(synthetic_flips(y, 4, repeats=1, seed=0)) == 1  # --flip-repeats N means N
    assert not all(np.array_equal(u, v) for u, v in zip(a, b))


def test_with_exact_flips_the_knn_weight_does_not_depend_on_the_seed():
    # Noisy signals of equal strength: with 3 random flips per row the choice moved with the seed.
    c, n = 10, 200
    labels = np.arange(n) % c
    trusted, train = np.arange(n) < 100, np.arange(n) >= 100
    random_varied = False
    for data_seed in range(3):
        rng = np.random.default_rng(data_seed)
        probs = _onehotish(labels, c, rng.random(n) < 0.6, rng)
        votes = _onehotish(labels, c, rng.random(n) < 0.6, rng)
        exact = {_choose(probs, votes, labels, trusted=trusted, train=train, n_classes=c, seed=s)[0]
                 for s in range(8)}
        random = {_choose(probs, votes, labels, trusted=trusted, train=train, n_classes=c, seed=s,
                                    repeats=3)[0] for s in range(8)}
        assert len(exact) == 1
        random_varied |= len(random) > 1
    assert random_varied  # the case is one where the seed did matter


def test_the_knn_vote_searches_fixed_chunks_that_any_map_may_run_in_any_order(monkeypatch):
    # The searches are cut into fixed chunks that a Map can run on other machines, in any
    # order: the votes are the same bit for bit, and within float rounding of one search.
    from winnow.stages.export import scores

    rng = np.random.default_rng(0)
    n, c = 10_000, 4
    labels = rng.integers(0, c, n)
    emb = (rng.normal(size=(n, 16)) + 2 * np.eye(c, 16)[labels]).astype(np.float32)
    trusted = rng.random(n) < 0.05
    whole = trusted_knn_votes(emb, labels, trusted=trusted, query=np.ones(n, bool), n_classes=c, k=5)
    monkeypatch.setattr(scores, "KNN_CHUNK_ROWS", 4096)
    units: list = []

    def reversed_map(fn, items, data):
        units.extend(items)
        return [fn(item, **data) for item in items[::-1]][::-1]

    chunked = trusted_knn_votes(emb, labels, trusted=trusted, query=np.ones(n, bool), n_classes=c, k=5)
    spied = trusted_knn_votes(emb, labels, trusted=trusted, query=np.ones(n, bool), n_classes=c, k=5,
                              map_work=reversed_map)
    assert units == [(0, 4096), (4096, 8192), (8192, 10_000)]
    np.testing.assert_array_equal(spied, chunked)
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-6)
    assert (chunked.argmax(1) == whole.argmax(1)).all()
