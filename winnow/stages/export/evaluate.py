"""Quality of the flags when the truth is known (synthetic noise, or a truth table).

A row is *noisy* when its given ``label`` differs from the truth. Only scored rows count (train
split, no error, non-null ``noise_score``). Reported overall and per given label:
precision, recall and F1 of ``noise_flag``; AUROC of ``noise_score``; AUROC of the raw meta
``weight`` read as "low weight = noisy" (when the curated table has weights). The metrics are
scikit-learn's; AUROC counts ties one half and is None when a group has only one kind of row.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

from winnow.stages.common.arrow import class_names


def auroc(is_positive: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the ROC curve of ``score`` for ``is_positive`` (higher score = positive).

    scikit-learn's :func:`~sklearn.metrics.roc_auc_score`, with None instead of its error for
    a group that has one kind of row only (a class without noisy rows is common).

    Parameters
    ----------
    is_positive : (m,) bool.
    score : (m,) float, finite; ties count one half.

    Returns
    -------
    AUROC in [0, 1], or None when all rows are positive or all negative.
    """
    is_positive = np.asarray(is_positive, dtype=bool)
    n_pos = int(is_positive.sum())
    if n_pos == 0 or n_pos == len(is_positive):
        return None
    return float(roc_auc_score(is_positive, score))


def _prf(noisy: np.ndarray, flag: np.ndarray) -> dict:
    """Precision, recall and F1 of ``flag`` for ``noisy`` (0 where undefined), and the counts."""
    _, fp, fn, tp = (int(v) for v in confusion_matrix(noisy, flag, labels=[False, True]).ravel())
    precision, recall, f1, _ = precision_recall_fscore_support(
        noisy, flag, labels=[True], average=None, zero_division=0.0)
    return {"precision": float(precision[0]), "recall": float(recall[0]), "f1": float(f1[0]),
            "tp": tp, "fp": fp, "fn": fn}


def _metrics(noisy: np.ndarray, flag: np.ndarray, score: np.ndarray, weight: np.ndarray | None) -> dict:
    out = {"rows": int(len(noisy)), "noisy": int(noisy.sum()), "flagged": int(flag.sum()), **_prf(noisy, flag),
           "auroc_score": auroc(noisy, score)}
    if weight is not None:
        ok = np.isfinite(weight)
        out["auroc_weight"] = auroc(noisy[ok], -weight[ok]) if ok.any() else None
    return out


def evaluate_flags(curated: pa.Table, *, truth: np.ndarray | None = None) -> dict:
    """Precision, recall, F1 and AUROC of the flags, scores and weights against the truth.

    Parameters
    ----------
    curated : the curated table of :func:`winnow.stages.export.core.export` (needs ``label``,
        ``noise_score``, ``noise_flag``; ``weight`` optional).
    truth : (n,) true labels aligned with ``curated``'s rows; defaults to its ``true_label``
        column. Rows whose truth is missing (null / negative) are left out.

    Returns
    -------
    ``{"overall": {...}, "per_class": {class_name: {...}}}`` with keys ``rows``, ``noisy``,
    ``flagged``, ``precision``, ``recall``, ``f1``, ``tp``, ``fp``, ``fn``, ``auroc_score`` and
    (with weights) ``auroc_weight``.
    """
    for col in ("label", "noise_score", "noise_flag"):
        if col not in curated.column_names:
            raise ValueError(f"curated table has no {col!r} column; run export first")
    if truth is None:
        if "true_label" not in curated.column_names or curated["true_label"].null_count == curated.num_rows:
            raise ValueError("no truth available: the curated table has no true_label values (only "
                             "synthetic noise records them); pass a truth table (--truth) instead")
        truth_f = np.asarray(pc.cast(curated["true_label"], pa.float64()).to_numpy(), dtype=np.float64)
    else:
        truth_f = np.asarray(truth, dtype=np.float64)
        if truth_f.shape != (curated.num_rows,):
            raise ValueError(f"truth has shape {truth_f.shape}; expected ({curated.num_rows},), one per curated row")
    score = np.asarray(pc.cast(curated["noise_score"], pa.float64()).to_numpy(), dtype=np.float64)
    label = np.asarray(pc.cast(curated["label"], pa.float64()).to_numpy(), dtype=np.float64)
    flag = np.asarray(pc.fill_null(curated["noise_flag"], False).to_numpy(), dtype=bool)
    weight = (np.asarray(pc.cast(curated["weight"], pa.float64()).to_numpy(), dtype=np.float64)
              if "weight" in curated.column_names else None)
    rows = np.isfinite(score) & np.isfinite(truth_f) & (truth_f >= 0) & np.isfinite(label)
    if not rows.any():
        raise ValueError("no scored row has a known truth; nothing to evaluate")
    noisy = label[rows] != truth_f[rows]
    w = None if weight is None else weight[rows]
    result = {"overall": _metrics(noisy, flag[rows], score[rows], w), "per_class": {}}
    try:
        names = class_names(curated)
    except KeyError:
        names = None
    given = label[rows].astype(np.int64)
    for c in np.unique(given):
        m = given == c
        name = names[c] if names is not None and c < len(names) else str(c)
        result["per_class"][name] = _metrics(noisy[m], flag[rows][m], score[rows][m],
                                             None if w is None else w[m])
    return result
