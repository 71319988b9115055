"""Calibrating the flag threshold: how many rows are noisy, and where to cut the scores.

Three methods (``--calibration``), all driven by data rather than a guessed constant; the
default, ``auto``, picks ``noise-rate`` when the class posterior is reliable (out-of-sample
accuracy >= 0.8 on the trusted rows) and ``trusted-clean`` otherwise, unless the mixture's noise
rate is below half the confident joint's: that lower bound collapses when the noise picked the
hard rows, and ``noise-rate`` is used again (see :func:`winnow.stages.export.core._calibrate`). ``--flag-threshold`` overrides them all.

* ``trusted-clean``: trusted rows are clean, and scored out-of-sample like train rows
  (leave-one-out or out-of-fold trusted votes), so their label signals sample the *clean*
  distribution ``G_c`` (reweighted to the train class mix). They have no meta weight: with the
  meta signal in ``noise_score`` the label signal sets how many rows to flag, ``noise_score``
  which.
  The train scores mix ``G_c`` and the noisy distribution: the noise rate ``pi`` follows by
  mixture-proportion estimation (:func:`mixture_noise_rate`), and the expected false positives at
  any threshold are ``(1 - pi) (1 - G_c)``, so the threshold maximising the expected F1 is
  computable (:func:`threshold_max_expected_f1_mixture`). Needs no assumption on the noise model
  (pair flips, imbalance) and picks a recall-leaning cut when the scores separate poorly. Needs
  >= 10 trusted rows (falls back to ``noise-rate``) and probs that are out-of-sample for them.
* ``noise-rate``: estimate the number of mislabelled train rows with the confident joint
  (Northcutt et al., 2021) of the combined class posterior ``q``: for each class j the threshold
  ``t_j`` is the mean of ``q[:, j]`` over rows labelled j; a row counts towards ``(given, j)``
  for the most likely class j whose ``q`` reaches ``t_j``; the joint is rescaled so that each
  given-label row sums to that label's count, and its off-diagonal mass is the noise estimate.
  The threshold flags that many top-scoring rows. Accurate with a strong posterior (digits),
  but overestimates the noise badly with weak features (CIFAR-10 on pixels: 0.74 for 0.40).
* ``trusted-flips``: score trusted rows with their labels and with seeded synthetic uniform
  flips, and pick the threshold maximising the F1 expected at the confident-joint noise rate
  ``pi``: ``F1 = 2 pi TPR / (pi TPR + (1 - pi) FPR + pi)``. Uniform flips are easier to spot
  than structured (pair) noise, so it can be optimistic there.
"""

from __future__ import annotations

import numpy as np


def confident_joint(posterior: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Calibrated confident joint ``C[given, likely_true]`` (C x C, rows sum to the label counts).

    Parameters
    ----------
    posterior : (m, C) class probabilities of the rows to count (all finite).
    labels : (m,) given labels in [0, C).
    n_classes : C.
    """
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    sums = np.zeros(n_classes)
    np.add.at(sums, labels, posterior[np.arange(len(labels)), labels])
    # t_j: mean self-confidence of class j; classes without rows can never be "confident".
    thresholds = np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)
    above = posterior >= thresholds[None, :] - 1e-12
    masked = np.where(above, posterior, -np.inf)
    likely = np.argmax(masked, axis=1)
    has = above.any(axis=1)
    joint = np.zeros((n_classes, n_classes))
    np.add.at(joint, (labels[has], likely[has]), 1.0)
    row = joint.sum(axis=1, keepdims=True)
    # Rows with no confident example keep their count on the diagonal (no evidence of noise).
    calibrated = np.where(row > 0, joint / np.where(row > 0, row, 1.0), np.eye(n_classes)) * counts[:, None]
    return calibrated


def estimated_noisy_per_class(joint: np.ndarray) -> np.ndarray:
    """Off-diagonal mass of each given-label row of a calibrated confident joint, shape (C,)."""
    return joint.sum(axis=1) - np.diag(joint)


def threshold_for_count(scores: np.ndarray, count: int) -> float:
    """Smallest threshold that flags (``score >= t``) the ``count`` highest finite scores.

    With ``count == 0`` the threshold sits just above the highest score (nothing flagged).
    """
    s = np.sort(scores[np.isfinite(scores)])[::-1]
    if len(s) == 0:
        return 1.0
    if count <= 0:
        return float(np.nextafter(s[0], np.inf))
    return float(s[min(count, len(s)) - 1])


def threshold_max_expected_f1(clean: np.ndarray, noisy: np.ndarray, prevalence: float) -> tuple[float, float]:
    """Threshold maximising F1 at ``prevalence`` given score samples of clean and noisy rows.

    Parameters
    ----------
    clean, noisy : 1-D score samples (higher = noisier) of known-clean and known-noisy rows.
    prevalence : expected fraction of noisy rows, in (0, 1).

    Returns
    -------
    (threshold, expected F1); flags are ``score >= threshold``.
    """
    clean = np.sort(np.asarray(clean, dtype=np.float64))
    noisy = np.sort(np.asarray(noisy, dtype=np.float64))
    if len(clean) == 0 or len(noisy) == 0:
        raise ValueError("trusted-flips calibration needs scored trusted rows; use --calibration noise-rate")
    pi = float(np.clip(prevalence, 1e-6, 1 - 1e-6))
    cand = np.unique(np.concatenate([clean, noisy]))
    tpr = 1.0 - np.searchsorted(noisy, cand, side="left") / len(noisy)
    fpr = 1.0 - np.searchsorted(clean, cand, side="left") / len(clean)
    f1 = 2 * pi * tpr / (pi * tpr + (1 - pi) * fpr + pi)
    best = int(np.argmax(f1))
    return float(cand[best]), float(f1[best])


def _weighted_cdf(sample: np.ndarray, weights: np.ndarray, at: np.ndarray, *, strict: bool = False) -> np.ndarray:
    """Weighted empirical CDF ``P(X <= t)`` (``P(X < t)`` when ``strict``) at each ``t``."""
    order = np.argsort(sample, kind="stable")
    xs, cw = sample[order], np.cumsum(weights[order])
    pos = np.searchsorted(xs, at, side="left" if strict else "right")
    return np.where(pos > 0, cw[np.maximum(pos - 1, 0)], 0.0) / cw[-1]


def mixture_noise_rate(train_scores: np.ndarray, clean_scores: np.ndarray, clean_weights: np.ndarray | None = None,
                       quantiles: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5)) -> float:
    """Noisy fraction of the train rows from the clean score distribution of trusted rows.

    Train scores mix clean rows (distributed like the trusted rows' scores, CDF ``G_c``;
    ``clean_weights`` reweight the trusted rows to the train class mix) and noisy rows
    (``G_n``): ``G_train(t) = (1 - pi) G_c(t) + pi G_n(t)``, so
    ``1 - G_train(t) / G_c(t) = pi (1 - G_n(t) / G_c(t))``, a lower bound on ``pi`` that is tight
    where noisy rows are rare (low scores). The estimate is its maximum over thresholds at the
    given quantiles of the clean scores (low enough to be tight, high enough to be stable).
    """
    tr = np.asarray(train_scores, dtype=np.float64)
    tr = tr[np.isfinite(tr)]
    cl = np.asarray(clean_scores, dtype=np.float64)
    w = np.ones(len(cl)) if clean_weights is None else np.asarray(clean_weights, dtype=np.float64)
    grid = np.unique(cl)
    g_grid = _weighted_cdf(cl, w, grid)
    ts = grid[np.minimum(np.searchsorted(g_grid, quantiles), len(grid) - 1)]
    g_c = _weighted_cdf(cl, w, ts)
    g_t = _weighted_cdf(tr, np.ones(len(tr)), ts)
    return float(np.clip(np.max(1 - g_t / g_c), 0.0, 1.0 - 1e-6))


def threshold_max_expected_f1_mixture(train_scores: np.ndarray, clean_scores: np.ndarray, prevalence: float,
                                      clean_weights: np.ndarray | None = None) -> tuple[float, float]:
    """Threshold on the train scores maximising the F1 expected from the clean score CDF.

    At threshold t a fraction ``F(t)`` of the train rows is flagged (``score >= t``); of them
    ``(1 - pi) (1 - G_c(t-))`` are expected clean, the rest noisy, so ``F1 = 2 TP / (F + pi)``.

    With no evidence of noise (``prevalence <= 0``) every threshold has an expected F1 of 0 and
    the arg-max is arbitrary (it once flagged 94% of CIFAR-10's rows): the threshold is then just
    above the highest train score, so nothing is flagged.

    Returns
    -------
    (threshold, expected F1).
    """
    tr = np.asarray(train_scores, dtype=np.float64)
    tr = np.sort(tr[np.isfinite(tr)])
    if prevalence <= 0 or len(tr) == 0:
        return float(np.nextafter(tr[-1], np.inf)) if len(tr) else 1.0, 0.0
    cl = np.asarray(clean_scores, dtype=np.float64)
    w = np.ones(len(cl)) if clean_weights is None else np.asarray(clean_weights, dtype=np.float64)
    pi = float(np.clip(prevalence, 1e-6, 1 - 1e-6))
    cand = np.unique(tr)
    flagged = 1.0 - np.searchsorted(tr, cand, side="left") / len(tr)
    fp = (1 - pi) * (1.0 - _weighted_cdf(cl, w, cand, strict=True))
    tp = np.clip(flagged - fp, 0.0, pi)
    f1 = 2 * tp / (flagged + pi)
    best = int(np.argmax(f1))
    return float(cand[best]), float(f1[best])


def class_mix_weights(trusted_labels: np.ndarray, train_labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Per trusted row, n_train(c) / n_trusted(c) of its class c: trusted sets are often balanced,
    the train split rarely is, so statistics over trusted rows are reweighted to the train mix.
    All ones when the train split has none of the trusted rows' classes."""
    y = np.asarray(trusted_labels, dtype=np.int64)
    n_train_c = np.bincount(np.asarray(train_labels, dtype=np.int64), minlength=n_classes).astype(np.float64)
    n_trusted_c = np.bincount(y, minlength=n_classes).astype(np.float64)
    w = (n_train_c / np.maximum(n_trusted_c, 1))[y]
    return w if w.sum() > 0 else np.ones(len(y))
