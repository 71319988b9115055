"""The embed stage's pure core: manifest in, embeddings / cross-fitted probs / gradient embeddings out.

Steps (all rows stay aligned with the manifest; rows with an ingest ``error`` get NaN vectors):

1. backbone: a registry model (optionally from a local ``--weights`` file), a TorchScript /
   torch.export file, or no network at all (``features``: the ingest feature table);
2. warm-up (``--warmup E``): train the backbone E epochs on train + trusted (:mod:`.warmup`),
   i.e. on EVERY label the head is later cross-fitted on (see step 4);
   steps 1-2 are :func:`prepare_backbone`, which every executor calls;
3. embedding: penultimate features, computed shard by shard; each finished shard is saved
   through ``checkpoints`` and reloaded by a rerun, so a killed run resumes and ends with the
   same result. A row whose image does not decode, or whose embedding is NaN/Inf, gets a new
   error and ``valid=False``;
4. probs: K-fold cross-fitted head on the embeddings (:mod:`.crossfit`). Only the head is
   cross-fitted: after a warm-up the backbone has seen each row's own label, so the probs are
   out of sample for the head only, and a long warm-up memorises flipped labels (digits, 40%
   flips: argmax(probs) equals the flipped label for 1.5% of flipped rows at ``--warmup 10``,
   7.9% at 20, 58% at 60). A row whose probs come out NaN/Inf gets an error;
5. grad_embedding: last-layer gradient embedding from the cross-fit heads (:mod:`.gradembed`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from models.backbones import load_model_file
from models.registry import build_model, features_and_logits, get_spec, requires_weights_message
from stages.common import schema
from stages.common.checkpoint import Checkpoints
from stages.common.params import validate_choices
from stages.common.progress import track
from stages.common.torch_utils import resolve_device, seed_everything
from stages.embed.crossfit import crossfit
from stages.embed.data import BatchDecoder, ImageTransform, auto_workers, make_loader, normalise, probe_image
from stages.embed.gradembed import gradient_embedding
from stages.embed.params import EmbedParams
from stages.embed.warmup import warmup_train

NAN_ERROR = "embedding is NaN/Inf"
HEAD_ERROR = "probs/grad_embedding are NaN/Inf: the cross-fitting head diverged"
AUTO_WARMUP_EPOCHS = 10


@dataclass
class EmbedResult:
    """What the embed stage computed, one row per manifest row.

    Attributes
    ----------
    embedding : (n, d) float32 penultimate features; NaN rows where not ``valid``.
    probs : (n, C) float32 cross-fitted class probabilities (rows sum to 1); NaN where not valid.
        Out of sample for the head; a warm-up backbone was trained on every label (see above).
    grad_embedding : (n, g) float32 last-layer gradient embedding; NaN where not valid.
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
    grad_embedding: np.ndarray
    valid: np.ndarray
    errors: list[str | None]
    model_state: dict[str, torch.Tensor] | None
    metrics: dict[str, Any]
    fold: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))


def _check(params: EmbedParams, num_classes: int) -> None:
    """Raise ValueError naming the option for any value the stage cannot use (not just a traceback later)."""
    validate_choices(params)
    for name, low, why in (
        ("batch_size", 1, ""), ("shard_size", 1, ""), ("folds", 2, ""), ("head_iters", 1, ""), ("head_hidden", 1, ""),
        ("warmup_batch_size", 2, " (BatchNorm needs two examples per training batch)"),
        ("image_size", 0, " (0 = the model's default)"), ("warmup", -1, " (-1 = auto)"),
        ("num_workers", -1, " (-1 = auto)"), ("grad_dim", 0, " (0 = no projection)"),
    ):
        value = getattr(params, name)
        if value < low:
            raise ValueError(f"option --{name.replace('_', '-')}: must be >= {low}{why}, got {value}")
    for name, positive in (("head_weight_decay", False), ("warmup_lr", True), ("warmup_weight_decay", False)):
        value = getattr(params, name)
        if not (math.isfinite(value) and (value > 0 if positive else value >= 0)):
            raise ValueError(f"option --{name.replace('_', '-')}: must be a finite number "
                             f"{'> 0' if positive else '>= 0'}, got {value}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")


def _state_hash(module: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _manifest_arrays(manifest: pa.Table, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    missing = {"id", "label", "split", "error"} - set(manifest.column_names)
    if missing:
        raise ValueError(f"manifest lacks columns {sorted(missing)} (see stages.common.schema.MANIFEST_SCHEMA)")
    if "image" not in manifest.column_names and "uri" not in manifest.column_names:
        raise ValueError("manifest has neither an 'image' nor a 'uri' column")
    ok = manifest.column("error").is_null().to_numpy(zero_copy_only=False)
    labels = manifest.column("label").fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    split = np.asarray(manifest.column("split").to_pylist(), dtype=object)
    labelled = ok & np.isin(split, [schema.TRAIN, schema.TRUSTED]) & (labels >= 0) & (labels < num_classes)
    ids = np.asarray(manifest.column("id").to_pylist(), dtype=object)
    return ok, labels, labelled, ids


def _has_images(manifest: pa.Table, ok: np.ndarray) -> bool:
    """Whether any usable row has image bytes or a uri (a feature-table manifest has neither)."""
    present = np.zeros(manifest.num_rows, bool)
    for col in ("image", "uri"):
        if col in manifest.column_names:
            present |= manifest.column(col).is_valid().to_numpy(zero_copy_only=False)
    return bool((present & ok).any())


class Backbone:
    """The network, its input transform and how it runs (device, AMP, padding of fixed batches)."""

    def __init__(self, net: nn.Module, transform: ImageTransform, name: str, device: torch.device, amp: bool) -> None:
        self.net, self.transform, self.name, self.device = net, transform, name, device
        self.amp = amp and device.type == "cuda"
        self.fixed_batch = bool(getattr(net, "is_exported_program", False))
        if device.type == "cuda" and not isinstance(net, torch.jit.ScriptModule) and not self.fixed_batch:
            self.net = self.net.to(memory_format=torch.channels_last)

    def prepare(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, S, S) on the device -> normalised float input, channels-last.

        Channels-last is what cuDNN/AMP prefer, and on CPU oneDNN convolutions are also faster
        with it (small CNN on 32 px: ~1.4x); it changes no value.
        """
        return normalise(pixels, self.transform).contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def embed(self, pixels: torch.Tensor, batch_size: int) -> torch.Tensor:
        """uint8 (B, C, S, S) -> float32 (B, d) on CPU."""
        b = len(pixels)
        if self.fixed_batch and b < batch_size:  # exported programs may have a static batch dim
            pixels = torch.cat([pixels, pixels[-1:].expand(batch_size - b, *pixels.shape[1:])])
        x = self.prepare(pixels.to(self.device, non_blocking=True))
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            feats, _ = features_and_logits(self.net, x, logits=False)
        return feats[:b].float().flatten(1).cpu()


def build_backbone(
    manifest: pa.Table, params: EmbedParams, ok: np.ndarray, num_classes: int, device: torch.device,
    model: nn.Module | None,
) -> tuple[Backbone, int]:
    """Resolve ``params`` (model, weights, model file, image size) into a ready :class:`Backbone`.

    Parameters
    ----------
    manifest : the stage's manifest; the first decodable image of an ``ok`` row fixes the
        channels (1 or 3) and, for models without a fixed input size, the image size.
    params : :class:`EmbedParams`.
    ok : (n,) bool rows without an ingest error.
    num_classes : head size of registry models.
    device : where the network lives.
    model : optional module used as is (like ``--model-file``).

    Returns
    -------
    (Backbone, warm-up epochs): epochs resolve ``--warmup -1`` (auto); 0 for model files.
    """
    rows = np.flatnonzero(ok)
    if len(rows) == 0:
        raise ValueError("every manifest row has an error; nothing to embed")
    if not _has_images(manifest, ok):
        asked = f"option --model-file {params.model_file}" if params.model_file else f"option --model {params.model}"
        raise ValueError(f"{'the given network' if model is not None else asked}: the manifest has no images "
                         "(ingest read a feature table, --features), so there is nothing for a network to embed; "
                         "use --model features (or auto) to use the ingest feature table")
    channels, h, w = probe_image(manifest, rows)
    mode = "L" if channels == 1 else "RGB"
    if model is not None or params.model_file:
        if params.warmup > 0:
            raise ValueError("option --warmup: a --model-file network is used as is; set --warmup 0")
        net = model if model is not None else load_model_file(params.model_file)
        size = params.image_size or max(h, w)
        tf = ImageTransform(size, mode, (0.0,), (1.0,))  # model files get pixels in [0, 1]
        net = net.to(device)
        if not getattr(net, "is_exported_program", False):  # exported programs keep their export mode
            net = net.eval()
        return Backbone(net, tf, params.model_file or "custom", device, params.amp), 0
    name = params.model
    if name == "auto":
        name = "small_cnn" if max(h, w) <= 32 else "resnet18"
    spec = get_spec(name)
    weights = "none" if params.model == "auto" and not params.weights else params.weights
    # A torchvision net with neither weights nor an explicit warm-up is almost surely a mistake.
    if spec.pretrained_expected and weights == "" and params.warmup <= 0:
        raise ValueError(requires_weights_message(name))
    given = weights not in ("", "none")
    epochs = params.warmup if params.warmup >= 0 else (0 if given else AUTO_WARMUP_EPOCHS)
    in_ch = spec.channels or channels
    mode = "L" if in_ch == 1 else "RGB"
    # 'auto' trains from scratch, so it keeps the images' own size (no 224-px upsampling).
    size = params.image_size or (None if params.model == "auto" else spec.input_size) or max(h, w)
    mean, std = spec.mean, spec.std
    if len(mean) not in (1, in_ch):
        mean, std = (sum(mean) / len(mean),), (sum(std) / len(std),)
    net = build_model(name, num_classes, in_channels=in_ch, input_size=size, weights=weights or None)
    return Backbone(net.to(device).eval(), ImageTransform(size, mode, mean, std), name, device, params.amp), epochs


@dataclass
class PreparedBackbone:
    """The network ready to embed: what :func:`prepare_backbone` returns.

    Attributes
    ----------
    backbone : the :class:`Backbone` (network in eval mode on the device, its transform).
    model_state : state_dict of the warmed-up network (CPU tensors) if warm-up ran, else None.
    metrics : ``model`` (its name) and, after a warm-up, the warm-up's metrics.
    """

    backbone: Backbone
    model_state: dict[str, torch.Tensor] | None
    metrics: dict[str, Any]


def prepare_backbone(
    manifest: pa.Table,
    params: EmbedParams,
    *,
    num_classes: int,
    seed: int = 0,
    device: str = "cpu",
    checkpoints: Checkpoints | None = None,
    model: nn.Module | None = None,
) -> PreparedBackbone:
    """Build the stage's network and warm it up when asked: steps 1 and 2 of :func:`run_embed`.

    Every executor calls this one function (the local stage through :func:`run_embed`, the
    Beam executor before shipping the network to its workers), so both embed with the same
    weights. Arguments as in :func:`run_embed`; the network's initialisation and the warm-up
    are seeded by ``seed`` (global torch/numpy seeds are reset here). Raises ValueError on bad
    options or a manifest without usable rows.
    """
    _check(params, num_classes)
    dev = resolve_device(device)
    ok, labels, labelled, _ = _manifest_arrays(manifest, num_classes)
    seed_everything(seed)
    backbone, epochs = build_backbone(manifest, params, ok, num_classes, dev, model)
    metrics: dict[str, Any] = {"model": backbone.name}
    model_state = None
    if epochs > 0:
        model_state = _warmup(manifest, params, backbone, labels, labelled, epochs, seed,
                              auto_workers(params.num_workers, dev), dev.type == "cuda", checkpoints, metrics)
    return PreparedBackbone(backbone, model_state, metrics)


def _batches(rows: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]


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
) -> EmbedResult:
    """Embed every manifest row and compute out-of-sample probabilities and gradient embeddings.

    Parameters
    ----------
    manifest : table with the columns of ``stages.common.schema.MANIFEST_SCHEMA`` (``id``,
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

    Returns
    -------
    EmbedResult
    """
    _check(params, num_classes)
    t_start = time.perf_counter()
    dev = resolve_device(device)
    n = manifest.num_rows
    ok, labels, labelled, ids = _manifest_arrays(manifest, num_classes)
    errors: list[str | None] = [None] * n
    metrics: dict[str, Any] = {"rows": n, "ingest_errors": int((~ok).sum()), "device": str(dev)}
    model_state = None
    use_features = params.model == "features" or (
        features is not None and model is None and not params.model_file and params.model == "auto"
    )
    if use_features:
        if features is None:
            raise ValueError("--model features needs the ingest feature table (ingest --features COLUMN)")
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or len(features) != n:
            raise ValueError(f"features must be (n={n}, d), got shape {features.shape}")
        embedding = features.copy()
        embedding[~ok] = np.nan
        metrics.update(model="features", embed_seconds=0.0)
    else:
        prepared = prepare_backbone(manifest, params, num_classes=num_classes, seed=seed, device=device,
                                    checkpoints=checkpoints, model=model)
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
    )
    metrics["crossfit_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    grad = gradient_embedding(
        cf.probs, labels, cf.last_input, kind=params.grad_kind,
        dim=params.grad_dim, seed=seed + 7919,
    )
    probs = cf.probs
    # A diverged head gives NaN/Inf probs: such a row gets an error, never zeros that pass for data.
    diverged = valid & ~(np.isfinite(probs).all(1) & np.isfinite(grad).all(1))
    if diverged.any() and diverged.sum() == valid.sum():
        raise ValueError(
            f"the cross-fitting head diverged on every row (probs or grad_embedding NaN/Inf); try --head linear, a larger "
            f"--head-weight-decay (now {params.head_weight_decay}) or fewer --head-iters (now {params.head_iters}), "
            "and check the embeddings' scale"
        )
    for r in np.flatnonzero(diverged):
        errors[r] = HEAD_ERROR
    valid &= ~diverged
    fit &= valid
    for arr in (embedding, probs, grad):
        arr[~valid] = np.nan
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


def _warmup(
    manifest: pa.Table, params: EmbedParams, backbone: Backbone, labels: np.ndarray, labelled: np.ndarray,
    epochs: int, seed: int, workers: int, pin: bool, checkpoints: Checkpoints | None, metrics: dict[str, Any],
) -> dict[str, torch.Tensor]:
    t0 = time.perf_counter()
    train_rows = np.flatnonzero(labelled)
    if len(train_rows) < 2:
        raise ValueError("option --warmup: needs at least 2 labelled train/trusted rows")
    bs = params.warmup_batch_size

    def batches_for_epoch(epoch: int) -> Any:
        order = np.random.default_rng([seed, epoch]).permutation(train_rows)
        dataset = BatchDecoder(manifest, _batches(order, bs), backbone.transform)
        return make_loader(dataset, num_workers=workers, pin_memory=pin)

    augment = params.augment
    if augment == "auto":
        augment = "natural" if backbone.transform.channels == 3 else "digits"
    size = backbone.transform.size
    pad = {"natural": max(1, size // 8), "digits": max(1, size // 16), "none": 0}[augment]
    fingerprint = hashlib.sha256(
        repr((backbone.name, _state_hash(backbone.net), train_rows.tobytes(), labels[train_rows].tobytes(), epochs,
              params.warmup_lr, bs, params.warmup_weight_decay, augment, seed)).encode()
    ).hexdigest()[:16]
    metrics.update(
        warmup_train(
            backbone.net, batches_for_epoch, labels, epochs=epochs, steps_per_epoch=-(-len(train_rows) // bs),
            lr=params.warmup_lr, weight_decay=params.warmup_weight_decay, pad=pad, flip=augment == "natural",
            prepare=backbone.prepare, seed=seed, device=backbone.device, amp=params.amp, checkpoints=checkpoints,
            fingerprint=fingerprint,
        )
    )
    metrics["warmup_seconds"] = time.perf_counter() - t0
    return {k: v.detach().cpu().clone() for k, v in backbone.net.state_dict().items()}


def _embed_shards(
    manifest: pa.Table, params: EmbedParams, backbone: Backbone, ok: np.ndarray, ids: np.ndarray, workers: int,
    pin: bool, checkpoints: Checkpoints | None, metrics: dict[str, Any],
) -> tuple[np.ndarray, dict[int, str]]:
    """Embed all ``ok`` rows shard by shard, loading finished shards from ``checkpoints``."""
    n = len(ok)
    model_fp = repr((backbone.name, backbone.transform, _state_hash(backbone.net)))
    shards = [(s, min(s + params.shard_size, n)) for s in range(0, n, params.shard_size)]
    results: dict[int, dict[str, Any]] = {}
    pending: list[int] = []
    fps: list[str] = []
    for i, (a, b) in enumerate(shards):
        fps.append(hashlib.sha256((model_fp + "\x00".join(ids[a:b]) + repr(ok[a:b].tobytes())).encode()).hexdigest())
        state = checkpoints.load(f"shard-{i:05d}") if checkpoints is not None else None
        if state is not None and state.get("fingerprint") == fps[i]:
            results[i] = state
        else:
            pending.append(i)
    metrics.update(shards=len(shards), shards_loaded=len(results))

    # One loader over the batches of every pending shard: shard boundaries are batch boundaries,
    # so workers keep decoding ahead across shards.
    plan: list[tuple[int, np.ndarray]] = []
    for i in pending:
        a, b = shards[i]
        plan += [(i, rows) for rows in _batches(a + np.flatnonzero(ok[a:b]), params.batch_size)]
    remaining = {i: sum(1 for j, _ in plan if j == i) for i in pending}
    parts: dict[int, list[tuple[torch.Tensor, torch.Tensor, list[str | None]]]] = {i: [] for i in pending}
    t0 = time.perf_counter()
    loader = make_loader(BatchDecoder(manifest, [r for _, r in plan], backbone.transform), num_workers=workers,
                         pin_memory=pin)
    done = 0
    for (i, _), (pixels, rows, errs) in zip(plan, track(loader, "embed", total=len(plan))):
        parts[i].append((backbone.embed(pixels, params.batch_size), rows, errs))
        done += len(rows)
        remaining[i] -= 1
        if remaining[i] == 0:
            results[i] = _finish_shard(shards[i], parts.pop(i), fps[i], checkpoints, i)
    for i in list(parts):  # shards with no usable row
        results[i] = _finish_shard(shards[i], parts.pop(i), fps[i], checkpoints, i)
    seconds = time.perf_counter() - t0
    metrics.update(embed_seconds=seconds, images_embedded=done, images_per_s=done / seconds if done else 0.0)

    dims = {int(r["embedding"].shape[1]) for r in results.values() if r["embedding"].shape[1] > 0}
    if len(dims) > 1:
        raise ValueError(f"shards disagree on the embedding size {sorted(dims)}; rerun with a fresh stage folder")
    d = dims.pop() if dims else 1
    embedding = np.full((n, d), np.nan, np.float32)
    decode_errors: dict[int, str] = {}
    for i, (a, b) in enumerate(shards):
        emb = results[i]["embedding"]
        if emb.shape[1]:
            embedding[a:b] = emb.numpy()
        for r, e in enumerate(results[i]["errors"]):
            if e:
                decode_errors[a + r] = e
    return embedding, decode_errors


def _finish_shard(
    bounds: tuple[int, int], parts: list[tuple[torch.Tensor, torch.Tensor, list[str | None]]], fingerprint: str,
    checkpoints: Checkpoints | None, index: int,
) -> dict[str, Any]:
    a, b = bounds
    d = parts[0][0].shape[1] if parts else 0
    emb = torch.full((b - a, d), float("nan"))
    errs = [""] * (b - a)
    for feats, rows, row_errs in parts:
        emb[rows - a] = feats
        for r, e in zip(rows.tolist(), row_errs):
            if e is not None:
                errs[r - a] = e
                emb[r - a] = float("nan")
    state = {"fingerprint": fingerprint, "embedding": emb, "errors": errs}
    if checkpoints is not None:
        checkpoints.save(f"shard-{index:05d}", state)
    return state
