"""Flags with a false-discovery guarantee: conformal p-values against the trusted rows, then
Benjamini-Hochberg.

The trusted rows are clean and are scored out of sample exactly as the training rows are
(cross-fitted probabilities, leave-one-out neighbour votes; see
:mod:`winnow.stages.export.scores`). If a clean training row's score is exchangeable with the
trusted rows' scores, its conformal p-value

    p_i = (1 + #{j trusted : s_j >= s_i}) / (n_trusted + 1)

is super-uniform (P(p_i <= t) <= t), and Benjamini-Hochberg at level q over the training rows
keeps the expected share of clean rows among the flagged ones at or below q (Bates, Candes, Lei,
Romano and Sesia, "Testing for outliers with conformal p-values", Ann. Statist. 2023: the
conformal p-values are PRDS, so BH is valid without a correction).

What breaks the assumption: a trusted set that is easier (more typical) than the clean training
rows, e.g. picked as prototypes, or from another distribution; then clean training rows score
higher than trusted rows and more of them are flagged than q allows.
:func:`exchangeability_check` tests for the symptom. The meta-weight signal is not used here:
trusted rows have no meta weight, so a score that includes it is not exchangeable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import false_discovery_control, ks_2samp


def conformal_pvalues(scores: np.ndarray, calibration: np.ndarray) -> np.ndarray:
    """Conformal p-values of ``scores`` against the clean ``calibration`` scores (high = noisy).

    Parameters
    ----------
    scores : (m,) float
        Scores to test; NaN gives a NaN p-value.
    calibration : (n,) float
        Scores of rows known to be clean, computed the same way; NaN entries are ignored.

    Returns
    -------
    (m,) float64 in [1 / (n + 1), 1], NaN where ``scores`` is NaN.

    Examples
    --------
    >>> conformal_pvalues(np.array([0.9, 0.1]), np.array([0.2, 0.3, 0.5]))
    array([0.25, 1.  ])
    """
    cal = np.sort(np.asarray(calibration, dtype=np.float64))
    cal = cal[np.isfinite(cal)]
    if len(cal) == 0:
        raise ValueError("conformal p-values need at least one finite calibration (trusted) score")
    s = np.asarray(scores, dtype=np.float64)
    at_least = len(cal) - np.searchsorted(cal, s, side="left")  # #{j : c_j >= s_i}
    return np.where(np.isfinite(s), (1.0 + at_least) / (len(cal) + 1.0), np.nan)


def benjamini_hochberg(pvalues: np.ndarray, q: float) -> np.ndarray:
    """Rows rejected by Benjamini-Hochberg at level ``q`` (NaN p-values are not tested).

    Parameters
    ----------
    pvalues : (m,) float in [0, 1] or NaN.
    q : float in (0, 1), the false-discovery rate to control.

    Returns
    -------
    (m,) bool: True where rejected (flagged).
    """
    if not 0.0 < q < 1.0:
        raise ValueError(f"the false-discovery rate q must be in (0, 1), got {q}")
    p = np.asarray(pvalues, dtype=np.float64)
    tested = np.isfinite(p)
    out = np.zeros(len(p), dtype=bool)
    if tested.any():
        out[tested] = false_discovery_control(p[tested], method="bh") <= q
    return out


@dataclass
class ExchangeabilityCheck:
    """Whether the trusted scores look like the clean training rows' scores (see module doc)."""

    statistic: float  # two-sample KS statistic on the lower halves
    pvalue: float
    warn: bool
    message: str


def exchangeability_check(train: np.ndarray, trusted: np.ndarray, *, alpha: float = 0.01) -> ExchangeabilityCheck:
    """Compare the low-score halves of the training and trusted score distributions.

    The training scores mix clean rows and noisy ones, and noisy rows score high; below the
    trusted median, almost every training row is clean, so there the two distributions should
    match when the assumption holds. A two-sample KS test on the scores below the trusted median
    (each side conditioned the same way) flags a difference beyond sampling noise at ``alpha``.
    """
    train = np.asarray(train, dtype=np.float64)
    trusted = np.asarray(trusted, dtype=np.float64)
    train, trusted = train[np.isfinite(train)], trusted[np.isfinite(trusted)]
    if len(trusted) < 10 or len(train) < 10:
        return ExchangeabilityCheck(float("nan"), float("nan"), False, "too few rows to check")
    cut = float(np.median(trusted))
    a, b = train[train <= cut], trusted[trusted <= cut]
    if len(a) < 5 or len(b) < 5:
        return ExchangeabilityCheck(float("nan"), float("nan"), True,
                                    f"only {len(a)} training rows score at or below the trusted median {cut:.3g}: "
                                    "the trusted rows score lower than almost every training row, so clean "
                                    "training rows are probably not exchangeable with them")
    res = ks_2samp(a, b)
    warn = bool(res.pvalue < alpha)
    msg = (f"the low scores of the training rows and of the trusted rows differ (KS {res.statistic:.3f}, "
           f"p={res.pvalue:.2g}): the trusted rows may not be exchangeable with the clean training rows, "
           "so the FDR guarantee may not hold" if warn else
           f"low scores of training and trusted rows agree (KS {res.statistic:.3f}, p={res.pvalue:.2g})")
    return ExchangeabilityCheck(float(res.statistic), float(res.pvalue), warn, msg)


@dataclass
class FdrFlags:
    """Per-row p-values and flags of :func:`fdr_flags`, and what the summary reports."""

    pvalue: np.ndarray  # (n,) float64, NaN where the row is not tested (not a scored train row)
    flag: np.ndarray  # (n,) bool
    summary: dict


def fdr_flags(label_signal: np.ndarray, posterior: np.ndarray, labels: np.ndarray, *, train: np.ndarray,
              trusted: np.ndarray, q: float) -> FdrFlags:
    """Flags at false-discovery rate ``q``: conformal p-values of the train rows' label signal
    (``1 - q[given]``, the meta weight left out: trusted rows have none) against the same signal of
    the trusted rows, which export scores out of sample (leave-one-out neighbour votes,
    cross-fitted probs), then Benjamini-Hochberg.

    Parameters
    ----------
    label_signal : (n,) float, ``1 - posterior[i, labels[i]]`` for scored train rows, NaN elsewhere.
    posterior : (n, C) export's combined class posterior (NaN rows where none).
    labels : (n,) int given labels.
    train, trusted : (n,) bool masks of the usable train and trusted rows.
    q : the false-discovery rate, in (0, 1).
    """
    rows = np.flatnonzero(trusted & np.isfinite(posterior).all(axis=1))
    if len(rows) == 0:
        raise ValueError("--fdr needs trusted rows with a class posterior (run embed, and give a trusted split)")
    calibration = 1.0 - posterior[rows, labels[rows]]
    tested = train & np.isfinite(label_signal)
    pvalue = np.full(len(labels), np.nan)
    pvalue[tested] = conformal_pvalues(label_signal[tested], calibration)
    flag = benjamini_hochberg(pvalue, q)
    check = exchangeability_check(label_signal[tested], calibration)
    summary = {"q": q, "flagged": int(flag.sum()), "tested_rows": int(tested.sum()), "trusted_rows": int(len(rows)),
               "smallest_pvalue": 1.0 / (len(rows) + 1),
               "exchangeability": {"ks_statistic": check.statistic, "pvalue": check.pvalue, "warn": check.warn,
                                   "message": check.message}}
    return FdrFlags(pvalue, flag, summary)
