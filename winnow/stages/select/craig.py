"""CRAIG weights: every point joins its most similar medoid; a medoid weighs its cluster's size.

The assignment is an exact FAISS search of ALL points of the class against ALL selected
points of the class, not only graph neighbours, so points the sparse graph left uncovered
still land in a cluster and the weights of a class sum to the class size. As a by-product the
assignment gives the exact dense objective ``sum_i max_{j in S} sim(i, j)``.
"""

from __future__ import annotations

import faiss
import numpy as np

from winnow.stages.select.knn import faiss_gpu_available, pair_sq_distances


def assign_to_medoids(
    x_hat: np.ndarray, medoids: np.ndarray, *, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest medoid of every row under the similarity of :mod:`winnow.stages.select.knn`.

    Parameters
    ----------
    x_hat : (n, d) float32, L2-normalised rows of one class.
    medoids : (m,) int rows of ``x_hat`` that were selected, m >= 1.
    device : ``cpu``, or ``cuda``/``auto`` to search on GPU when FAISS has GPU support.

    Returns
    -------
    assignment : (n,) int64 row (into ``x_hat``) of each row's medoid; medoids map to themselves.
    similarity : (n,) float32 similarity to that medoid, in [0, 1].
    """
    medoids = np.asarray(medoids, dtype=np.int64)
    if medoids.size == 0:
        raise ValueError("CRAIG weights need at least one selected point per class")
    index: faiss.Index = faiss.IndexFlatIP(x_hat.shape[1])
    if device != "cpu" and faiss_gpu_available():
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    index.add(np.ascontiguousarray(x_hat[medoids]))
    _, nearest = index.search(x_hat, 1)
    assignment = medoids[nearest[:, 0]]
    # A medoid is its own cluster's centre even when a duplicate medoid ties with it.
    assignment[medoids] = medoids
    # Similarity in float64 (see winnow.stages.select.knn): exactly 1 for a medoid and its duplicates.
    d2 = pair_sq_distances(x_hat, np.arange(x_hat.shape[0]), assignment)
    similarity = np.clip(1.0 - d2 / 4.0, 0.0, 1.0).astype(np.float32)
    return assignment, similarity


def craig_weights(assignment: np.ndarray, n: int) -> np.ndarray:
    """Cluster sizes as weights: (n,) float32, the size of its cluster for a medoid, 0 otherwise."""
    return np.bincount(assignment, minlength=n).astype(np.float32)
