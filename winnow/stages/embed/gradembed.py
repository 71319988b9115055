"""Last-layer gradient embeddings (BADGE / CRAIG), optionally randomly projected.

For cross-entropy with logits z = W h + b, the gradient of an example's loss with respect to
the last layer's weights W is ``(softmax(z) - onehot(y)) h^T``: flattened, the "full"
embedding of dimension C * dim(h). CRAIG's cheaper proxy keeps only the logit part
``softmax(z) - onehot(y)`` (dimension C), whose distances bound the full gradient's up to
a constant. winnow evaluates both with the GIVEN label y and the cross-fit heads'
out-of-sample p (so a mislabelled example shows a large gradient, as it would when the
trained model meets it); rows without a usable label use the predicted class, as BADGE does.
h comes from ONE head (the one fitted on all labelled rows) for every row, so that distances
between rows' gradients are taken in one feature space (see :func:`~.crossfit.crossfit`).
"""

from __future__ import annotations

import numpy as np
import torch


def random_projection(in_dim: int, out_dim: int, *, seed: int) -> torch.Tensor:
    """Seeded Gaussian projection ``(in_dim, out_dim)`` with N(0, 1/out_dim) entries (Johnson-Lindenstrauss)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(in_dim, out_dim, generator=g) / np.sqrt(out_dim)


def gradient_embedding(
    probs: np.ndarray,
    labels: np.ndarray,
    last_input: np.ndarray,
    *,
    kind: str = "full",
    dim: int = 0,
    seed: int = 0,
    chunk: int = 4096,
) -> np.ndarray:
    """Per-row last-layer gradient embedding.

    Parameters
    ----------
    probs : (n, C) softmax of the logits; NaN rows stay NaN.
    labels : (n,) int given labels; a value outside [0, C) means "use argmax(probs)".
    last_input : (n, h) input of the last linear layer (used by ``kind="full"``).
    kind : "full" -> (n, C * h) rows ``vec((p - onehot(y)) h^T)`` (class-major);
        "logit" -> (n, C) rows ``p - onehot(y)``.
    dim : if > 0, multiply by a seeded :func:`random_projection` to (n, dim).
    seed : projection seed.
    chunk : rows per block, so the (n, C*h) matrix is never held whole when projecting.

    Returns
    -------
    (n, g) float32 array.
    """
    if kind not in ("full", "logit"):
        raise ValueError(f"option --grad-kind: {kind!r} is not one of full, logit")
    n, c = probs.shape
    h_dim = last_input.shape[1]
    p = torch.as_tensor(np.asarray(probs, np.float32))
    y = torch.as_tensor(np.asarray(labels, np.int64))
    y = torch.where((y >= 0) & (y < c), y, torch.nan_to_num(p).argmax(1))
    residual = p - torch.nn.functional.one_hot(y, c).to(p.dtype)
    width = c * h_dim if kind == "full" else c
    proj = random_projection(width, dim, seed=seed) if dim > 0 else None
    out = np.empty((n, dim if dim > 0 else width), np.float32)
    h_all = torch.as_tensor(np.asarray(last_input, np.float32))
    for start in range(0, n, chunk):
        r = residual[start : start + chunk]
        block = (r[:, :, None] * h_all[start : start + chunk, None, :]).flatten(1) if kind == "full" else r
        out[start : start + chunk] = (block @ proj if proj is not None else block).numpy()
    return out
