"""``--crossfit backbone``: probabilities from networks that never trained on the row's label.

With ``--crossfit head`` only the small head on the embeddings is cross-fitted; the warm-up has
trained the backbone on every label, so a long warm-up memorises flipped labels and the probs
agree with them (see :mod:`.crossfit`). Here each fold gets a warm-up of its own, from the same
initial weights with the same options, on the labelled rows of the other folds, and that
network's own classifier scores the fold: cross-validated predicted probabilities, as cleanlab
asks for, at ``--folds`` times the warm-up's cost. The embeddings (and so select, weight and the
kNN vote of export) still come from the one network warmed up on every row, because neighbours
have to live in one space.

Resuming: each fold's warm-up is checkpointed under its own key (``warmup-fold-K-of-N``); a
rerun loads the finished ones and only scores their fold again (one forward pass).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa

from stages.common.checkpoint import Checkpoints
from stages.embed.backbone import batches, prepare_backbone
from stages.embed.data import BatchDecoder, auto_workers, make_loader
from stages.embed.params import EmbedParams


def fold_backbone_logits(
    manifest: pa.Table,
    params: EmbedParams,
    *,
    num_classes: int,
    fit_rows: np.ndarray,
    fold: np.ndarray,
    seed: int = 0,
    device: str = "cpu",
    checkpoints: Checkpoints | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Logits of each fit row from the network warmed up without its fold.

    Parameters
    ----------
    manifest, params, num_classes, seed, device, checkpoints : as in
        :func:`stages.embed.core.run_embed` (``params`` must describe a network with a warm-up).
    fit_rows : (m,) manifest rows in the folds (labelled and valid).
    fold : (m,) fold in [0, K) of each fit row (the head's folds, so both agree).

    Returns
    -------
    (m, C) float32 logits (NaN for a row whose image no longer decodes), and metrics: each fold
    network's accuracy on its held-out fold against the given labels, and the seconds spent.
    """
    t0 = time.perf_counter()
    fit_rows, fold = np.asarray(fit_rows, np.int64), np.asarray(fold, np.int64)
    labels = manifest.column("label").fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    folds = int(fold.max()) + 1 if len(fold) else 0
    logits = np.full((len(fit_rows), num_classes), np.nan, np.float32)
    accuracy: list[float] = []
    position = {int(r): j for j, r in enumerate(fit_rows)}
    for k in range(folds):
        held = np.flatnonzero(fold == k)
        prepared = prepare_backbone(manifest, params, num_classes=num_classes, seed=seed, device=device,
                                    checkpoints=checkpoints, holdout=fit_rows[held], key=f"warmup-fold-{k + 1}-of-{folds}")
        backbone = prepared.backbone
        loader = make_loader(BatchDecoder(manifest, batches(fit_rows[held], params.batch_size), backbone.transform),
                             num_workers=auto_workers(params.num_workers, backbone.device),
                             pin_memory=backbone.device.type == "cuda")
        for pixels, rows, errors in loader:
            z = backbone.logits(pixels).numpy()
            for i, (r, e) in enumerate(zip(rows.tolist(), errors)):
                if e is None:
                    logits[position[r]] = z[i]
        scored = held[np.isfinite(logits[held]).all(1)]
        accuracy.append(float((logits[scored].argmax(1) == labels[fit_rows[scored]]).mean()) if len(scored) else float("nan"))
    return logits, {"fold_backbone_accuracy": accuracy, "fold_backbone_seconds": time.perf_counter() - t0}
