"""The data issues a kNN graph reveals besides label noise: duplicates, outliers, class overlap and
class imbalance (cleanlab's Datalab finds the same kinds; this works at the scale select does).

Distances are on the unit sphere, as everywhere in winnow (:mod:`winnow.stages.select.knn`):
``||x_hat_i - x_hat_j||`` in [0, 2] for L2-normalised embeddings.

- **Duplicates.** *Exact*: bit-identical embeddings. The embedding is a deterministic function of
  the decoded pixels (or is the user's vector), so identical images are exact duplicates
  whatever their file bytes, and no image needs to be read again. *Near*: a neighbour whose
  cosine distance ``1 - cos`` is below ``near_factor`` times the median nearest-neighbour cosine
  distance (Datalab's rule with its default metric for embeddings, same default 0.13). On the unit
  sphere ``1 - cos = d^2 / 2``, so the radius is ``sqrt(near_factor)`` times the median distance,
  not ``near_factor`` times it (8x tighter in cosine terms, which missed 9 same-photo pairs of
  CIFAR-10 that Datalab finds). Rows linked by either form groups; ``duplicate_of`` names the group's first row in
  manifest order (null for that row and for rows without a twin), ``duplicate_kind`` says
  ``exact`` or ``near``. A test row with a twin in train or trusted is leakage.
- **Outliers.** ``outlier_score``: the mean distance to the ``k`` nearest *trusted* rows (for a
  trusted row, the other trusted rows), and a row is flagged when it scores beyond every trusted
  row: a conformal test of "looks like the clean reference data" whose p-value is then at most
  1 / (n_trusted + 1), so about that share of clean rows is flagged (a 99% quantile instead
  flagged 1% of 100k rows, drowning 30 planted outliers). Scoring against all
  rows instead (Datalab's way) misses outliers that arrive together: 30 photos among digits are
  each other's nearest neighbours. With fewer than 20 trusted rows the score falls back to the
  ``k`` nearest of all rows, thresholded at the 99% quantile of every row's score.
- **Class overlap.** ``M[i, j]``: the mean posterior mass of class j over the rows labelled i;
  the pairs with the largest ``M[i, j] + M[j, i]`` are the confusable ones.
- **Imbalance.** Train rows per class, the max/min ratio, and the classes with almost no rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa

from winnow.stages.common import schema
from winnow.stages.select.knn import IndexSpec, knn_search, normalize

NEAR_FACTOR = 0.13  # Datalab's near_duplicate threshold: a fraction of the median NN cosine distance
OUTLIER_QUANTILE = 0.99
NEIGHBOURS = 5  # trusted rows an outlier score averages over
# A duplicate is a row's nearest neighbour, within a radius far below the typical neighbour
# distance: two neighbours and 4 IVF cells suffice to find it (the default 5 and 32 took 200 s of
# export's time at 1M rows), and cells trained on 39 rows each (FAISS's minimum) place a twin
# with its row as well as cells trained on 256 (training on every row was 50 of the audit's 84 s at 1M rows).
DUPLICATE_NEIGHBOURS, DUPLICATE_NPROBE, DUPLICATE_TRAIN_PER_CELL = 2, 4, 39


@dataclass
class Audit:
    """Per-row columns (n rows) and the summary of :func:`audit`."""

    duplicate_of: np.ndarray  # (n,) int64 row of the group's first row, -1 where none
    duplicate_kind: np.ndarray  # (n,) object: "exact", "near" or None
    outlier_score: np.ndarray  # (n,) float64, NaN where the row has no embedding
    outlier_flag: np.ndarray  # (n,) bool
    summary: dict = field(default_factory=dict)

    def columns(self, ids: list[str]) -> list[tuple[pa.Field, pa.Array]]:
        """The manifest columns, in DESIGN.md's names (``duplicate_of`` as the twin's id)."""
        has = self.duplicate_of >= 0
        twin = [ids[j] if ok else None for j, ok in zip(self.duplicate_of.tolist(), has.tolist())]
        scored = np.isfinite(self.outlier_score)
        return [
            (pa.field("duplicate_of", pa.string()), pa.array(twin, pa.string())),
            (pa.field("duplicate_kind", pa.string()), pa.array(self.duplicate_kind.tolist(), pa.string())),
            (pa.field("outlier_score", pa.float32()), pa.array(self.outlier_score, pa.float32(), mask=~scored)),
            (pa.field("outlier_flag", pa.bool_(), nullable=False), pa.array(self.outlier_flag)),
        ]


def _duplicate_spec(spec: IndexSpec | None) -> IndexSpec:
    """The index for the duplicate search: the caller's, probing few IVF cells."""
    base = spec or IndexSpec()
    return replace(base, nprobe=min(base.nprobe, DUPLICATE_NPROBE), train_per_cell=DUPLICATE_TRAIN_PER_CELL)


def _groups(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected components of ``pairs`` ((m, 2) rows), labelled by their smallest row."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    if len(pairs) == 0:
        return np.arange(n)
    g = sp.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, comp = connected_components(g, directed=False)
    first = np.full(comp.max() + 1, n, dtype=np.int64)
    np.minimum.at(first, comp, np.arange(n))
    return first[comp]


def _rows_of(embedding: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``embedding[rows]`` as contiguous float32, without a copy when ``rows`` is every row (an
    (n, d) copy is 0.5 GB at 1M x 128)."""
    if len(rows) == len(embedding):
        return np.ascontiguousarray(embedding, dtype=np.float32)
    return np.ascontiguousarray(embedding[rows], dtype=np.float32)


HASH_BLOCK_ROWS = 65_536


def _first_of_equal_rows(bits: np.ndarray) -> np.ndarray:
    """For each row of ``bits``, the first row with the same bytes (np.unique on one opaque value a row)."""
    view = np.ascontiguousarray(bits).view(np.dtype((np.void, bits.dtype.itemsize * bits.shape[1]))).ravel()
    _, first, inverse = np.unique(view, return_index=True, return_inverse=True)
    return first[inverse.ravel()]


def exact_representatives(x: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """For each row of ``x`` (m, d), the index of the first row with bit-identical values.

    Rows are grouped by a 64-bit hash of their bits (a seeded random linear hash, a block of rows
    at a time), and every group is then checked bit for bit, so a hash collision never joins two
    different rows. Sorting the rows themselves (np.unique on each row's bytes) held a sorted
    copy of all of them: +1.5 GB of export's peak at 1M x 128.
    """
    m = len(x)
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    bits = x.reshape(m, -1).view(np.uint32) if x.dtype.itemsize == 4 else x.reshape(m, -1).view(np.uint8)
    mult = np.random.default_rng(seed).integers(1, 2**63, size=bits.shape[1], dtype=np.uint64) | np.uint64(1)
    hashes = np.empty(m, dtype=np.uint64)
    for i in range(0, m, HASH_BLOCK_ROWS):
        block = bits[i:i + HASH_BLOCK_ROWS].astype(np.uint64)
        block *= mult  # wraps modulo 2**64, as a hash should
        hashes[i:i + HASH_BLOCK_ROWS] = block.sum(axis=1, dtype=np.uint64)
    _, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    rep = first[inverse.ravel()].astype(np.int64)
    others = np.flatnonzero(rep != np.arange(m))
    same = (bits[others] == bits[rep[others]]).all(axis=1)
    if not same.all():  # a collision: settle the rows of the buckets involved by their bytes
        bucket = np.isin(rep, rep[others[~same]])
        rows = np.flatnonzero(bucket)
        rep[rows] = rows[_first_of_equal_rows(bits[rows])]
    return rep


def find_duplicates(embedding: np.ndarray, valid: np.ndarray, *, near_factor: float = NEAR_FACTOR,
                    spec: IndexSpec | None = None, ids: np.ndarray | None = None,
                    sims: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """``(duplicate_of, duplicate_kind, radius)`` over the valid rows (see the module docstring).

    ``ids``/``sims`` are a kNN search over the valid rows' normalised embeddings (row positions
    within the valid rows), when the caller has one; else one is made here.
    """
    n = len(valid)
    rows = np.flatnonzero(valid)
    dup_of = np.full(n, -1, dtype=np.int64)
    kind = np.full(n, None, dtype=object)
    if len(rows) < 2:
        return dup_of, kind, 0.0
    x = _rows_of(embedding, rows)
    if ids is None or sims is None:
        ids, sims, _ = knn_search(normalize(x), DUPLICATE_NEIGHBOURS, _duplicate_spec(spec))
    dist = np.sqrt(np.clip(4.0 * (1.0 - sims.astype(np.float64)), 0.0, None))
    found = ids >= 0
    nn = np.where(found[:, 0], dist[:, 0], np.nan) if ids.shape[1] else np.full(len(rows), np.nan)
    # Datalab's rule on cosine distance (d^2 / 2): d^2 < near_factor * median(d^2).
    radius = float(np.sqrt(near_factor * np.nanmedian(nn**2))) if np.isfinite(nn).any() else 0.0
    exact_rep = exact_representatives(x)  # the first valid row with the same vector
    exact_pairs = np.column_stack([np.arange(len(rows)), exact_rep])[exact_rep != np.arange(len(rows))]
    near = found & (dist < radius)
    near_pairs = np.column_stack([np.repeat(np.arange(len(rows)), ids.shape[1])[near.ravel()], ids[near]])
    group = _groups(len(rows), np.concatenate([exact_pairs, near_pairs]).astype(np.int64))
    member = group != np.arange(len(rows))
    dup_of[rows[member]] = rows[group[member]]
    same_vector = exact_rep[member] == exact_rep[group[member]]
    kind[rows[member]] = np.where(same_vector, "exact", "near")
    return dup_of, kind, radius


def trusted_distance(x_hat: np.ndarray, trusted: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray:
    """Mean unit-sphere distance of every row of ``x_hat`` to its ``k`` nearest trusted rows (a
    trusted row's own entry left out), exact search (the trusted set is small)."""
    import faiss

    ref = np.ascontiguousarray(x_hat[trusted])
    k = min(k, len(ref) - 1)
    index = faiss.IndexFlatIP(ref.shape[1])
    index.add(ref)
    ip, nn = index.search(np.ascontiguousarray(x_hat), k + 1)
    pos = np.full(len(x_hat), -1)
    pos[np.flatnonzero(trusted)] = np.arange(len(ref))
    drop = nn == pos[:, None]  # a trusted row's own entry
    drop[~drop.any(axis=1), -1] = True  # others: the (k+1)-th
    ip = ip[~drop].reshape(len(x_hat), k).astype(np.float64)
    return np.sqrt(np.clip(2.0 - 2.0 * ip, 0.0, None)).mean(axis=1)


def outlier_scores(ids: np.ndarray, sims: np.ndarray) -> np.ndarray:
    """Mean unit-sphere distance to the found neighbours of each searched row."""
    dist = np.sqrt(np.clip(4.0 * (1.0 - sims.astype(np.float64)), 0.0, None))
    found = ids >= 0
    with np.errstate(invalid="ignore"):
        return np.where(found.any(axis=1), (dist * found).sum(axis=1) / found.sum(axis=1), np.nan)


def class_overlap(posterior: np.ndarray, labels: np.ndarray, rows: np.ndarray, n_classes: int,
                  top: int = 10) -> tuple[np.ndarray, list[dict]]:
    """``(M, pairs)``: ``M[i, j]`` the mean posterior of class j over ``rows`` labelled i, and the
    ``top`` class pairs by ``M[i, j] + M[j, i]``."""
    m = np.zeros((n_classes, n_classes))
    ok = rows & np.isfinite(posterior).all(axis=1)
    for c in range(n_classes):
        sel = ok & (labels == c)
        if sel.any():
            m[c] = posterior[sel].mean(axis=0)
    sym = m + m.T
    i, j = np.triu_indices(n_classes, 1)
    order = np.argsort(-sym[i, j], kind="stable")[:top]
    return m, [{"classes": [int(i[k]), int(j[k])], "overlap": float(sym[i[k], j[k]])} for k in order]


def class_balance(labels: np.ndarray, rows: np.ndarray, n_classes: int, classes: list[str]) -> dict:
    """Train rows per class, the max/min ratio, and the near-empty classes (< 1% of the mean)."""
    counts = np.bincount(labels[rows & (labels >= 0)], minlength=n_classes)
    mean = counts.mean() if n_classes else 0.0
    near_empty = [classes[c] for c in range(n_classes) if counts[c] < max(5, 0.01 * mean)]
    nonzero = counts[counts > 0]
    return {"train_rows_per_class": {classes[c]: int(counts[c]) for c in range(n_classes)},
            "max_min_ratio": float(nonzero.max() / nonzero.min()) if len(nonzero) else None,
            "near_empty_classes": near_empty}


def audit(embedding: np.ndarray | None, posterior: np.ndarray, labels: np.ndarray, split: np.ndarray,
          valid: np.ndarray, classes: list[str], *, ids: list[str], near_factor: float = NEAR_FACTOR,
          outlier_quantile: float = OUTLIER_QUANTILE, spec: IndexSpec | None = None) -> Audit:
    """Every issue of the module docstring for one manifest (n rows).

    Parameters
    ----------
    embedding : (n, d) embeddings (NaN rows = none), or None: no duplicate or outlier check.
    posterior : (n, C) export's combined class posterior (NaN rows where none).
    labels, split, valid : the manifest's given labels, splits and usable-row mask.
    classes : class names; ``ids``: the manifest's ids (for examples in the summary).
    """
    n, c = len(labels), len(classes)
    dup_of = np.full(n, -1, dtype=np.int64)
    kind = np.full(n, None, dtype=object)
    score = np.full(n, np.nan)
    flag = np.zeros(n, dtype=bool)
    summary: dict = {}
    labelled = valid & (split != schema.TEST)
    if embedding is not None:
        ok = valid & np.isfinite(embedding).all(axis=1)
        rows = np.flatnonzero(ok)
        if len(rows) >= 2:
            x_hat = normalize(_rows_of(embedding, rows))
            nn_ids, nn_sims, index_kind = knn_search(x_hat, DUPLICATE_NEIGHBOURS, _duplicate_spec(spec))
            dup_of, kind, radius = find_duplicates(embedding, ok, near_factor=near_factor, ids=nn_ids, sims=nn_sims)
            summary["duplicates"] = _duplicate_summary(dup_of, kind, split, labels, ids, radius, near_factor)
            trusted = ok & (split == schema.TRUSTED)
            if trusted.sum() >= 20:
                score[rows] = trusted_distance(x_hat, trusted[rows])
                base = trusted
                threshold = float(np.max(score[trusted]))
            else:
                score[rows] = outlier_scores(nn_ids, nn_sims)
                base = ok & np.isfinite(score)
                threshold = float(np.quantile(score[base], outlier_quantile))
            flag = np.isfinite(score) & (score > threshold)
            summary["outliers"] = {
                "threshold": threshold, "flagged": int(flag.sum()), "index": index_kind,
                "neighbours": NEIGHBOURS if base is trusted else DUPLICATE_NEIGHBOURS,
                "score": ("mean distance to the nearest trusted rows" if base is trusted
                          else "mean distance to the nearest rows (< 20 trusted rows)"),
                "calibrated_on": (f"the highest trusted row's score (a flagged row's conformal p-value <= "
                                  f"1/{int(trusted.sum()) + 1})" if base is trusted
                                  else f"the {outlier_quantile:.0%} quantile of every row's score (< 20 trusted rows)"),
                "top": [{"id": ids[i], "score": float(score[i])} for i in np.argsort(-np.nan_to_num(score, nan=-1))[:10]
                        if flag[i]],
            }
    overlap, pairs = class_overlap(posterior, labels, labelled, c)
    summary["class_overlap"] = {"pairs": [{"classes": [classes[a] for a in p["classes"]], "overlap": p["overlap"]}
                                          for p in pairs], "matrix": overlap.round(4).tolist()}
    summary["class_balance"] = class_balance(labels, valid & (split == schema.TRAIN), c, classes)
    return Audit(dup_of, kind, score, flag, summary)


def _duplicate_summary(dup_of: np.ndarray, kind: np.ndarray, split: np.ndarray, labels: np.ndarray,
                       ids: list[str], radius: float, near_factor: float) -> dict:
    member = np.flatnonzero(dup_of >= 0)
    pair_splits: dict[str, int] = {}
    for i in member:
        key = "-".join(sorted((str(split[i]), str(split[dup_of[i]]))))
        pair_splits[key] = pair_splits.get(key, 0) + 1
    leak = [i for i in member if (split[i] == schema.TEST) != (split[dup_of[i]] == schema.TEST)]
    conflicting = [i for i in member if split[i] != schema.TEST and split[dup_of[i]] != schema.TEST
                   and labels[i] != labels[dup_of[i]]]
    return {
        "exact": int((kind == "exact").sum()), "near": int((kind == "near").sum()),
        "near_radius": radius, "near_factor": near_factor, "by_splits": pair_splits,
        "leakage": {"rows": len(leak), "examples": [[ids[i], ids[dup_of[i]]] for i in leak[:10]]},
        "different_labels": {"rows": len(conflicting), "examples": [[ids[i], ids[dup_of[i]]] for i in conflicting[:10]]},
    }
