import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from winnow.stages.common.arrow import with_metadata
from winnow.stages.export.calibrate import mixture_noise_rate, threshold_max_expected_f1_mixture
from winnow.stages.export.evaluate import auroc, evaluate_flags


def _curated():
    label = [0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 1]
    true = [0, 1, 0, 1, 1, 0, 1, 1, 0, 0, 1]
    score = [0.1, 0.9, 0.4, 0.3, 0.2, 0.8, 0.6, 0.1, 0.7, None, 0.5]
    flag = [False, True, True, False, False, True, True, False, False, False, False]
    weight = [1.0, 0.0, 0.5, 0.6, 1.2, 0.1, 0.2, 0.9, 0.3, None, 0.4]
    t = pa.table({"label": pa.array(label, pa.int32()), "true_label": pa.array(true, pa.int32()),
                  "noise_score": pa.array(score, pa.float32()), "noise_flag": flag,
                  "weight": pa.array(weight, pa.float32())})
    return with_metadata(t, classes=["a", "b"]), np.array(label), np.array(true), score, flag, weight


def test_matches_sklearn_overall_and_per_class():
    cur, label, true, score, flag, weight = _curated()
    rows = np.array([s is not None for s in score])
    noisy = (label != true)[rows]
    s = np.array([x for x in score if x is not None], dtype=np.float32)
    f = np.array(flag)[rows]
    w = np.array([x for x in weight if x is not None], dtype=np.float32)
    res = evaluate_flags(cur)
    o = res["overall"]
    assert o["rows"] == 10 and o["noisy"] == int(noisy.sum())
    assert o["precision"] == pytest.approx(precision_score(noisy, f))
    assert o["recall"] == pytest.approx(recall_score(noisy, f))
    assert o["f1"] == pytest.approx(f1_score(noisy, f))
    assert o["auroc_score"] == pytest.approx(roc_auc_score(noisy, s))
    assert o["auroc_weight"] == pytest.approx(roc_auc_score(noisy, -w))
    lab = label[rows]
    for c, name in enumerate(["a", "b"]):
        m = lab == c
        pc = res["per_class"][name]
        assert pc["f1"] == pytest.approx(f1_score(noisy[m], f[m]))
        assert pc["auroc_score"] == pytest.approx(roc_auc_score(noisy[m], s[m]))


def test_truth_array_and_errors():
    cur, label, true, *_ = _curated()
    a = evaluate_flags(cur.drop_columns(["true_label"]), truth=true)
    assert a == evaluate_flags(cur)
    with pytest.raises(ValueError, match="no truth"):
        evaluate_flags(cur.drop_columns(["true_label"]))
    with pytest.raises(ValueError, match="one per curated row"):
        evaluate_flags(cur, truth=true[:3])


def test_auroc_random_matches_sklearn_and_degenerate():
    rng = np.random.default_rng(0)
    y = rng.random(200) < 0.3
    s = np.round(rng.random(200), 1)  # ties
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s))
    assert auroc(np.zeros(3, bool), np.arange(3)) is None


def test_mixture_calibration_known_answer():
    # clean scores uniform on [0, 0.5]; noisy uniform on [0.6, 1]; 30% noisy
    clean = np.linspace(0, 0.5, 1000)
    train = np.concatenate([np.linspace(0, 0.5, 700), np.linspace(0.6, 1.0, 300)])
    pi = mixture_noise_rate(train, clean)
    assert pi == pytest.approx(0.3, abs=0.01)
    thr, f1 = threshold_max_expected_f1_mixture(train, clean, pi)
    assert 0.5 < thr <= 0.6 and f1 == pytest.approx(1.0, abs=0.02)
    # class reweighting: trusted has 50/50 classes, train 90/10 -> weights fix the mix
    clean2 = np.concatenate([np.full(50, 0.1), np.full(50, 0.4)])
    w = np.concatenate([np.full(50, 0.9 / 50), np.full(50, 0.1 / 50)])
    train2 = np.concatenate([np.full(630, 0.1), np.full(70, 0.4), np.full(300, 0.9)])
    assert mixture_noise_rate(train2, clean2, w, quantiles=(0.5,)) == pytest.approx(0.3, abs=1e-9)


def test_mixture_calibration_flags_nothing_without_evidence_of_noise():
    """Train scores *below* the clean ones (CIFAR-10 under model noise): the estimate is 0, and the
    threshold must flag no row (the arg-max of an all-zero F1 once flagged 94%)."""
    clean = np.linspace(0.3, 1.0, 1000)
    train = np.linspace(0.0, 0.7, 5000)
    assert mixture_noise_rate(train, clean) == 0.0
    thr, f1 = threshold_max_expected_f1_mixture(train, clean, 0.0)
    assert f1 == 0.0 and (train >= thr).sum() == 0


def test_trusted_flips_threshold_is_the_one_sklearns_roc_curve_gives():
    """calibrate.threshold_max_expected_f1 keeps its two searchsorted lines (sklearn's roc_curve gives
    the same ROC points but F1 values that differ in the last bit; design notes): check the points."""
    from sklearn.metrics import roc_curve

    from winnow.stages.export.calibrate import threshold_max_expected_f1

    rng = np.random.default_rng(1)
    for _ in range(200):
        clean = np.round(rng.beta(2, 5, rng.integers(2, 60)), 1)  # heavy ties
        noisy = np.round(rng.beta(5, 2, rng.integers(2, 200)), 1)
        pi = rng.uniform(0.05, 0.6)
        fpr, tpr, thr = roc_curve(np.r_[np.zeros(len(clean)), np.ones(len(noisy))], np.r_[clean, noisy],
                                  drop_intermediate=False)
        f1 = 2 * pi * tpr[1:] / (pi * tpr[1:] + (1 - pi) * fpr[1:] + pi)
        best = len(f1) - 1 - int(np.argmax(f1[::-1]))  # ties: the lowest threshold, as the hand version
        got = threshold_max_expected_f1(clean, noisy, pi)
        assert got[0] == thr[1:][best] and got[1] == pytest.approx(f1[best], rel=1e-12)
