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

from typing import Any

import numpy as np
import torch


def random_projection(in_dim: int, out_dim: int, *, seed: int) -> torch.Tensor:
    """Seeded Gaussian projection ``(in_dim, out_dim)`` with N(0, 1/out_dim) entries (Johnson-Lindenstrauss)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(in_dim, out_dim, generator=g) / np.sqrt(out_dim)


def _residual(probs: np.ndarray, labels: np.ndarray) -> torch.Tensor:
    """(n, C) ``p - onehot(y)``; a label outside [0, C) uses argmax(p) (BADGE)."""
    c = probs.shape[1]
    p = torch.as_tensor(np.asarray(probs, np.float32))
    y = torch.as_tensor(np.asarray(labels, np.int64))
    y = torch.where((y >= 0) & (y < c), y, torch.nan_to_num(p).argmax(1))
    return p - torch.nn.functional.one_hot(y, c).to(p.dtype)


FINITE_BLOCK_ROWS = 65_536  # rows whose |h| finite_rows takes at a time


class LazyGradientEmbedding:
    """The unprojected "full" gradient embedding (n, C * h), computed a block of rows at a time.

    Held whole it is C times the embeddings (10 classes, h = 128: 5 kB a row, 5 GB at a million
    rows), so the embed stage writes it block by block from ``residual`` (n, C) and ``last_input``
    (n, h) instead (issue 17). Blocks are the same products as :func:`gradient_embedding`'s,
    so the values are identical. Rows of ``invalid`` (set by the caller) read as NaN;
    ``np.asarray`` gives the whole array.
    """

    def __init__(self, residual: torch.Tensor, last_input: torch.Tensor) -> None:
        self.residual, self.last_input = residual, last_input
        self.invalid: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return (self.residual.shape[0], self.residual.shape[1] * self.last_input.shape[1])

    def __len__(self) -> int:
        return self.shape[0]

    def block(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as a (stop - start, C * h) float32 array."""
        r, h = self.residual[start:stop], self.last_input[start:stop]
        out = (r[:, :, None] * h[:, None, :]).flatten(1).numpy()
        if self.invalid is not None:
            out[self.invalid[start:stop]] = np.nan
        return out

    def finite_rows(self) -> np.ndarray:
        """(n,) bool: is the row's block finite, without computing the blocks.

        An entry is ``r_c * h_j``, so a row is finite iff r and h are and no product overflows;
        rows whose largest product could reach float32's range are checked on their block.
        """
        r = self.residual.numpy().astype(np.float64, copy=False)
        h = self.last_input.numpy()
        ok = np.isfinite(r).all(1)
        h_max = np.empty(len(h))
        for start in range(0, len(h), FINITE_BLOCK_ROWS):  # |h| of every row at once is (n, h) again
            rows = slice(start, start + FINITE_BLOCK_ROWS)
            block = np.abs(h[rows])
            ok[rows] &= np.isfinite(block).all(1)
            h_max[rows] = block.max(1, initial=0.0)
        bound = np.abs(r).max(1, initial=0.0) * h_max
        for row in np.flatnonzero(ok & (bound >= 1e38)).tolist():
            ok[row] = bool(np.isfinite(self.block(row, row + 1)).all())
        return ok

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.empty(self.shape, np.float32)
        for start in range(0, len(self), 4096):
            out[start:start + 4096] = self.block(start, start + 4096)
        return out if dtype is None else out.astype(dtype, copy=False)


def gradient_embedding(
    probs: np.ndarray,
    labels: np.ndarray,
    last_input: np.ndarray,
    *,
    kind: str = "full",
    dim: int = 0,
    seed: int = 0,
    chunk: int = 4096,
    lazy: bool = False,
) -> np.ndarray | LazyGradientEmbedding:
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
    lazy : with ``kind="full"`` and no projection, return a :class:`LazyGradientEmbedding`
        (the same values, computed when read) instead of the (n, C * h) array.

    Returns
    -------
    (n, g) float32 array, or the lazy form.
    """
    if kind not in ("full", "logit"):
        raise ValueError(f"option --grad-kind: {kind!r} is not one of full, logit")
    n, c = probs.shape
    h_dim = last_input.shape[1]
    residual = _residual(probs, labels)
    h_all = torch.as_tensor(np.asarray(last_input, np.float32))
    if lazy and kind == "full" and dim <= 0:
        return LazyGradientEmbedding(residual, h_all)
    width = c * h_dim if kind == "full" else c
    proj = random_projection(width, dim, seed=seed) if dim > 0 else None
    out = np.empty((n, dim if dim > 0 else width), np.float32)
    for start in range(0, n, chunk):
        r = residual[start : start + chunk]
        block = (r[:, :, None] * h_all[start : start + chunk, None, :]).flatten(1) if kind == "full" else r
        out[start : start + chunk] = (block @ proj if proj is not None else block).numpy()
    return out
