"""Conformal p-values and Benjamini-Hochberg against straightforward references, uniformity
under the null, the FDR bound on a seeded simulation, and the exchangeability check."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import kstest

from winnow.stages.export.fdr import benjamini_hochberg, conformal_pvalues, exchangeability_check, fdr_flags


def _pvalues_reference(scores: np.ndarray, cal: np.ndarray) -> np.ndarray:
    return np.array([(1 + sum(c >= s for c in cal)) / (len(cal) + 1) for s in scores])


def _bh_reference(p: np.ndarray, q: float) -> np.ndarray:
    """Step-up: the largest k with p_(k) <= q k / m; reject the k smallest."""
    m = len(p)
    order = np.argsort(p, kind="stable")
    k = max([i + 1 for i in range(m) if p[order[i]] <= q * (i + 1) / m], default=0)
    out = np.zeros(m, dtype=bool)
    out[order[:k]] = True
    return out


def test_known_answer_and_ties():
    cal = np.array([0.2, 0.3, 0.5, 0.5])
    p = conformal_pvalues(np.array([0.9, 0.5, 0.1, np.nan]), cal)
    np.testing.assert_allclose(p[:3], [1 / 5, 3 / 5, 5 / 5])  # a tie counts as "at least as noisy"
    assert np.isnan(p[3])
    np.testing.assert_array_equal(benjamini_hochberg(np.array([0.01, 0.02, 0.03, 0.5]), 0.1), [1, 1, 1, 0])
    np.testing.assert_array_equal(benjamini_hochberg(np.array([0.04, 0.2, np.nan]), 0.1), [1, 0, 0])


@pytest.mark.parametrize("seed", range(5))
def test_against_references_on_random_inputs(seed: int):
    rng = np.random.default_rng(seed)
    cal = np.round(rng.random(37), 2)  # rounded: ties between scores and calibration
    scores = np.round(rng.random(200) ** 2, 2)
    p = conformal_pvalues(scores, cal)
    np.testing.assert_allclose(p, _pvalues_reference(scores, cal))
    for q in (0.05, 0.1, 0.3):
        np.testing.assert_array_equal(benjamini_hochberg(p, q), _bh_reference(p, q))


def test_pvalues_are_uniform_under_the_null():
    """Clean rows exchangeable with the calibration rows: p-values uniform on the grid (KS test)."""
    rng = np.random.default_rng(0)
    p = np.concatenate([conformal_pvalues(rng.normal(size=50), rng.normal(size=999)) for _ in range(40)])
    assert kstest(p, "uniform").pvalue > 0.01
    shifted = conformal_pvalues(rng.normal(size=2000) + 0.3, rng.normal(size=999))
    assert kstest(shifted, "uniform").pvalue < 1e-6, "the same test sees a shift (it could fail)"


def test_fdr_is_controlled_on_a_seeded_simulation():
    fdp, recall = [], []
    for seed in range(100):
        rng = np.random.default_rng(seed)
        cal, clean, noisy = rng.normal(size=100), rng.normal(size=600), rng.normal(2.5, 1.0, size=400)
        flags = benjamini_hochberg(conformal_pvalues(np.r_[clean, noisy], cal), 0.1)
        fdp.append(flags[:600].sum() / max(flags.sum(), 1))
        recall.append(flags[600:].mean())
    assert np.mean(fdp) <= 0.1, np.mean(fdp)  # BH gives q * pi0 = 0.06 in expectation
    assert np.mean(recall) > 0.5, "and it flags most of the noisy rows"


def test_bad_q_and_empty_calibration():
    for q in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"q must be in \(0, 1\)"):
            benjamini_hochberg(np.array([0.1]), q)
    with pytest.raises(ValueError, match="at least one finite calibration"):
        conformal_pvalues(np.array([0.5]), np.array([np.nan]))


def test_exchangeability_check_warns_on_a_shift_only():
    rng = np.random.default_rng(1)
    cal = rng.normal(size=1000)
    noisy = rng.normal(3.0, 1.0, size=2000)
    assert not exchangeability_check(np.r_[rng.normal(size=3000), noisy], cal).warn
    shifted = exchangeability_check(np.r_[rng.normal(size=3000) + 0.5, noisy], cal)
    assert shifted.warn and "may not be exchangeable" in shifted.message
    assert exchangeability_check(np.r_[rng.normal(size=3000) + 5, noisy], cal).warn  # all above the median


def test_fdr_flags_tests_train_rows_against_the_trusted_rows():
    """fdr_flags takes the trusted rows' 1 - q[given] as the clean calibration sample; only scored
    train rows get a p-value; BH flags the clear cases."""
    rng = np.random.default_rng(0)
    n, c = 600, 3
    labels = rng.integers(0, c, n)
    trusted = np.zeros(n, bool)
    trusted[:100] = True
    train = ~trusted
    noisy = train & (rng.random(n) < 0.3)
    posterior = np.full((n, c), 0.05)
    posterior[np.arange(n), labels] = rng.uniform(0.6, 0.9, n)  # clean: confident in the given label
    posterior[noisy, labels[noisy]] = rng.uniform(0.0, 0.05, noisy.sum())  # noisy: not at all
    posterior /= posterior.sum(axis=1, keepdims=True)
    signal = np.where(train, 1.0 - posterior[np.arange(n), labels], np.nan)
    signal[5 + 100] = np.nan  # an unscored train row is not tested
    out = fdr_flags(signal, posterior, labels, train=train, trusted=trusted, q=0.1)
    assert np.isnan(out.pvalue[trusted]).all() and np.isnan(out.pvalue[105]) and not out.flag[105]
    np.testing.assert_allclose(out.pvalue[train & np.isfinite(signal)],
                               conformal_pvalues(signal[train & np.isfinite(signal)],
                                                 1.0 - posterior[np.arange(100), labels[:100]]))
    assert out.flag[noisy & np.isfinite(signal)].all(), "every noisy row's p-value is the smallest"
    assert (out.flag & ~noisy).sum() / out.flag.sum() < 0.1, "a few clean rows, as BH allows"
    assert out.summary["trusted_rows"] == 100 and out.summary["flagged"] == int(out.flag.sum())
    assert out.summary["smallest_pvalue"] == pytest.approx(1 / 101)
    with pytest.raises(ValueError, match="--fdr needs trusted rows"):
        fdr_flags(signal, posterior, labels, train=train, trusted=np.zeros(n, bool), q=0.1)


def test_export_with_fdr_adds_the_columns_and_the_summary(run):
    from winnow.stages.export import ExportParams, export

    base = export(run["manifest"], run["features"], None, None, ExportParams(), seed=0)
    res = export(run["manifest"], run["features"], None, None, ExportParams(fdr=0.2), seed=0)
    cur = res.curated
    assert "noise_pvalue" not in base.curated.column_names and "fdr" not in base.summary
    assert cur["noise_flag"].equals(base.curated["noise_flag"]), "the calibrated flags stay the default"
    assert res.train.equals(base.train), "train.parquet does not change"
    split = np.asarray(cur["split"].to_pylist())
    p = cur["noise_pvalue"].to_numpy(zero_copy_only=False).astype(float)
    scored = np.isfinite(cur["noise_score"].to_numpy(zero_copy_only=False).astype(float))
    assert np.isfinite(p[scored]).all() and np.isnan(p[split != "train"]).all()
    flag = cur["noise_flag_fdr"].to_numpy(zero_copy_only=False)
    np.testing.assert_array_equal(flag, benjamini_hochberg(p, 0.2))
    s = res.summary["fdr"]
    assert s["q"] == 0.2 and s["flagged"] == int(flag.sum()) > 0 and s["trusted_rows"] == int((split == "trusted").sum())
    truth = run["flip"][flag].mean()
    assert truth >= 0.8, "most rows flagged at q=0.2 are the flipped ones"


@pytest.mark.parametrize("value", ["0", "1", "1.5", "text", "nan"])
def test_a_bad_fdr_value_is_refused_naming_the_option(tmp_path, value):
    from click.testing import CliRunner

    from winnow.pipeline.cli import main

    (tmp_path / "run").mkdir()
    res = CliRunner().invoke(main, ["export", "--run-dir", str(tmp_path / "run"), "--fdr", value])
    assert res.exit_code == 2 and "--fdr" in res.output, res.output


def test_when_the_mixture_sees_no_noise_export_falls_back_to_the_confident_joint(run):
    """Trusted rows that score higher than the train rows (the clean score distribution is
    shifted up, as when wrong labels hide among clean ones): the trusted-clean mixture bound is 0.
    Export then uses the confident joint's count instead of flagging nothing."""
    import pyarrow as pa

    from winnow.stages.common.arrow import vectors_from_arrow, vectors_to_arrow
    from winnow.stages.export import ExportParams, export

    probs = vectors_from_arrow(run["features"]["probs"]).copy()
    split = np.asarray(run["manifest"]["split"].to_pylist())
    given = run["manifest"]["label"].to_numpy(zero_copy_only=False)
    trusted = split == "trusted"
    k = probs.shape[1]
    probs = 0.5 * probs + 0.5 / k  # no train row scores above 1 - 0.5 / k
    probs[trusted] = 0.99 / (k - 1)
    probs[trusted, given[trusted]] = 0.01  # trusted rows look noisy: the clean scores sit above every train one
    valid = np.isfinite(probs).all(axis=1)
    features = run["features"].set_column(2, "probs", vectors_to_arrow(np.nan_to_num(probs), valid))
    emb = features.drop_columns(["embedding"])  # the probs alone: no trusted-neighbour vote to rescue them
    res = export(run["manifest"], emb, None, None, ExportParams(calibration="trusted-clean"), seed=0)
    thr = res.summary["threshold"]
    assert "the trusted-clean mixture found no noise" in thr.get("fallback", ""), thr
    assert res.summary["flagged"] > 0 and isinstance(features, pa.Table)
