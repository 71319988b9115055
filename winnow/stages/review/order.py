"""Which rows a person reviews first.

A reviewer who knows the true label corrects a row exactly when its given label is wrong, so
the expected number of labels corrected per decision is P(given label wrong) under export's
combined class posterior q. export keeps the suggestion (argmax q) and its confidence; from
them: where the suggestion agrees with the given label, P(wrong) = 1 - q[given] = 1 - confidence
exactly; where it differs, P(wrong) >= confidence, and the noise score (1 - q[given], averaged
with the meta-weight signal when export used it) estimates it. ``gain`` orders by that;
``score`` by the noise score alone; ``class`` groups by given class, each by gain.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from winnow.stages.common import schema
from winnow.stages.common.rows import labels_array, split_array, usable_mask

ORDERS = ("gain", "score", "class")


def expected_gain(curated: pa.Table) -> np.ndarray:
    """(n,) float: the expected labels corrected by reviewing each row (NaN where unscored)."""
    label = labels_array(curated)
    score = curated["noise_score"].to_numpy(zero_copy_only=False).astype(np.float64)
    suggested = curated["suggested_label"].fill_null(-1).to_numpy(zero_copy_only=False)
    conf = curated["suggested_confidence"].to_numpy(zero_copy_only=False).astype(np.float64)
    conf = np.nan_to_num(conf, nan=0.0)
    differs = (suggested >= 0) & (suggested != label)
    return np.where(differs, np.maximum(score, conf), np.minimum(score, 1.0 - conf))


def review_order(curated: pa.Table, *, order: str = "gain", flagged_only: bool = True,
                 exclude: set[str] | None = None) -> np.ndarray:
    """Row positions of ``curated`` (export's table) in the order to review them.

    Parameters
    ----------
    curated : export's ``curated.parquet`` (``noise_score``, ``noise_flag``, ``suggested_label``,
        ``suggested_confidence``, ``label``, ``split``, ``error``).
    order : ``gain`` (default), ``score`` or ``class`` (see the module docstring).
    flagged_only : only the flagged rows; else every scored training row.
    exclude : ids not to show again (decided in an earlier session).

    Returns
    -------
    (m,) int64 positions; ties are broken by manifest order, so the order is reproducible.
    """
    if order not in ORDERS:
        raise ValueError(f"--order {order!r}: choose one of {', '.join(ORDERS)}")
    gain = expected_gain(curated)
    score = curated["noise_score"].to_numpy(zero_copy_only=False).astype(np.float64)
    keep = usable_mask(curated) & (split_array(curated) == schema.TRAIN) & np.isfinite(score)
    if flagged_only:
        keep &= np.asarray(curated["noise_flag"].to_numpy(zero_copy_only=False), dtype=bool)
    if exclude:
        keep &= ~np.isin(np.asarray(curated["id"].to_pylist(), dtype=object), list(exclude))
    rows = np.flatnonzero(keep)
    key = np.nan_to_num(score if order == "score" else gain, nan=-1.0)[rows]
    if order == "class":
        return rows[np.lexsort((rows, -key, labels_array(curated)[rows]))]
    return rows[np.lexsort((rows, -key))]
