"""Cross-fitted class probabilities: K-fold cross-fitting of a small head on the embeddings.

Every labelled row (split train or trusted, valid, label in [0, C)) is put in one of K folds
(stratified by label, seeded). The head trained on the other K-1 folds predicts its fold, so
no labelled row is scored by a HEAD that saw its label (cleanlab's CleanLearning does the
same). Rows outside the folds (test split, unknown labels) are predicted by one more head
trained on all labelled rows. Embeddings are standardised with the mean/std of all valid rows
first: that uses no labels, so it leaks nothing across folds.

Only the head is cross-fitted. When the embed stage warms up its backbone (``--warmup``), the
backbone has trained on every labelled row, its own label included, so the probabilities are
out of sample for the head but not for the embedding: a long warm-up memorises flipped labels
and the "out-of-sample" probability then agrees with the wrong label (digits, 40% flips: the
argmax equals the flipped label for 1.5% of flipped rows after 10 epochs, 7.9% after 20, 58%
after 60). Pretrained ``--weights`` or the ingest feature table saw no label of this set.
``--crossfit backbone`` (:mod:`.crossfit_backbone`) cross-fits the warm-up too.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import KFold, StratifiedKFold
from torch import nn

from winnow.stages.common.mapping import Map, map_in_process


@dataclass
class CrossFit:
    """Outputs of :func:`crossfit`, all aligned with the input rows.

    Attributes
    ----------
    probs : (n, C) float32, softmax of ``logits``; NaN for rows not predicted.
    logits : (n, C) float32 logits of the head that scored the row.
    last_input : (n, h) float32 input of the last linear layer of the head fitted on ALL
        labelled rows, for every predicted row (the standardised embedding for the linear
        head, that head's hidden activation for the mlp head): one feature space for all rows.
    fold : (n,) int64 fold that held the row out; -1 for rows predicted by the all-rows head
        or not predicted.
    fold_accuracy : accuracy of each fold's head on its held-out fold.
    """

    probs: np.ndarray
    logits: np.ndarray
    last_input: np.ndarray
    fold: np.ndarray
    fold_accuracy: list[float] = field(default_factory=list)


class _Head(nn.Module):
    def __init__(self, d: int, num_classes: int, kind: str, hidden: int) -> None:
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(d, hidden), nn.ReLU()) if kind == "mlp" else nn.Identity()
        self.out = nn.Linear(hidden if kind == "mlp" else d, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.hidden(x)
        return h, self.out(h)


def assign_folds(labels: np.ndarray, folds: int, *, seed: int) -> np.ndarray:
    """Fold id in [0, folds) per row, stratified by label when every fold can hold each class.

    Parameters
    ----------
    labels : (m,) int labels of the rows to split.
    folds : number of folds, 2 <= folds <= m.
    seed : shuffling seed.
    """
    m = len(labels)
    if folds < 2 or folds > m:
        raise ValueError(f"option --folds: need 2 <= folds <= labelled rows ({m}), got {folds}")
    counts = np.bincount(labels)
    splitter = (
        StratifiedKFold(folds, shuffle=True, random_state=seed)
        if counts[counts > 0].min() >= folds
        else KFold(folds, shuffle=True, random_state=seed)
    )
    out = np.empty(m, dtype=np.int64)
    for k, (_, held) in enumerate(splitter.split(np.zeros(m), labels)):
        out[held] = k
    return out


STD_BLOCK_ROWS = 65_536


def _column_std(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Per-column sample standard deviation (ddof 1) of ``x`` around ``mean``, in float64, a block
    of rows at a time: ``np.std(x, dtype=float64)`` makes a float64 copy of all of ``x`` (1 GB at
    1M x 128), half of the embed stage's peak memory over its input. Zeros for a single row."""
    if len(x) < 2:
        return np.zeros(x.shape[1])
    acc = np.zeros(x.shape[1])
    for i in range(0, len(x), STD_BLOCK_ROWS):
        block = x[i:i + STD_BLOCK_ROWS].astype(np.float64) - mean
        acc += np.einsum("ij,ij->j", block, block)
    return np.sqrt(acc / (len(x) - 1))


def standardise(embedding: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    """(n, d) float32 tensor ``(x - mean) / std`` with the statistics of ``rows`` (bool mask or indices).

    The statistics are accumulated in float64 (a float32 sum of squares overflows for features
    near 1e19 and loses tiny ones), and a constant feature (std 0) is only centred: any scale
    of embedding gives the same standardised values.
    """
    x = np.asarray(embedding, np.float32)
    rows = np.asarray(rows)
    every = rows.dtype == bool and len(rows) == len(x) and x.flags.c_contiguous and bool(rows.all())
    sel = x if every else x[np.flatnonzero(rows) if rows.dtype == bool else rows]  # no copy of every row
    mean = sel.mean(0, dtype=np.float64)
    std = _column_std(sel, mean)
    std[~(std > 0)] = 1.0
    del sel
    out = x - mean.astype(np.float32)
    np.divide(out, std.astype(np.float32), out=out)  # in place: one (n, d) array, not two
    return torch.from_numpy(out)


FIT_BLOCK_ROWS = 131_072  # above this many fit rows, the loss is summed a block of rows at a time


def fit_head(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    *,
    kind: str = "linear",
    hidden: int = 256,
    iters: int = 100,
    weight_decay: float = 1e-3,
    seed: int = 0,
    rows: np.ndarray | None = None,
) -> nn.Module:
    """Fit a linear or one-hidden-layer head by full-batch L-BFGS (deterministic on CPU).

    Minimises mean cross-entropy + ``weight_decay * sum ||W||^2`` over the weight matrices.
    ``x`` is (m, d) float32, ``y`` (m,) int64 in [0, num_classes); ``rows``: (m,) bool mask of
    the rows to fit on (default all). Returns the head, whose ``forward(x)`` gives
    ``(last-layer input, logits)``.

    Above :data:`FIT_BLOCK_ROWS` fit rows the loss and its gradient are summed over blocks of
    rows of ``x`` (the rows outside ``rows`` weighted 0), so that neither a copy of the fit rows
    nor the whole batch's intermediate arrays are held: 0.9 GB of the embed stage's peak at 1M
    rows. The same minimum, summed in another order (the last bits differ); below it, the fit
    is the single batch it always was.
    """
    m = len(x) if rows is None else int(np.count_nonzero(rows))
    if rows is not None and m <= FIT_BLOCK_ROWS:
        sel = torch.as_tensor(np.flatnonzero(rows), device=x.device)
        x, y, rows = x[sel], y[sel], None
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG
        torch.manual_seed(seed)
        head = _Head(x.shape[1], num_classes, kind, hidden).to(x.device)
    weights = [p for n, p in head.named_parameters() if n.endswith("weight")]
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=iters, history_size=20, line_search_fn="strong_wolfe")
    keep = None if rows is None else torch.as_tensor(rows, dtype=x.dtype, device=x.device)

    def penalty() -> torch.Tensor:
        return weight_decay * sum((w * w).sum() for w in weights)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        if m <= FIT_BLOCK_ROWS:
            loss = F.cross_entropy(head(x)[1], y) + penalty()
            loss.backward()
            return loss
        total = torch.zeros((), dtype=x.dtype, device=x.device)
        for i in range(0, len(x), FIT_BLOCK_ROWS):
            ce = F.cross_entropy(head(x[i:i + FIT_BLOCK_ROWS])[1], y[i:i + FIT_BLOCK_ROWS], reduction="none")
            part = (ce if keep is None else ce * keep[i:i + FIT_BLOCK_ROWS]).sum() / m
            part.backward()
            total += part.detach()
        reg = penalty()
        reg.backward()
        return total + reg.detach()

    opt.step(closure)
    return head.eval()


HeadState = dict[str, torch.Tensor]


def fit_fold_head(k: int, *, x: Any, y: Any, folds: np.ndarray, num_classes: int, kind: str, hidden: int,
                  iters: int, weight_decay: float, seed: int, device: torch.device | str = "cpu") -> HeadState:
    """The parameters of the head fitted without fold ``k`` (on every fit row when no row is in
    fold ``k``: the all-rows head), seeded ``seed * 1000 + k``.

    ``x`` (m, d) standardised fit rows and ``y`` (m,) labels, as tensors or numpy arrays;
    ``folds`` (m,) the fold of each fit row. A top-level function of scalars and arrays, so
    that any :data:`winnow.stages.common.mapping.Map` can run it elsewhere."""
    x, y = torch.as_tensor(x, device=device), torch.as_tensor(y, device=device)
    train = np.asarray(folds) != k
    head = fit_head(x, y, num_classes, kind=kind, hidden=hidden, iters=iters, weight_decay=weight_decay,
                    seed=seed * 1000 + k, rows=None if train.all() else train)
    return {name: t.detach().cpu() for name, t in head.state_dict().items()}


def crossfit(
    embedding: np.ndarray,
    labels: np.ndarray,
    fit_mask: np.ndarray,
    predict_mask: np.ndarray,
    num_classes: int,
    *,
    folds: int = 5,
    kind: str = "linear",
    hidden: int = 256,
    iters: int = 100,
    weight_decay: float = 1e-3,
    seed: int = 0,
    device: torch.device | str = "cpu",
    fold_ids: np.ndarray | None = None,
    map_heads: Map = map_in_process,
) -> CrossFit:
    """Cross-fitted probabilities for every row of ``predict_mask``.

    Parameters
    ----------
    embedding : (n, d) float array; rows outside ``predict_mask`` may be NaN.
    labels : (n,) int given labels (any value where not ``fit_mask``).
    fit_mask : (n,) bool rows that go into the folds (their labels train the heads).
    predict_mask : (n,) bool rows to predict; must include ``fit_mask``.
    num_classes : C.
    folds : K >= 2.
    kind, hidden, iters, weight_decay : head options (see :func:`fit_head`).
    seed : fold assignment and head initialisation seed.
    device : where the heads train.
    fold_ids : optional (fit rows,) precomputed fold of each fit row (tests, reproducibility).
    map_heads : how the K fold heads (and the all-rows head) are fitted; default: in turn, in
        this process. The Beam executor fits them on its workers.

    Returns
    -------
    CrossFit
    """
    n = len(embedding)
    fit_mask = np.asarray(fit_mask, bool)
    predict_mask = np.asarray(predict_mask, bool) | fit_mask
    c = num_classes
    fit_rows = np.flatnonzero(fit_mask)
    other_rows = np.flatnonzero(predict_mask & ~fit_mask)
    y_fit = np.asarray(labels)[fit_rows].astype(np.int64)
    if len(fit_rows) and (y_fit.min() < 0 or y_fit.max() >= c):
        raise ValueError(f"crossfit: labels must be in [0, {c}) for the fitted rows")
    folds_of = assign_folds(y_fit, folds, seed=seed) if fold_ids is None else np.asarray(fold_ids, np.int64)

    x_all = standardise(embedding, predict_mask).to(device)
    y_all = torch.as_tensor(y_fit, device=device)
    # Every row labelled (the usual case): the fit rows are x_all itself, not a copy of it.
    x_fit = x_all if len(fit_rows) == n else x_all[torch.as_tensor(fit_rows, device=device)]

    # Every head is fitted first (the costly part: L-BFGS over the fit rows), then each scores its rows.
    all_rows_head = len(fit_rows) > 0 and (kind == "mlp" or len(other_rows) > 0)
    fit = functools.partial(fit_fold_head, num_classes=c, kind=kind, hidden=hidden, iters=iters,
                            weight_decay=weight_decay, seed=seed, device=device)
    states = map_heads(fit, list(range(folds + all_rows_head)), {"x": x_fit, "y": y_all, "folds": folds_of})
    d = embedding.shape[1]

    def head(k: int) -> nn.Module:
        out = _Head(d, c, kind, hidden)
        out.load_state_dict(states[k])
        return out.to(device).eval()

    h_dim = hidden if kind == "mlp" else d
    logits = np.full((n, c), np.nan, np.float32)
    fold_col = np.full(n, -1, np.int64)
    accs: list[float] = []
    for k in range(folds):
        held = np.flatnonzero(folds_of == k)
        with torch.no_grad():
            _, z = head(k)(x_fit[torch.as_tensor(held, device=device)])
        rows = fit_rows[held]
        logits[rows], fold_col[rows] = z.cpu().numpy(), k
        accs.append(float((z.argmax(1).cpu().numpy() == y_fit[held]).mean()) if len(held) else float("nan"))
    # The gradient embedding (p - y) (x) h is compared ACROSS rows, so h must come from one
    # network for every row: hidden unit j of one fold's mlp head has nothing to do with unit j
    # of another's, and per-fold h made rows cluster by fold instead of by gradient. So h is the
    # all-rows head's (for the linear head h is the standardised embedding whichever head), and
    # only p, which carries the label signal, stays out of sample from the fold heads.
    predict_rows = np.flatnonzero(predict_mask)
    if kind == "mlp" and len(fit_rows):
        with torch.no_grad():
            h, z = head(folds)(x_all[torch.as_tensor(predict_rows, device=device)])
        last = np.full((n, h_dim), np.nan, np.float32)
        last[predict_rows] = h.cpu().numpy()
        logits[other_rows] = z.cpu().numpy()[~fit_mask[predict_rows]]
    else:
        if all_rows_head:  # rows outside the folds (trusted): the all-rows head
            with torch.no_grad():
                _, z = head(folds)(x_all[torch.as_tensor(other_rows, device=device)])
            logits[other_rows] = z.cpu().numpy()
        # The linear head's input is the standardised embedding itself: no (n, d) copy of it
        # (with trusted rows, the all-rows head's pass over every row held two: 1 GB at 1M x 128).
        if len(predict_rows) == n and x_all.device.type == "cpu":
            last = x_all.numpy()
        else:
            last = np.full((n, h_dim), np.nan, np.float32)
            last[predict_rows] = x_all[torch.as_tensor(predict_rows, device=device)].cpu().numpy()
    probs = torch.softmax(torch.from_numpy(logits), 1).numpy()
    return CrossFit(probs=probs, logits=logits, last_input=last, fold=fold_col, fold_accuracy=accs)
