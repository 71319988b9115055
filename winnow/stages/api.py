"""The pure cores on arrays: what ``import winnow`` offers besides the stages on a run directory.

Each function is a thin wrapper of a stage's core, with the stage's options as keyword-only
arguments (the same names and checks as the CLI's, from the stage's params dataclass) and arrays
in and out: numpy (or torch) arrays, no paths, no run directory. Nothing here computes anything
the stages do not: the wrappers only turn arrays into what a core takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from winnow.stages.common import schema
from winnow.stages.common.arrow import as_arrow_table, vectors_to_arrow, with_metadata

if TYPE_CHECKING:  # torch is imported on first use only
    import torch

    from winnow.stages.select.core import SelectResult
    from winnow.stages.weight.core import WeightResult

__all__ = ["NoiseFlags", "as_arrow_table", "coreset", "crossfit_probs", "example_weights", "find_noisy_labels"]


def _labels(labels: Any, n: int | None = None, *, name: str = "labels") -> np.ndarray:
    out = np.asarray(labels)
    if out.ndim != 1 or (n is not None and len(out) != n):
        raise ValueError(f"{name}: expected shape ({'n' if n is None else n},), got {out.shape}")
    if out.size and not np.issubdtype(out.dtype, np.integer):
        if not np.all(np.mod(out, 1) == 0):
            raise ValueError(f"{name}: expected integer class indices, got dtype {out.dtype}")
        out = out.astype(np.int64)
    return out


def _mask(mask: Any, n: int, *, name: str, default: bool) -> np.ndarray:
    if mask is None:
        return np.full(n, default)
    out = np.asarray(mask)
    if out.shape != (n,) or out.dtype != bool:
        raise ValueError(f"{name}: expected a boolean mask of shape ({n},), got {out.dtype} {out.shape}")
    return out


def coreset(
    vectors: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    budget: float = 0.1,
    method: str = "facility-location",
    eligible: np.ndarray | None = None,
    seed: int = 0,
    device: str = "cpu",
    **options: Any,
) -> SelectResult:
    """Select a per-class coreset: facility location with CRAIG weights, or greedy set cover.

    The core of ``winnow select`` (:func:`winnow.stages.select.core.select`) on arrays.

    Parameters
    ----------
    vectors : np.ndarray, shape (n, d), float
        One vector per row (embeddings or gradient embeddings); rows that are not eligible may
        hold anything, NaN included. Similarity is cosine (vectors are L2-normalised).
    labels : np.ndarray, shape (n,), int, optional
        Class of each row (>= 0 where eligible); classes are selected independently. None: one class.
    budget : float, default 0.1
        Size of the coreset: a fraction of the eligible rows if < 1, else a whole count; 0 (set
        cover only) picks until every row is covered. Split over the classes by ``per_class_budget``.
    method : {"facility-location", "set-cover"}
    eligible : np.ndarray, shape (n,), bool, optional
        Rows that may be selected and are covered (default: every row).
    seed : int
        Seeds IVF training and stochastic greedy.
    device : {"cpu", "cuda", "auto"}
    **options
        Any other option of ``winnow select`` by its Python name (``k``, ``epsilon``, ``radius``,
        ``index``, ``per_class_budget``, ``workers``, ...): see ``winnow select --help``.

    Returns
    -------
    SelectResult
        ``columns``: n-long arrays ``selected`` (bool), ``cluster_id`` (int64 row of the row's
        medoid, -1 = none), ``coreset_weight`` (float32 cluster size of a medoid, 0 otherwise),
        ``gain`` (float32, NaN if not selected), ``rank`` (int32 order within its class, -1 if
        not selected); ``metrics``: objective, coverage, per-class details.

    Examples
    --------
    >>> import numpy as np, winnow
    >>> x = np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32)
    >>> y = np.repeat([0, 1], 100)
    >>> result = winnow.coreset(x, y, budget=0.1, workers=1)
    >>> int(result.columns["selected"].sum()), float(result.columns["coreset_weight"].sum())
    (20, 200.0)
    """
    from winnow.stages.select.core import select
    from winnow.stages.select.params import SelectParams

    vectors = np.asarray(vectors)
    if vectors.ndim != 2:
        raise ValueError(f"vectors: expected shape (n, d), got {vectors.shape}")
    n = vectors.shape[0]
    labels = np.zeros(n, np.int64) if labels is None else _labels(labels, n)
    params = SelectParams(method=method, budget=budget, **options)
    return select(vectors, labels, _mask(eligible, n, name="eligible", default=True), params,
                  seed=seed, device=device)


def crossfit_probs(
    embedding: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int | None = None,
    fit: np.ndarray | None = None,
    folds: int = 5,
    head: str = "linear",
    head_hidden: int = 256,
    head_iters: int = 100,
    head_weight_decay: float = 1e-3,
    seed: int = 0,
    device: str = "cpu",
) -> np.ndarray:
    """Out-of-sample class probabilities by K-fold cross-fitting of a small head on embeddings.

    Each row in ``fit`` is scored by a head (logistic regression, or a one-hidden-layer MLP)
    fitted on the other folds only, so that no row is scored by a head that saw its label (what
    cleanlab asks of its ``pred_probs``). Other rows are scored by a head fitted on every ``fit``
    row. This is what ``winnow embed`` computes for its ``probs`` column.

    Parameters
    ----------
    embedding : np.ndarray, shape (n, d), float
    labels : np.ndarray, shape (n,), int
        Given labels in [0, num_classes) on the ``fit`` rows (anything elsewhere).
    num_classes : int, optional
        C; default ``labels[fit].max() + 1``.
    fit : np.ndarray, shape (n,), bool, optional
        Rows whose labels train the heads (default: rows with ``labels >= 0``).
    folds : int, default 5
        K >= 2.
    head : {"linear", "mlp"}
    head_hidden, head_iters, head_weight_decay
        The mlp head's width, L-BFGS iterations, L2 penalty (as ``winnow embed``'s options).
    seed : int
        Fold assignment and head initialisation.
    device : str
        Where the heads train (``cpu``, ``cuda``).

    Returns
    -------
    np.ndarray, shape (n, C), float32
        Softmax probabilities; each row sums to 1.

    Examples
    --------
    >>> import numpy as np, winnow
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1, 2], 30)
    >>> x = rng.normal(size=(90, 4)) + 3 * np.eye(3, 4)[y]
    >>> probs = winnow.crossfit_probs(x, y, folds=3)
    >>> probs.shape, bool((probs.argmax(1) == y).mean() > 0.9)
    ((90, 3), True)
    """
    from winnow.stages.embed.crossfit import crossfit

    embedding = np.asarray(embedding, dtype=np.float32)
    if embedding.ndim != 2:
        raise ValueError(f"embedding: expected shape (n, d), got {embedding.shape}")
    n = embedding.shape[0]
    labels = _labels(labels, n)
    fit_mask = _mask(fit, n, name="fit", default=True) & (labels >= 0)
    if not fit_mask.any():
        raise ValueError("crossfit_probs: no row to fit (labels must be >= 0 on the fit rows)")
    c = int(labels[fit_mask].max()) + 1 if num_classes is None else int(num_classes)
    if head not in ("linear", "mlp"):
        raise ValueError(f"head: {head!r} is not one of linear, mlp")
    result = crossfit(embedding, labels, fit_mask, np.ones(n, bool), c, folds=folds, kind=head, hidden=head_hidden,
                      iters=head_iters, weight_decay=head_weight_decay, seed=seed, device=device)
    return result.probs


@dataclass(frozen=True, repr=False)
class NoiseFlags:
    """What :func:`find_noisy_labels` returns: arrays aligned with its input rows.

    Attributes
    ----------
    score : (n,) float32 noise score in [0, 1] (higher = more likely mislabelled); NaN on rows
        that are not scored (trusted rows, rows without any signal).
    flag : (n,) bool, ``score >= threshold``.
    suggested_label : (n,) int, the most likely class (-1 where there is no posterior).
    suggested_confidence : (n,) float32 in [0, 1], its probability (NaN where none).
    threshold : the calibrated flag threshold (None when nothing could be scored).
    summary : export's summary: the calibration, signals and counts, as ``summary.json`` holds them.
    """

    score: np.ndarray
    flag: np.ndarray
    suggested_label: np.ndarray
    suggested_confidence: np.ndarray
    threshold: float | None
    summary: dict[str, Any]

    def __repr__(self) -> str:
        return (f"NoiseFlags(rows={len(self.flag)}, flagged={int(self.flag.sum())}, threshold="
                f"{'None' if self.threshold is None else f'{self.threshold:.4f}'}, signals={self.summary.get('signals')})")


def find_noisy_labels(
    labels: np.ndarray,
    *,
    probs: np.ndarray | None = None,
    embedding: np.ndarray | None = None,
    trusted: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    zero_fraction: np.ndarray | None = None,
    num_classes: int | None = None,
    seed: int = 0,
    **options: Any,
) -> NoiseFlags:
    """Noise scores, calibrated flags and suggested labels from the signals you have.

    The decisions of ``winnow export`` (:func:`winnow.stages.export.core.export_columns`) on
    arrays: the label signal ``1 - q[y]`` of a class posterior ``q`` that combines ``probs`` with
    a vote of the trusted rows (their nearest neighbours or a logistic regression on
    ``embedding``, whichever tells their labels from flips better), averaged with the meta weights' signal
    where they agree with it; the flag threshold is calibrated on the trusted rows.

    Parameters
    ----------
    labels : np.ndarray, shape (n,), int
        Given labels in [0, C).
    probs : np.ndarray, shape (n, C), float, optional
        Out-of-sample class probabilities (for instance from :func:`crossfit_probs`).
    embedding : np.ndarray, shape (n, d), float, optional
        Embeddings for the trusted rows' vote (needs ``trusted`` rows).
    trusted : np.ndarray, shape (n,), bool, optional
        The trusted (clean) rows: never flagged; they vote and calibrate the threshold.
    weights, zero_fraction : np.ndarray, shape (n,), float, optional
        Meta weights per row and the fraction of steps each was zero (from :func:`example_weights`).
    num_classes : int, optional
        C; default ``probs.shape[1]``, else ``labels.max() + 1``.
    seed : int
        Seeds the synthetic flips of the trusted rows used to calibrate.
    **options
        Any other option of ``winnow export`` by its Python name (``flag_threshold``,
        ``calibration``, ``trusted_vote``, ``knn_k``, ``knn_weight``, ``meta_weight``, ...): ``winnow export --help``.

    Returns
    -------
    NoiseFlags

    Examples
    --------
    >>> import numpy as np, winnow
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 50)
    >>> probs = np.eye(2)[y] * 0.9 + 0.05
    >>> y_noisy = y.copy(); y_noisy[:5] = 1                     # five flipped labels
    >>> flags = winnow.find_noisy_labels(y_noisy, probs=probs, trusted=np.arange(100) >= 90)
    >>> np.flatnonzero(flags.flag).tolist()
    [0, 1, 2, 3, 4]
    """
    from winnow.stages.export.core import export_columns
    from winnow.stages.export.params import ExportParams

    labels = _labels(labels)
    n = len(labels)
    if probs is None and embedding is None:
        raise ValueError("find_noisy_labels: give probs (n, C), embedding (n, d) with trusted rows, or both")
    vectors: dict[str, pa.Array] = {}
    for name, arr in ((schema.PROBS, probs), (schema.EMBEDDING, embedding)):
        if arr is not None:
            arr = np.asarray(arr, dtype=np.float32)
            if arr.ndim != 2 or len(arr) != n:
                raise ValueError(f"{name}: expected shape ({n}, ...), got {arr.shape}")
            vectors[name] = vectors_to_arrow(arr)
    c = num_classes or (np.asarray(probs).shape[1] if probs is not None else int(labels.max()) + 1)
    split = np.where(_mask(trusted, n, name="trusted", default=False), schema.TRUSTED, schema.TRAIN)
    ids = pa.array([str(i) for i in range(n)])
    manifest = with_metadata(pa.table({"id": ids, "label": pa.array(labels, pa.int64()), "split": split.tolist()}),
                             classes=[str(i) for i in range(c)])
    features = pa.table({"id": ids, **vectors})
    weight_table = None
    if weights is not None:
        cols = {"id": ids, "weight": pa.array(np.asarray(weights, np.float64))}
        if zero_fraction is not None:
            cols["zero_fraction"] = pa.array(np.asarray(zero_fraction, np.float64))
        weight_table = pa.table(cols)
    params = ExportParams(**options)
    out = export_columns(manifest, features, None, weight_table, params, seed=seed)
    added = {f.name: values for f, values in out.added}

    def floats(name: str) -> np.ndarray:
        return np.asarray(pa.chunked_array([added[name]]).to_numpy(zero_copy_only=False), dtype=np.float32)

    suggested = pa.chunked_array([added["suggested_label"]]).fill_null(-1).to_numpy().astype(np.int64)
    flag = np.asarray(pa.chunked_array([added["noise_flag"]]).to_numpy(zero_copy_only=False), dtype=bool)
    threshold = (out.summary.get("threshold") or {}).get("value")
    return NoiseFlags(score=floats("noise_score"), flag=flag, suggested_label=suggested,
                      suggested_confidence=floats("suggested_confidence"),
                      threshold=None if threshold is None else float(threshold), summary=out.summary)


def example_weights(
    train_x: np.ndarray | torch.Tensor,
    train_y: np.ndarray | torch.Tensor,
    trusted_x: np.ndarray | torch.Tensor,
    trusted_y: np.ndarray | torch.Tensor,
    *,
    method: str = "l2rw",
    num_classes: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    **options: Any,
) -> WeightResult:
    """Per-example weights of the training rows against a trusted set, by meta-reweighting.

    ``winnow weight``'s core (:func:`winnow.stages.weight.core.run_weight`) on embeddings: a head
    is trained on ``train_x`` with L2RW, Meta-Weight-Net, Deep Bilevel or SOSELETO, and every
    row's weight is recorded each time it is in a batch.

    Parameters
    ----------
    train_x : array, shape (n, d), float
        Embeddings of the (noisily labelled) training rows, any scale.
    train_y : array, shape (n,), int
        Their labels in [0, C).
    trusted_x, trusted_y : arrays, shapes (m, d) and (m,)
        The trusted (clean) rows.
    method : {"l2rw", "mwn", "bilevel", "soseleto", "none"}
    num_classes : int, optional
        C; default the largest label + 1.
    seed : int
        Same inputs and seed on CPU give the same weights.
    device : {"cpu", "cuda", "auto"}
    **options
        Any other option of ``winnow weight`` by its Python name (``rounds``, ``epochs``, ``lr``,
        ``batch_size``, ``head``, ...): see ``winnow weight --help``.

    Returns
    -------
    WeightResult
        ``columns``: n-long arrays ``weight`` (aggregated, float32), ``weight_last``,
        ``weight_std``, ``times_seen``, ``zero_fraction`` in [0, 1], ``loss_mean`` and one per
        round; ``metrics``: per-epoch losses and accuracies; ``model_state``.

    Examples
    --------
    >>> import numpy as np, winnow
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 100); x = rng.normal(size=(200, 4)) + 2 * np.eye(2, 4)[y]
    >>> noisy = y.copy(); noisy[:20] = 1                                  # 20 flipped labels
    >>> w = winnow.example_weights(x[20:], noisy[20:], x[:20], y[:20], epochs=3).columns["weight"]
    >>> w.shape
    (180,)
    """
    import torch

    from winnow.stages.weight.core import run_weight
    from winnow.stages.weight.params import WeightParams

    def tensor(a: Any, *, integer: bool) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a)
        return t.long() if integer else (t if t.is_floating_point() and t.dtype != torch.float16 else t.float())

    xs, xt = tensor(train_x, integer=False), tensor(trusted_x, integer=False)
    ys, yt = tensor(train_y, integer=True), tensor(trusted_y, integer=True)
    if num_classes is None:
        num_classes = int(max(ys.max() if ys.numel() else 0, yt.max() if yt.numel() else 0)) + 1
    params = WeightParams(method=method, **options)
    return run_weight(xs, ys, xt.to(xs.dtype), yt, params, num_classes=num_classes, seed=seed, device=device)
