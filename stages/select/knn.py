"""FAISS neighbour search and the sparse kNN similarity graph used by every selector.

Similarity (one definition, used everywhere: greedy, CRAIG weights, metrics, benchmarks)::

    x_hat = x / ||x||                                  (L2-normalised; zero vectors stay zero)
    sim(i, j) = (1 + <x_hat_i, x_hat_j>) / 2 = 1 - ||x_hat_i - x_hat_j||^2 / 4   in [0, 1]

i.e. cosine similarity mapped to [0, 1], which is also "largest squared distance on the unit
sphere (4) minus squared distance": maximising facility location with it minimises the total
squared distance to the medoids, as in the seed. Set cover balls use the matching distance
``||x_hat_i - x_hat_j||`` (radius in [0, 2]).

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

    def resolve(self, n: int) -> str:
        """The index kind actually used for ``n`` rows."""
        if self.kind == "auto":
            return "exact" if n <= self.exact_threshold else "ivf"
        return self.kind


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Return L2-normalised float32 rows (a copy); all-zero rows stay zero.

    Parameters
    ----------
    vectors : (n, d) array of finite floats.
    """
    x = np.array(vectors, dtype=np.float32, order="C", copy=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


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
    sims : (n, k') float32 similarities in [0, 1] (see module docstring), 0 where ids is -1.
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
    ids = ids[keep].reshape(n, k_eff)
    ip = ip[keep].reshape(n, k_eff)
    sims = np.clip((1.0 + ip) * 0.5, 0.0, 1.0).astype(np.float32)
    sims[ids < 0] = 0.0
    return ids.astype(np.int64), sims, kind


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
    """All pairs within L2 distance ``radius`` (strictly) of each other, as squared distances.

    Parameters
    ----------
    x_hat : (n, d) float32 normalised rows.
    radius : ball radius in [0, 2] on the unit sphere.

    Returns
    -------
    (n, n) float32 CSR whose row i holds ``||x_hat_i - x_hat_j||^2`` for every j in the ball of i,
    self included (stored as an explicit 0), and the index kind used.
    """
    n = x_hat.shape[0]
    index, kind = build_index(x_hat, spec)
    if not isinstance(index, (faiss.IndexFlat, faiss.IndexIVF, faiss.IndexHNSW)):
        index = faiss.index_gpu_to_cpu(index)  # FAISS GPU indexes have no range search
    # IP range search keeps ip > threshold; ||a-b||^2 = 2 - 2 ip < r^2  <=>  ip > 1 - r^2/2.
    lims, ip, ids = index.range_search(x_hat, float(1.0 - radius * radius / 2.0))
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(lims.astype(np.int64)))
    not_self = ids != rows
    rows, ids, ip = rows[not_self], ids[not_self], ip[not_self]
    d2 = np.maximum(2.0 - 2.0 * ip, 0.0).astype(np.float32)
    # Self is always in its own ball: add it explicitly (FAISS may round it out).
    rows = np.concatenate([rows, np.arange(n)])
    ids = np.concatenate([ids, np.arange(n)])
    d2 = np.concatenate([d2, np.zeros(n, np.float32)])
    ball = sp.csr_matrix((d2, (rows, ids)), shape=(n, n), dtype=np.float32)
    ball.sort_indices()
    return ball, kind
