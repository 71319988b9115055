"""The top flagged examples of a curated manifest, as plain rows (``winnow inspect`` renders them)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from winnow.stages.common.arrow import class_names as table_class_names
from winnow.stages.common.rows import usable_mask


def known_class_names(curated: pa.Table) -> list[str]:
    """Class names, index = label: from the table's metadata, else from its ``label``/``label_name`` pairs."""
    try:
        return table_class_names(curated)
    except KeyError:
        pass
    if "label" not in curated.column_names:
        return []
    labels = curated.column("label").to_pylist()
    names = curated.column("label_name").to_pylist() if "label_name" in curated.column_names else [None] * len(labels)
    top = max((lab for lab in labels if lab is not None), default=-1)
    out = [str(c) for c in range(top + 1)]
    for lab, name in zip(labels, names):
        if lab is not None and name is not None:
            out[lab] = name
    return out


def _require(curated: pa.Table, *columns: str) -> None:
    missing = [c for c in columns if c not in curated.column_names]
    if missing:
        raise ValueError(
            f"curated table lacks column(s) {', '.join(missing)}; pass export's curated.parquet "
            "(it adds noise_score, noise_flag and suggested_label)"
        )


def flagged_indices(curated: pa.Table, *, class_name: str | None = None, top: int | None = 20,
                    min_score: float = 0.0) -> np.ndarray:
    """Row indices of flagged, usable rows with ``noise_score >= min_score``, highest score first.

    Ties keep manifest order. ``class_name`` filters on the given label (``label_name``).
    """
    _require(curated, "noise_score", "noise_flag")
    if top is not None and top < 1:
        raise ValueError(f"--top must be >= 1, got {top}")
    if not 0.0 <= min_score <= 1.0:
        raise ValueError(f"--min-score must be in [0, 1], got {min_score}")
    scores = pc.fill_null(curated.column("noise_score"), 0.0).to_numpy().astype(np.float64)
    keep = pc.fill_null(curated.column("noise_flag"), False).to_numpy(zero_copy_only=False).astype(bool)
    keep &= scores >= min_score
    keep &= usable_mask(curated, need_label=False)
    if class_name is not None:
        names = known_class_names(curated)
        if class_name not in names:
            raise ValueError(f"unknown class {class_name!r}; known classes: {', '.join(map(repr, names))}")
        if "label" in curated.column_names:
            labels = pc.fill_null(curated.column("label"), -1).to_numpy()
            keep &= labels == names.index(class_name)
        else:
            keep &= pc.equal(curated.column("label_name"), class_name).to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(keep)
    rows = rows[np.argsort(-scores[rows], kind="stable")]
    return rows if top is None else rows[:top]


def top_flagged(curated: pa.Table, *, class_name: str | None = None, top: int = 20,
                min_score: float = 0.0) -> list[dict[str, Any]]:
    """The ``top`` flagged examples by descending ``noise_score``.

    Parameters
    ----------
    curated : pa.Table
        Export's ``curated.parquet``.
    class_name : str, optional
        Only examples whose given label has this name; an unknown name raises ValueError listing
        the known ones.
    top : int
        At most this many rows (>= 1).
    min_score : float
        Only rows with ``noise_score >= min_score`` (in [0, 1]).

    Returns
    -------
    list of dict
        One dict per row with ``id``, ``label``, ``label_name``, ``suggested_label``,
        ``suggested_label_name``, ``noise_score``, ``suggested_confidence``, ``weight``, ``uri``
        (None where the manifest has no such value).
    """
    rows = flagged_indices(curated, class_name=class_name, top=top, min_score=min_score)
    names = known_class_names(curated)
    sub = curated.take(pa.array(rows, type=pa.int64()))

    def col(name: str) -> list[Any]:
        return sub.column(name).to_pylist() if name in sub.column_names else [None] * len(sub)

    labels, suggested = col("label"), col("suggested_label")
    label_names = col("label_name")
    out = []
    for i, (rid, score, conf, weight, uri) in enumerate(
        zip(col("id"), col("noise_score"), col("suggested_confidence"), col("weight"), col("uri"))
    ):
        lab, sug = labels[i], suggested[i]
        out.append(
            {
                "id": rid,
                "label": lab,
                "label_name": label_names[i] if label_names[i] is not None else _name(names, lab),
                "suggested_label": sug,
                "suggested_label_name": _name(names, sug),
                "noise_score": score,
                "suggested_confidence": conf,
                "weight": weight,
                "uri": uri,
            }
        )
    return out


def _name(names: list[str], label: int | None) -> str | None:
    if label is None:
        return None
    return names[label] if 0 <= label < len(names) else str(label)


def top_issues(curated: pa.Table, *, top: int = 20) -> list[dict[str, Any]]:
    """The audit's rows (export's ``duplicate_of``, ``duplicate_kind``, ``outlier_flag``): test rows
    that duplicate a train or trusted row first (leakage), then other duplicates, then outliers
    by descending ``outlier_score``; at most ``top``. Each dict has ``id``, ``issue``,
    ``duplicate_of``, ``outlier_score``, ``split``, ``label_name``, ``uri``."""
    _require(curated, "duplicate_of", "duplicate_kind", "outlier_score", "outlier_flag")
    if top < 1:
        raise ValueError(f"--top must be >= 1, got {top}")

    def col(name: str) -> list[Any]:
        return curated.column(name).to_pylist() if name in curated.column_names else [None] * len(curated)

    ids, split, twin, kind, score, flag = (col(c) for c in ("id", "split", "duplicate_of", "duplicate_kind",
                                                             "outlier_score", "outlier_flag"))
    row_of = {rid: i for i, rid in enumerate(ids)}
    found = []
    for i, t in enumerate(twin):
        if t is not None:
            leak = (split[i] == "test") != (split[row_of[t]] == "test") if t in row_of else False
            found.append((0 if leak else 1, 0.0, i, f"{kind[i]} duplicate" + (" (test/train leakage)" if leak else "")))
    found += [(2, -float(score[i]), i, "outlier") for i in range(len(ids)) if flag[i]]
    found.sort()
    names, label, uri = col("label_name"), col("label"), col("uri")
    return [{"id": ids[i], "issue": issue, "duplicate_of": twin[i], "outlier_score": score[i], "split": split[i],
             "label_name": names[i] if names[i] is not None else label[i], "uri": uri[i]}
            for _, _, i, issue in found[:top]]
