"""Online re-selection: the seed's "update every epoch" (CRAIG on fresh gradient embeddings).

The weight stage calls :func:`reselect` every E epochs with the current model's last-layer
gradient embeddings of the training rows; it gets back the new subset and its CRAIG weights,
and trains on those rows with those per-example weights until the next call.
"""

from __future__ import annotations

import numpy as np

from winnow.stages.select.core import select
from winnow.stages.select.params import SelectParams


def reselect(
    grad_embedding: np.ndarray,
    labels: np.ndarray,
    *,
    params: SelectParams,
    seed: int = 0,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Select a weighted coreset of the rows given (all are treated as eligible).

    Parameters
    ----------
    grad_embedding : (n, d) float, one gradient embedding per training row (finite).
    labels : (n,) int >= 0, the rows' (given) labels: selection runs per class.
    params : selection options (``method``, ``budget``, ``k``, ``epsilon``, ...).
    seed : seed of the selection; pass a different one per call for stochastic greedy.
    device : ``cpu``, ``cuda`` or ``auto`` for the FAISS searches.

    Returns
    -------
    indices : (m,) int64 selected rows, ascending.
    weights : (m,) float32 CRAIG weights of those rows (cluster sizes; for facility
        location they sum to n).
    """
    grad_embedding = np.asarray(grad_embedding)
    result = select(
        grad_embedding,
        np.asarray(labels),
        np.ones(grad_embedding.shape[0], dtype=bool),
        params,
        seed=seed,
        device=device,
    )
    indices = np.flatnonzero(result.columns["selected"]).astype(np.int64)
    return indices, result.columns["coreset_weight"][indices]
