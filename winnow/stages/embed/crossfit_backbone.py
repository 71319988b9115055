"""``--crossfit backbone``: probabilities from networks that never trained on the row's label.

With ``--crossfit head`` only the small head on the embeddings is cross-fitted; the warm-up has
trained the backbone on every label, so a long warm-up memorises flipped labels and the probs
agree with them (see :mod:`.crossfit`). Here each fold gets a warm-up of its own, from the same
initial weights with the same options, on the labelled rows of the other folds; the fold's probs
are the mean of that network's own softmax and that of a head fitted on its embeddings of the
other folds (see :func:`fold_backbone_probs` for why both): cross-validated predicted
probabilities, as cleanlab asks for, at ``--folds`` times the warm-up's cost. The embeddings
(and so select, weight and the kNN vote of export) still come from the one network warmed up on
every row, because neighbours have to live in one space.

Resuming: each fold's warm-up is checkpointed under its own key (``warmup-fold-K-of-N``); a
rerun loads the finished ones and only runs the forward pass and fits the head again.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from winnow.stages.common.checkpoint import Checkpoints
from winnow.stages.common.mapping import Map, map_in_process
from winnow.stages.embed.backbone import Backbone, batches, manifest_arrays, prepare_backbones
from winnow.stages.embed.crossfit import fit_head, standardise
from winnow.stages.embed.data import BatchDecoder, auto_workers, make_loader
from winnow.stages.embed.params import EmbedParams


def fold_backbone_probs(
    manifest: pa.Table,
    params: EmbedParams,
    *,
    num_classes: int,
    fit_rows: np.ndarray,
    fold: np.ndarray,
    seed: int = 0,
    device: str = "cpu",
    checkpoints: Checkpoints | None = None,
    map_work: Map = map_in_process,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Class probabilities of each fit row from a network and a head both trained without its fold.

    Fold k's network embeds and classifies every fit row; a head (``--head`` and its options,
    as in :func:`winnow.stages.embed.crossfit.fit_head`) is fitted on the other folds' embeddings.
    Fold k's probs are the mean of the network's softmax and the head's. Neither alone did well
    everywhere (AUROC of ``1 - p(given)``, flipped vs clean train rows,
    ``benchmarks/quality/RESULTS.md``): the network's classifier was best on digits (0.998 and
    0.989 after 10 and 30 warm-up epochs, head-only cross-fitting 0.990 and 0.929) but worst on
    25k CIFAR-10 after 10 epochs, where the network underfits (0.889, head-only 0.911); the head
    alone was 0.988 / 0.955 on digits and 0.906 on CIFAR; the mean gave 0.997 / 0.980 and 0.903.

    Parameters
    ----------
    manifest, params, num_classes, seed, device, checkpoints : as in
        :func:`winnow.stages.embed.core.run_embed` (``params`` must describe a network with a warm-up).
    fit_rows : (m,) manifest rows in the folds (labelled and valid).
    fold : (m,) fold in [0, K) of each fit row (the head's folds, so both agree).
    map_work : where the K warm-ups run (:data:`winnow.stages.common.mapping.Map`): in turn
        here by default, side by side on the workers with the Beam executor.

    Returns
    -------
    (m, C) float32 probabilities (NaN for a row whose image no longer decodes), and metrics: the
    accuracy on each held-out fold against the given labels, and the seconds spent.
    """
    t0 = time.perf_counter()
    fit_rows, fold = np.asarray(fit_rows, np.int64), np.asarray(fold, np.int64)
    y = torch.as_tensor(manifest_arrays(manifest, num_classes)[1][fit_rows])
    folds = int(fold.max()) + 1 if len(fold) else 0
    probs = np.full((len(fit_rows), num_classes), np.nan, np.float32)
    accuracy: list[float] = []
    prepared = prepare_backbones(manifest, params, num_classes=num_classes, seed=seed, device=device,
                                 checkpoints=checkpoints, holdouts=[fit_rows[fold == k] for k in range(folds)],
                                 keys=[f"warmup-fold-{k + 1}-of-{folds}" for k in range(folds)], map_work=map_work)
    for k in range(folds):
        feats, logits = _embed_and_classify(manifest, prepared[k].backbone, fit_rows, params, num_classes)
        ok = np.isfinite(feats).all(1) & np.isfinite(logits).all(1)
        x = standardise(feats, ok)
        train, held = np.flatnonzero(ok & (fold != k)), np.flatnonzero(ok & (fold == k))
        head = fit_head(x[train], y[train], num_classes, kind=params.head, hidden=params.head_hidden,
                        iters=params.head_iters, weight_decay=params.head_weight_decay, seed=seed * 1000 + k)
        with torch.no_grad():
            p = (torch.softmax(head(x[held])[1], 1) + torch.softmax(torch.from_numpy(logits[held]), 1)) / 2
        probs[held] = p.numpy()
        accuracy.append(float((p.argmax(1) == y[held]).float().mean()) if len(held) else float("nan"))
    return probs, {"fold_backbone_accuracy": accuracy, "fold_backbone_seconds": time.perf_counter() - t0}


def _embed_and_classify(
    manifest: pa.Table, backbone: Backbone, rows: np.ndarray, params: EmbedParams, num_classes: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(len(rows), d) features and (len(rows), C) logits of ``rows`` in order; NaN where an image fails."""
    loader = make_loader(BatchDecoder(manifest, batches(rows, params.batch_size), backbone.transform),
                         num_workers=auto_workers(params.num_workers, backbone.device),
                         pin_memory=backbone.device.type == "cuda")
    position = {int(r): j for j, r in enumerate(rows)}
    feats: np.ndarray | None = None
    logits = np.full((len(rows), num_classes), np.nan, np.float32)
    for pixels, batch_rows, errors in loader:
        f, z = backbone.embed_and_classify(pixels)
        if feats is None:
            feats = np.full((len(rows), f.shape[1]), np.nan, np.float32)
        for i, (r, e) in enumerate(zip(batch_rows.tolist(), errors)):
            if e is None:
                feats[position[r]], logits[position[r]] = f[i].numpy(), z[i].numpy()
    return (feats if feats is not None else np.full((len(rows), 1), np.nan, np.float32)), logits
