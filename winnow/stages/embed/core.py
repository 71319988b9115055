"""The embed stage's pure core: manifest in, embeddings / cross-fitted probs / gradient embeddings out.

Steps (all rows stay aligned with the manifest; rows with an ingest ``error`` get NaN vectors):

1. backbone: a registry model (optionally from a local ``--weights`` file), a TorchScript
   file, or no network at all (``features``: the ingest feature table);
2. warm-up (``--warmup E``): train the backbone E epochs on train + trusted (:mod:`.warmup`),
   i.e. on EVERY label the head is later cross-fitted on (see step 4);
   steps 1-2 are :func:`winnow.stages.embed.backbone.prepare_backbone`, which every executor calls;
3. embedding: penultimate features, computed shard by shard; each finished shard is saved
   through ``checkpoints`` and reloaded by a rerun, so a killed run resumes and ends with the
   same result. A row whose image does not decode, or whose embedding is NaN/Inf, gets a new
   error and ``valid=False``;
4. probs: K-fold cross-fitted head on the embeddings (:mod:`.crossfit`). With ``--crossfit
   head`` (the default) only the head is cross-fitted: after a warm-up the backbone has seen
   each row's own label, so the probs are out of sample for the head only, and a long warm-up
   memorises flipped labels (digits, 40% flips: argmax(probs) equals the flipped label for 1.5%
   of flipped rows at ``--warmup 10``, 7.9% at 20, 58% at 60). ``--crossfit backbone`` warms up
   one more network per fold without that fold's labels and takes the labelled rows' probs from
   it and a head on its embeddings (:mod:`.crossfit_backbone`; the head-only probs of those rows,
   a few L-BFGS fits, are then unused). A row whose probs come out NaN/Inf gets an error;
5. grad_embedding: last-layer gradient embedding from the cross-fit heads (:mod:`.gradembed`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from winnow.stages.common.checkpoint import Checkpoints
from winnow.stages.common.mapping import Map, map_in_process
from winnow.stages.common.progress import track
from winnow.stages.common.reprs import short_repr
from winnow.stages.common.torch_utils import resolve_device
from winnow.stages.embed.backbone import (
    Backbone,
    batches,
    check_params,
    manifest_arrays,
    prepare_backbone,
    state_hash,
)
from winnow.stages.embed.crossfit import crossfit
from winnow.stages.embed.crossfit_backbone import fold_backbone_probs
from winnow.stages.embed.data import BatchDecoder, auto_workers, make_loader
from winnow.stages.embed.gradembed import LazyGradientEmbedding, gradient_embedding
from winnow.stages.embed.params import EmbedParams

NAN_ERROR = "embedding is NaN/Inf"
HEAD_ERROR = "probs/grad_embedding are NaN/Inf: the cross-fitting head diverged"
FOLD_ERROR = "probs are NaN/Inf: the fold network of --crossfit backbone could not score the row"


@dataclass
class EmbedResult:
    """What the embed stage computed, one row per manifest row.

    Attributes
    ----------
    embedding : (n, d) float32 penultimate features; NaN rows where not ``valid``.
    probs : (n, C) float32 cross-fitted class probabilities (rows sum to 1); NaN where not valid.
        Out of sample for the head; a warm-up backbone was trained on every label (see above).
    grad_embedding : (n, g) float32 last-layer gradient embedding; NaN where not valid. With
        ``run_embed(lazy_grad=True)`` and an unprojected full embedding, a
        :class:`~.gradembed.LazyGradientEmbedding` (same values, computed block by block when written).
    valid : (n,) bool, False for rows with an ingest error or one found here.
    errors : per row, the NEW error found here (undecodable image, NaN/Inf embedding or probs),
        else None; an ingest error is not repeated here (the adapter writes it to features.parquet).
    model_state : state_dict of the warmed-up backbone (CPU tensors) if warm-up ran, else None.
    metrics : images/s, timings, fold accuracies, shard counts.
    fold : (n,) int64 cross-fitting fold that held each labelled row out; -1 for rows scored by
        the head trained on all labelled rows (test split, unlabelled) or not scored.
    """

    embedding: np.ndarray
    probs: np.ndarray
    grad_embedding: np.ndarray | LazyGradientEmbedding
    valid: np.ndarray
    errors: list[str | None]
    model_state: dict[str, torch.Tensor] | None
    metrics: dict[str, Any]
    fold: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))

    __repr__ = short_repr


def run_embed(
    manifest: pa.Table,
    params: EmbedParams,
    *,
    num_classes: int,
    seed: int = 0,
    device: str = "cpu",
    features: np.ndarray | None = None,
    checkpoints: Checkpoints | None = None,
    model: nn.Module | None = None,
    fold_ids: np.ndarray | None = None,
    backbone_params: EmbedParams | None = None,
    lazy_grad: bool = False,
    copy_features: bool = True,
    map_work: Map = map_in_process,
) -> EmbedResult:
    """Embed every manifest row and compute out-of-sample probabilities and gradient embeddings.

    Parameters
    ----------
    manifest : table with the columns of ``winnow.stages.common.schema.MANIFEST_SCHEMA`` (``id``,
        ``uri`` (absolute paths) and/or ``image`` bytes, ``label``, ``split``, ``error``).
    params : :class:`EmbedParams`.
    num_classes : C, labels are in [0, C).
    seed : seeds warm-up, fold assignment, heads and the projection.
    device : "auto", "cpu" or "cuda[:N]".
    features : (n, d) ingest feature table; with ``--model features`` (or when given and no
        network is asked for) no network runs.
    checkpoints : store for finished shards (``shard-00000``, ...) and the warm-up state; a rerun
        with the same inputs loads them instead of recomputing.
    model : an ``nn.Module`` to use instead of ``params.model`` (tests, notebooks); treated like
        a ``--model-file`` network (pixels in [0, 1], output = embedding or (embedding, logits)).
    fold_ids : optional (n,) fold of each row (used for the labelled rows only); default:
        stratified, seeded assignment. ``EmbedResult.fold`` reports the folds used.
    backbone_params : the options of the network that computed ``features`` (the Beam executor
        embeds on its workers, then calls this with ``--model features``): with ``--crossfit
        backbone`` the fold networks are built from them.
    lazy_grad : return an unprojected full gradient embedding in its lazy form, so that a writer
        streams it instead of holding (n, C * h) floats (the local adapter; issue 17).
    copy_features : False lets the embedding be ``features`` itself, written to in place (NaN on
        unusable rows): for a caller that hands over an array it no longer needs (one (n, d) copy
        less; the local adapter).
    map_work : where the network's warm-ups and the cross-fit's heads are trained
        (:data:`winnow.stages.common.mapping.Map`): in this process by default; on the
        workers with the Beam executor.

    Returns
    -------
    EmbedResult
    """
    check_params(params, num_classes)
    t_start = time.perf_counter()
    dev = resolve_device(device)
    n = manifest.num_rows
    ok, labels, labelled, ids = manifest_arrays(manifest, num_classes)
    errors: list[str | None] = [None] * n
    metrics: dict[str, Any] = {"rows": n, "ingest_errors": int((~ok).sum()), "device": str(dev)}
    model_state = None
    use_features = params.model == "features" or (
        features is not None and model is None and not params.model_file and params.model == "auto"
    )
    if params.crossfit == "backbone" and use_features and backbone_params is None:
        raise ValueError("option --crossfit backbone: there is no network to warm up per fold (--model features: the "
                         "ingest feature table saw no label of this set, so --crossfit head is already out of sample)")
    if use_features:
        if features is None:
            raise ValueError("--model features needs the ingest feature table (ingest --features COLUMN)")
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or len(features) != n:
            raise ValueError(f"features must be (n={n}, d), got shape {features.shape}")
        embedding = features.copy() if copy_features or not features.flags.writeable else features
        embedding[~ok] = np.nan
        metrics.update(model="features", embed_seconds=0.0)
    else:
        prepared = prepare_backbone(manifest, params, num_classes=num_classes, seed=seed, device=device,
                                    checkpoints=checkpoints, model=model, map_work=map_work)
        backbone, model_state = prepared.backbone, prepared.model_state
        metrics.update(prepared.metrics)
        workers = auto_workers(params.num_workers, dev)
        pin = dev.type == "cuda"
        embedding, decode_errors = _embed_shards(manifest, params, backbone, ok, ids, workers, pin, checkpoints, metrics)
        for r, e in decode_errors.items():
            errors[r] = e
    bad = ok & ~np.isfinite(embedding).all(1)
    for r in np.flatnonzero(bad):
        errors[r] = errors[r] or NAN_ERROR
    valid = ok & np.array([e is None for e in errors], dtype=bool)
    embedding = np.ascontiguousarray(embedding, dtype=np.float32)
    embedding[~valid] = np.nan

    t0 = time.perf_counter()
    fit = labelled & valid
    if not fit.any():
        raise ValueError(_no_fit_rows_message(labelled, errors, ids, params, metrics))
    folds_of = None if fold_ids is None else np.asarray(fold_ids, np.int64)[fit]
    cf = crossfit(
        embedding, labels, fit, valid, num_classes, folds=params.folds, kind=params.head, hidden=params.head_hidden,
        iters=params.head_iters, weight_decay=params.head_weight_decay, seed=seed, device=dev, fold_ids=folds_of,
        map_heads=map_work,
    )
    probs = cf.probs
    fold_failed = np.zeros(n, bool)
    if params.crossfit == "backbone":
        fit_rows = np.flatnonzero(fit)
        fold_probs, fold_metrics = fold_backbone_probs(
            manifest, backbone_params or params, num_classes=num_classes, fit_rows=fit_rows, fold=cf.fold[fit_rows],
            seed=seed, device=device, checkpoints=checkpoints, map_work=map_work,
        )
        probs[fit_rows] = fold_probs
        fold_failed[fit_rows] = ~np.isfinite(fold_probs).all(1)
        metrics.update(fold_metrics)
    metrics["crossfit_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    grad = gradient_embedding(probs, labels, cf.last_input, kind=params.grad_kind, dim=params.grad_dim,
                              seed=seed + 7919, lazy=lazy_grad)
    grad_finite = grad.finite_rows() if isinstance(grad, LazyGradientEmbedding) else np.isfinite(grad).all(1)
    # A diverged head gives NaN/Inf probs: such a row gets an error, never zeros that pass for data.
    diverged = valid & ~(np.isfinite(probs).all(1) & grad_finite)
    if diverged.any() and diverged.sum() == valid.sum():
        if fold_failed[valid].all():
            raise ValueError("every fold network of --crossfit backbone gives NaN/Inf probs: its warm-up diverged; "
                             f"lower --warmup-lr (now {params.warmup_lr})")
        raise ValueError(
            f"the cross-fitting head diverged on every row (probs or grad_embedding NaN/Inf); try --head linear, a larger "
            f"--head-weight-decay (now {params.head_weight_decay}) or fewer --head-iters (now {params.head_iters}), "
            "and check the embeddings' scale"
        )
    for r in np.flatnonzero(diverged):
        errors[r] = FOLD_ERROR if fold_failed[r] else HEAD_ERROR
    valid &= ~diverged
    fit &= valid
    for arr in (embedding, probs):
        arr[~valid] = np.nan
    if isinstance(grad, LazyGradientEmbedding):
        grad.invalid = ~valid
    else:
        grad[~valid] = np.nan
    metrics.update(
        new_errors=int((ok & ~valid).sum()),
        head_errors=int(diverged.sum()),
        fold_accuracy=cf.fold_accuracy,
        oof_accuracy=float((probs[fit].argmax(1) == labels[fit]).mean()) if fit.any() else float("nan"),
        grad_seconds=time.perf_counter() - t0,
        total_seconds=time.perf_counter() - t_start,
    )
    return EmbedResult(
        embedding=embedding, probs=probs, grad_embedding=grad, valid=valid, errors=errors,
        model_state=model_state, metrics=metrics, fold=cf.fold,
    )


def _no_fit_rows_message(
    labelled: np.ndarray, errors: list[str | None], ids: np.ndarray, params: EmbedParams, metrics: dict[str, Any],
) -> str:
    """Why no labelled row is left to cross-fit on, and what to do (instead of assign_folds' '0 rows')."""
    if not labelled.any():
        return ("no labelled row to fit the head on: it needs train or trusted rows with a known label and no "
                "ingest error (see ingest's summary)")
    rows = np.flatnonzero(labelled)
    if all(errors[r] == NAN_ERROR for r in rows):
        if metrics.get("warmup_epochs"):
            losses = metrics.get("warmup_loss") or []
            return (f"every labelled row's embedding is NaN/Inf after the {metrics['warmup_epochs']}-epoch warm-up "
                    f"(training loss per epoch: {', '.join(f'{v:.3g}' for v in losses)}): the warm-up diverged; lower "
                    f"--warmup-lr (now {params.warmup_lr})")
        if metrics.get("model") == "features":
            # (the Beam executor also comes here, with the backbone's embeddings as the features)
            return ("the embeddings are NaN/Inf for every labelled row: fix the feature column given to ingest "
                    "--features (or, on the Beam executor, the backbone: after a warm-up, lower --warmup-lr)")
        return (f"the backbone ({metrics.get('model')}) gives NaN/Inf embeddings for every labelled row; check "
                "--weights / --model-file")
    first = next(r for r in rows if errors[r] is not None)
    return (f"no labelled row could be embedded (e.g. row {ids[first]!r}: {errors[first]}); check that the "
            "images are readable")


@dataclass
class ShardPlan:
    """The embedding's shards: row bounds, a fingerprint each (model + rows), the states of the
    shards finished by an earlier run (from ``checkpoints``), and the shards still to embed.

    Both executors go through it, so a killed embed resumes from its last finished shard
    whichever ran it; a shard's state is ``{"fingerprint", "embedding", "errors"}``
    (:func:`finish_shard`)."""

    bounds: list[tuple[int, int]]
    fingerprints: list[str]
    done: dict[int, dict[str, Any]]
    pending: list[int]

    def rows(self, ok: np.ndarray, batch_size: int) -> list[tuple[int, np.ndarray]]:
        """(shard, rows) of every forward batch of the pending shards' ``ok`` rows."""
        plan: list[tuple[int, np.ndarray]] = []
        for i in self.pending:
            a, b = self.bounds[i]
            plan += [(i, rows) for rows in batches(a + np.flatnonzero(ok[a:b]), batch_size)]
        return plan


def plan_shards(params: EmbedParams, backbone: Backbone, ok: np.ndarray, ids: np.ndarray,
                checkpoints: Checkpoints | None) -> ShardPlan:
    """Cut the rows into ``params.shard_size`` shards and load those already finished."""
    n = len(ok)
    model_fp = repr((backbone.name, backbone.transform, state_hash(backbone.net)))
    bounds = [(s, min(s + params.shard_size, n)) for s in range(0, n, params.shard_size)]
    plan = ShardPlan(bounds, [], {}, [])
    for i, (a, b) in enumerate(bounds):
        plan.fingerprints.append(
            hashlib.sha256((model_fp + "\x00".join(ids[a:b]) + repr(ok[a:b].tobytes())).encode()).hexdigest())
        state = checkpoints.load(shard_key(i)) if checkpoints is not None else None
        if state is not None and state.get("fingerprint") == plan.fingerprints[i]:
            plan.done[i] = state
        else:
            plan.pending.append(i)
    return plan


def shard_key(index: int) -> str:
    """The checkpoint key of shard ``index``."""
    return f"shard-{index:05d}"


def _embed_shards(
    manifest: pa.Table, params: EmbedParams, backbone: Backbone, ok: np.ndarray, ids: np.ndarray, workers: int,
    pin: bool, checkpoints: Checkpoints | None, metrics: dict[str, Any],
) -> tuple[np.ndarray, dict[int, str]]:
    """Embed all ``ok`` rows shard by shard, loading finished shards from ``checkpoints``."""
    shards = plan_shards(params, backbone, ok, ids, checkpoints)
    results = dict(shards.done)
    metrics.update(shards=len(shards.bounds), shards_loaded=len(results))

    # One loader over the batches of every pending shard: shard boundaries are batch boundaries,
    # so workers keep decoding ahead across shards.
    plan = shards.rows(ok, params.batch_size)
    remaining = Counter(i for i, _ in plan)  # batches left per shard
    parts: dict[int, list[tuple[torch.Tensor, torch.Tensor, list[str | None]]]] = {i: [] for i in shards.pending}
    t0 = time.perf_counter()
    loader = make_loader(BatchDecoder(manifest, [r for _, r in plan], backbone.transform), num_workers=workers,
                         pin_memory=pin)
    done = 0
    for (i, _), (pixels, rows, errs) in zip(plan, track(loader, "embed", total=len(plan))):
        parts[i].append((backbone.embed(pixels), rows, errs))
        done += len(rows)
        remaining[i] -= 1
        if remaining[i] == 0:
            results[i] = finish_shard(shards, i, parts.pop(i), checkpoints)
    for i in list(parts):  # shards with no usable row
        results[i] = finish_shard(shards, i, parts.pop(i), checkpoints)
    seconds = time.perf_counter() - t0
    metrics.update(embed_seconds=seconds, images_embedded=done, images_per_s=done / seconds if done else 0.0)
    return gather_shards(shards.bounds, results, len(ok))


def gather_shards(bounds: list[tuple[int, int]], results: dict[int, dict[str, Any]],
                  n: int) -> tuple[np.ndarray, dict[int, str]]:
    """The (n, d) embedding (NaN where a row has none) and the decode errors by row, from every
    shard's state."""
    dims = {int(r["embedding"].shape[1]) for r in results.values() if r["embedding"].shape[1] > 0}
    if len(dims) > 1:
        raise ValueError(f"shards disagree on the embedding size {sorted(dims)}; rerun with a fresh stage folder")
    d = dims.pop() if dims else 1
    embedding = np.full((n, d), np.nan, np.float32)
    decode_errors: dict[int, str] = {}
    for i, (a, b) in enumerate(bounds):
        emb = results[i]["embedding"]
        if emb.shape[1]:
            embedding[a:b] = emb.numpy()
        for r, e in enumerate(results[i]["errors"]):
            if e:
                decode_errors[a + r] = e
    return embedding, decode_errors


def finish_shard(
    shards: ShardPlan, index: int, parts: list[tuple[torch.Tensor, torch.Tensor, list[str | None]]],
    checkpoints: Checkpoints | None,
) -> dict[str, Any]:
    """Shard ``index``'s state from its batches' (embeddings, rows, decode errors), saved through
    ``checkpoints``; a row with a decode error gets NaN. ``parts`` may be empty (no usable row)."""
    a, b = shards.bounds[index]
    d = parts[0][0].shape[1] if parts else 0
    emb = torch.full((b - a, d), float("nan"))
    errs = [""] * (b - a)
    for feats, rows, row_errs in parts:
        emb[rows - a] = feats
        for r, e in zip(rows.tolist(), row_errs):
            if e is not None:
                errs[r - a] = e
                emb[r - a] = float("nan")
    state = {"fingerprint": shards.fingerprints[index], "embedding": emb, "errors": errs}
    if checkpoints is not None:
        checkpoints.save(shard_key(index), state)
    return state
