"""FAISS neighbour search and the sparse kNN similarity graph used by every selector.

Similarity (one definition, used everywhere: greedy, CRAIG weights, metrics, benchmarks)::

    x_hat = x / ||x||                                  (L2-normalised; see below for x = 0)
    sim(i, j) = (1 + <x_hat_i, x_hat_j>) / 2 = 1 - ||x_hat_i - x_hat_j||^2 / 4   in [0, 1]

i.e. cosine similarity mapped to [0, 1], which is also "largest squared distance on the unit
sphere (4) minus squared distance": maximising facility location with it minimises the total
squared distance to the medoids, as in the seed. Set cover balls use the matching distance
``||x_hat_i - x_hat_j||`` (radius in [0, 2]).

All-zero vectors have no direction. :func:`normalize` gives them one of their own: an extra
coordinate that is 1 for them and 0 for every other row. So identical zero vectors are
duplicates of each other (distance 0, similarity 1) and orthogonal to everything else
(similarity 1/2, distance sqrt(2)), like any two unrelated directions.

FAISS searches (and ranks) by float32 inner products, whose rounding (up to about d * 6e-8)
puts two identical rows at distances like 5e-4 instead of 0. Wherever that rounding could
matter, i.e. for pairs within rounding of distance 0 and, in range search, of the radius,
the distances and similarities this module returns are recomputed in float64 as
``||x_hat_i - x_hat_j||^2`` (:func:`refine_sq_distances`): identical rows are at distance
exactly 0, similarity exactly 1.

The graph keeps, for every point, its ``k`` most similar other points plus itself (sim 1), and
is symmetrised with ``max(W, W.T)``: a scipy CSR matrix with at most ``n * (2k + 1)`` entries.
Exact search (``IndexFlatIP``) is deterministic; IVF is deterministic for a given seed; HNSW
insertion is multi-threaded and may differ between thread counts.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import faiss
import numpy as np
import scipy.sparse as sp

log = logging.getLogger(__name__)

EPS32 = float(np.finfo(np.float32).eps)
# Ball membership is ``d^2 <= r^2 (1 + BALL_RTOL)``: inclusive, and the slack absorbs the
# rounding of r itself (sqrt/square round trip, a radius computed or typed in float32).
BALL_RTOL = 1e-6
_PAIR_CHUNK = 1 << 22  # floats per chunk of pair_sq_distances (32 MiB of float64)


@dataclass(frozen=True)
class IndexSpec:
    """How to search one class: which FAISS index and its knobs (see SelectParams)."""

    kind: str = "auto"  # exact | ivf | hnsw | auto
    exact_threshold: int = 20000
    nlist: int = 0
    nprobe: int = 32
    hnsw_m: int = 32
    ef_search: int = 128
    device: str = "cpu"  # cpu | cuda | auto: a GPU index only when FAISS has GPU support
    seed: int = 0
    train_per_cell: int = 0  # IVF: training rows sampled per cell (0: FAISS's 256; at least 39)

    def resolve(self, n: int) -> str:
        """The index kind actually used for ``n`` rows."""
        if self.kind == "auto":
            return "exact" if n <= self.exact_threshold else "ivf"
        return self.kind


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Return L2-normalised float32 rows (a copy); all-zero rows get a direction of their own.

    When some row is all zero the result has one more column, 1 for those rows and 0 for the
    others (see the module docstring): otherwise identical zero vectors would be at distance
    sqrt(2) from each other, i.e. never in each other's ball or cluster.

    Parameters
    ----------
    vectors : (n, d) array of finite floats.

    Returns
    -------
    (n, d) float32 unit rows, or (n, d + 1) when some row is all zero.
    """
    x = np.array(vectors, dtype=np.float32, order="C", copy=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    zero = norms[:, 0] == 0
    if zero.any():
        x = np.ascontiguousarray(np.hstack([x, zero[:, None].astype(np.float32)]))
    return x


def pair_sq_distances(x_hat: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``||x_hat[rows[p]] - x_hat[cols[p]]||^2`` for every pair p, in float64 (chunked).

    Exactly 0 for identical rows, unlike FAISS's float32 ``2 - 2 <a, b>``; deterministic.
    """
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    out = np.empty(rows.size, dtype=np.float64)
    step = max(1, _PAIR_CHUNK // max(1, x_hat.shape[1]))
    for s in range(0, rows.size, step):
        diff = x_hat[rows[s : s + step]].astype(np.float64)
        diff -= x_hat[cols[s : s + step]]
        out[s : s + step] = np.einsum("ij,ij->i", diff, diff)
    return out


def ip_slack(d: int) -> float:
    """Bound on the float32 rounding of ``<x_hat_i, x_hat_j>`` for rows from :func:`normalize`.

    Higham's gamma_d for the inner product plus the rows' own norm rounding, about
    ``(d + 2) eps32``, with a factor of 2 to spare.
    """
    return 2.0 * (d + 4) * EPS32


def refine_sq_distances(
    x_hat: np.ndarray, rows: np.ndarray, cols: np.ndarray, ip: np.ndarray, limit: float | None = None
) -> np.ndarray:
    """Squared distances ``2 - 2 ip`` of pairs FAISS found, exact where rounding could matter.

    Pairs within ``2 ip_slack(d)`` (the largest rounding of ``2 - 2 ip``, doubled) of 0, or of
    ``limit`` when given, are recomputed by :func:`pair_sq_distances`: duplicates get exactly 0
    and ball membership is decided exactly. The others keep the float32 value, whose rounding
    changes nothing there; recomputing them all would cost O(pairs * d), 10x the search.

    Returns
    -------
    (pairs,) float64 squared distances, >= 0.
    """
    band = 2.0 * ip_slack(x_hat.shape[1])
    d2 = np.maximum(2.0 - 2.0 * np.asarray(ip, dtype=np.float64), 0.0)
    redo = d2 <= band
    if limit is not None:
        redo |= np.abs(d2 - limit) <= band
    d2[redo] = pair_sq_distances(x_hat, rows[redo], cols[redo])
    return d2


def faiss_gpu_available() -> bool:
    """True when this FAISS build has GPU support and sees a GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _to_device(index: faiss.Index, device: str) -> faiss.Index:
    if device == "cpu" or not faiss_gpu_available():
        if device.startswith("cuda"):
            log.warning("--device %s: this FAISS build has no GPU support; searching on CPU", device)
        return index
    # Move only what FAISS can run on GPU (flat and IVF); HNSW stays on CPU.
    if isinstance(index, faiss.IndexHNSW):
        return index
    return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)


def build_index(x_hat: np.ndarray, spec: IndexSpec) -> tuple[faiss.Index, str]:
    """Build an inner-product FAISS index over normalised rows ``x_hat`` (n, d) float32.

    Returns the index (vectors added) and the kind used (``exact``, ``ivf`` or ``hnsw``).
    """
    n, d = x_hat.shape
    kind = spec.resolve(n)
    if kind == "exact":
        index: faiss.Index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        nlist = spec.nlist or max(1, int(4 * math.sqrt(n)))
        nlist = min(nlist, max(1, n // 39))  # FAISS wants >= 39 training points per cell
        quantizer = faiss.IndexFlatIP(d)
        ivf = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.seed = int(spec.seed) % 2**31
        if spec.train_per_cell:
            ivf.cp.max_points_per_centroid = max(spec.train_per_cell, 39)
        ivf.train(x_hat)
        ivf.nprobe = min(spec.nprobe, nlist)
        index = ivf  # the FAISS wrapper keeps `quantizer` referenced by `ivf`
    elif kind == "hnsw":
        hnsw = faiss.IndexHNSWFlat(d, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efSearch = spec.ef_search
        index = hnsw
    else:
        raise ValueError(f"option --index: unknown index kind {kind!r}; use exact, ivf, hnsw or auto")
    index = _to_device(index, spec.device)
    index.add(x_hat)
    return index, kind


def knn_search(x_hat: np.ndarray, k: int, spec: IndexSpec) -> tuple[np.ndarray, np.ndarray, str]:
    """The ``k`` most similar OTHER rows of every row (self excluded).

    Parameters
    ----------
    x_hat : (n, d) float32, L2-normalised rows.
    k : neighbours per row; clipped to ``n - 1``.

    Returns
    -------
    ids : (n, k') int64 neighbour rows, -1 where the index found fewer.
    sims : (n, k') float32 similarities in [0, 1] (see module docstring; duplicates get
        exactly 1), 0 where ids is -1.
    kind : the index kind used.
    """
    n = x_hat.shape[0]
    k_eff = min(k, n - 1)
    if k_eff <= 0:
        return np.empty((n, 0), np.int64), np.empty((n, 0), np.float32), "exact"
    index, kind = build_index(x_hat, spec)
    ip, ids = index.search(x_hat, k_eff + 1)
    # Drop self; when duplicates make self not come first, drop the last column instead.
    is_self = ids == np.arange(n)[:, None]
    no_self = ~is_self.any(axis=1)
    is_self[no_self, -1] = True
    keep = ~is_self
    ids = ids[keep].reshape(n, k_eff).astype(np.int64)
    ip = ip[keep].reshape(n, k_eff)
    found = ids >= 0
    d2 = refine_sq_distances(x_hat, np.nonzero(found)[0], ids[found], ip[found])
    sims = np.zeros((n, k_eff), dtype=np.float32)
    sims[found] = np.clip(1.0 - d2 / 4.0, 0.0, 1.0)
    return ids, sims, kind


def graph_from_neighbors(ids: np.ndarray, sims: np.ndarray) -> sp.csr_matrix:
    """Symmetric CSR similarity graph from a neighbour list, with 1 on the diagonal.

    Parameters
    ----------
    ids : (n, k) int neighbour rows (self excluded, -1 = none).
    sims : (n, k) float similarities in [0, 1].

    Returns
    -------
    (n, n) float32 CSR, ``W = max(W_knn, W_knn.T) + I``, sorted indices.
    """
    n, k = ids.shape
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    cols = ids.ravel()
    vals = sims.ravel().astype(np.float32)
    ok = cols >= 0
    w = sp.csr_matrix((vals[ok], (rows[ok], cols[ok])), shape=(n, n), dtype=np.float32)
    w = w.maximum(w.T).tocsr()
    w = (w + sp.identity(n, dtype=np.float32, format="csr")).tocsr()
    w.sort_indices()
    return w


def knn_graph(x_hat: np.ndarray, k: int, spec: IndexSpec) -> tuple[sp.csr_matrix, str]:
    """kNN similarity graph of normalised rows: :func:`knn_search` then :func:`graph_from_neighbors`."""
    ids, sims, kind = knn_search(x_hat, k, spec)
    return graph_from_neighbors(ids, sims), kind


def range_search(x_hat: np.ndarray, radius: float, spec: IndexSpec) -> tuple[sp.csr_matrix, str]:
    """All pairs within L2 distance ``radius`` of each other (inclusive), as squared distances.

    A pair is in the ball when ``||x_hat_i - x_hat_j||^2 <= radius^2 (1 + BALL_RTOL)``, decided
    in float64 wherever float32 rounding could change the answer (:func:`refine_sq_distances`),
    so duplicates share every ball, however small the radius. FAISS's float32 range search
    only proposes the candidates, its threshold lowered by :func:`ip_slack`: with the exact
    index it misses no pair of the ball. For tiny radii in high dimension it proposes pairs up
    to about ``sqrt(4 d eps32)`` apart (0.016 at d = 512), which the exact test then drops.

    Parameters
    ----------
    x_hat : (n, d) float32 normalised rows.
    radius : ball radius in [0, 2] on the unit sphere.

    Returns
    -------
    (n, n) float32 CSR whose row i holds ``||x_hat_i - x_hat_j||^2`` for every j in the ball of i,
    self included (stored as an explicit 0; duplicates too), and the index kind used.
    """
    n, d = x_hat.shape
    index, kind = build_index(x_hat, spec)
    if not isinstance(index, (faiss.IndexFlat, faiss.IndexIVF, faiss.IndexHNSW)):
        index = faiss.index_gpu_to_cpu(index)  # FAISS GPU indexes have no range search
    limit = radius * radius * (1.0 + BALL_RTOL)
    # IP range search keeps ip > threshold; ||a-b||^2 = 2 - 2 ip <= limit  <=>  ip >= 1 - limit/2.
    lims, ip, ids = index.range_search(x_hat, float(1.0 - limit / 2.0 - ip_slack(d)))
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(lims.astype(np.int64)))
    ids = ids.astype(np.int64)
    not_self = ids != rows
    rows, ids, ip = rows[not_self], ids[not_self], ip[not_self]
    d2 = refine_sq_distances(x_hat, rows, ids, ip, limit)
    inside = d2 <= limit
    rows, ids, d2 = rows[inside], ids[inside], d2[inside].astype(np.float32)
    # Self is always in its own ball: add it explicitly.
    rows = np.concatenate([rows, np.arange(n)])
    ids = np.concatenate([ids, np.arange(n)])
    d2 = np.concatenate([d2, np.zeros(n, np.float32)])
    ball = sp.csr_matrix((d2, (rows, ids)), shape=(n, n), dtype=np.float32)
    ball.sort_indices()
    return ball, kind
