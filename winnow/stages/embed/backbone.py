"""The embed stage's network: build it, warm it up, and the helpers both executors share.

:func:`prepare_backbone` is steps 1-2 of :func:`winnow.stages.embed.core.run_embed` (the network and
its warm-up); the local stage and the Beam executor both call it, so they embed with the same
weights. :mod:`.crossfit_backbone` calls it once per fold for ``--crossfit backbone``.
"""

from __future__ import annotations

import functools
import hashlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from winnow.models.backbones import load_model_file
from winnow.models.registry import build_model, features_and_logits, get_spec, requires_weights_message
from winnow.stages.common import schema
from winnow.stages.common.checkpoint import Checkpoints
from winnow.stages.common.mapping import Map, map_in_process
from winnow.stages.common.rows import labels_array, split_array, usable_mask
from winnow.stages.common.torch_utils import resolve_device, seed_everything
from winnow.stages.embed.data import (
    BatchDecoder,
    ImageTransform,
    auto_workers,
    make_loader,
    normalise,
    probe_image,
)
from winnow.stages.embed.params import EmbedParams
from winnow.stages.embed.warmup import warmup_train

AUTO_WARMUP_EPOCHS = 10


def check_params(params: EmbedParams, num_classes: int) -> None:
    """Raise ValueError naming the option for any value the stage cannot use (not just a traceback later)."""
    params.validate()
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")


def state_hash(module: nn.Module) -> str:
    """Short digest of a network's weights and buffers (fingerprints checkpoints made from them)."""
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def manifest_arrays(manifest: pa.Table, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(ok, labels, labelled, ids)`` per row: no ingest error; label (-1 if none); usable to
    train on (train/trusted split, label in [0, C)); id."""
    missing = {"id", "label", "split", "error"} - set(manifest.column_names)
    if missing:
        raise ValueError(f"manifest lacks columns {sorted(missing)} (see winnow.stages.common.schema.MANIFEST_SCHEMA)")
    if "image" not in manifest.column_names and "uri" not in manifest.column_names:
        raise ValueError("manifest has neither an 'image' nor a 'uri' column")
    ok = usable_mask(manifest, need_label=False)  # a row without a label is still embedded
    labels = labels_array(manifest)
    labelled = ok & np.isin(split_array(manifest), [schema.TRAIN, schema.TRUSTED]) & (labels >= 0) & (labels < num_classes)
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
        if device.type == "cuda" and not isinstance(net, torch.jit.ScriptModule):
            self.net = self.net.to(memory_format=torch.channels_last)

    def prepare(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, S, S) on the device -> normalised float input, channels-last.

        Channels-last is what cuDNN/AMP prefer, and on CPU oneDNN convolutions are also faster
        with it (small CNN on 32 px: ~1.4x); it changes no value.
        """
        return normalise(pixels, self.transform).contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, S, S) -> float32 (B, d) on CPU."""
        x = self.prepare(pixels.to(self.device, non_blocking=True))
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            feats, _ = features_and_logits(self.net, x, logits=False)
        return feats.float().flatten(1).cpu()

    @torch.inference_mode()
    def embed_and_classify(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (B, C, S, S) -> float32 (B, d) features and (B, classes) logits, on CPU."""
        x = self.prepare(pixels.to(self.device, non_blocking=True))
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            feats, logits = features_and_logits(self.net, x)
        if logits is None:
            raise ValueError(f"network {self.name!r} gives no logits; --crossfit backbone needs its classifier")
        return feats.float().flatten(1).cpu(), logits.float().cpu()


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
        net = net.to(device).eval()
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
    holdout: np.ndarray | None = None,
    key: str = "warmup",
    map_work: Map = map_in_process,
) -> PreparedBackbone:
    """Build the stage's network and warm it up when asked: steps 1 and 2 of :func:`run_embed`.

    Every executor calls this one function (the local stage through :func:`run_embed`, the
    Beam executor before shipping the network to its workers), so both embed with the same
    weights. Arguments as in :func:`winnow.stages.embed.core.run_embed`; the network's initialisation
    and the warm-up are seeded by ``seed`` (global torch/numpy seeds are reset here), so every
    call starts from the same weights. ``holdout`` (row indices) are left out of the warm-up,
    whose state is checkpointed under ``key`` (``--crossfit backbone`` warms one network per
    fold). The warm-up (a training loop) runs through ``map_work``: here, or on a Beam worker,
    whose state is then loaded into this process's network. Raises ValueError on bad options
    or a manifest without usable rows.
    """
    return prepare_backbones(manifest, params, num_classes=num_classes, seed=seed, device=device,
                             checkpoints=checkpoints, model=model, holdouts=[holdout], keys=[key],
                             map_work=map_work)[0]


def prepare_backbones(
    manifest: pa.Table,
    params: EmbedParams,
    *,
    num_classes: int,
    seed: int,
    device: str,
    checkpoints: Checkpoints | None,
    holdouts: list[np.ndarray | None],
    keys: list[str],
    model: nn.Module | None = None,
    map_work: Map = map_in_process,
) -> list[PreparedBackbone]:
    """One network per ``keys[i]``, warmed up without the rows ``holdouts[i]`` (disjoint, or
    None), all warm-ups handed to ``map_work`` at once (``--crossfit backbone``'s folds train
    side by side on Beam's workers). Arguments as in :func:`prepare_backbone`."""
    check_params(params, num_classes)
    dev = resolve_device(device)
    ok = manifest_arrays(manifest, num_classes)[0]
    seed_everything(seed)
    backbone, epochs = build_backbone(manifest, params, ok, num_classes, dev, model)
    if params.crossfit == "backbone" and epochs == 0:
        raise ValueError(
            "option --crossfit backbone: the network is not trained here (--warmup 0, or --weights/--model-file "
            "without --warmup), so it saw no label of this set and --crossfit head is already out of sample; "
            "use --crossfit head, or give --warmup E"
        )
    if epochs == 0:
        return [PreparedBackbone(backbone, None, {"model": backbone.name}) for _ in keys]
    fold = np.full(manifest.num_rows, -1, np.int64)
    units: list[tuple[int | None, str]] = []
    for k, (rows, key) in enumerate(zip(holdouts, keys)):
        if rows is not None:
            fold[np.asarray(rows, np.int64)] = k
        units.append((None if rows is None else k, key))
    warm = functools.partial(warm_up_state, params=params, num_classes=num_classes, seed=seed, device=device,
                             checkpoints=checkpoints)
    out: list[PreparedBackbone] = []
    for state, metrics in map_work(warm, units, {"manifest": manifest, "fold": fold}):
        if out:  # a network of its own for each
            seed_everything(seed)
            backbone, _ = build_backbone(manifest, params, ok, num_classes, dev, model)
        backbone.net.load_state_dict(state)
        out.append(PreparedBackbone(backbone, state, {"model": backbone.name, **metrics}))
    return out


def warm_up_state(unit: tuple[int | None, str], *, manifest: pa.Table, fold: np.ndarray, params: EmbedParams,
                  num_classes: int, seed: int, device: str,
                  checkpoints: Checkpoints | None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The warm-up of one network (a unit of :func:`prepare_backbones`: (fold k, whose rows of
    ``fold`` it leaves out, or None; its checkpoint key)), in this process: its state (CPU
    tensors) and metrics. A top-level function of small arguments, so that a
    :data:`~winnow.stages.common.mapping.Map` can run it on another machine."""
    k, key = unit
    dev = resolve_device(device)
    ok, labels, labelled, _ = manifest_arrays(manifest, num_classes)
    if k is not None:
        labelled = labelled & (np.asarray(fold) != k)
    seed_everything(seed)
    backbone, epochs = build_backbone(manifest, params, ok, num_classes, dev, None)
    metrics: dict[str, Any] = {}
    state = _warmup(manifest, params, backbone, labels, labelled, epochs, seed, auto_workers(params.num_workers, dev),
                    dev.type == "cuda", checkpoints, metrics, key)
    return state, metrics


def batches(rows: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """``rows`` cut into consecutive batches of ``batch_size`` (the last may be smaller)."""
    return [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]


def _warmup(
    manifest: pa.Table, params: EmbedParams, backbone: Backbone, labels: np.ndarray, labelled: np.ndarray,
    epochs: int, seed: int, workers: int, pin: bool, checkpoints: Checkpoints | None, metrics: dict[str, Any],
    key: str,
) -> dict[str, torch.Tensor]:
    t0 = time.perf_counter()
    train_rows = np.flatnonzero(labelled)
    if len(train_rows) < 2:
        raise ValueError("option --warmup: needs at least 2 labelled train/trusted rows")
    bs = params.warmup_batch_size

    def batches_for_epoch(epoch: int) -> Any:
        order = np.random.default_rng([seed, epoch]).permutation(train_rows)
        dataset = BatchDecoder(manifest, batches(order, bs), backbone.transform)
        return make_loader(dataset, num_workers=workers, pin_memory=pin)

    augment = params.augment
    if augment == "auto":
        augment = "natural" if backbone.transform.channels == 3 else "digits"
    size = backbone.transform.size
    pad = {"natural": max(1, size // 8), "digits": max(1, size // 16), "none": 0}[augment]
    fingerprint = hashlib.sha256(
        repr((backbone.name, state_hash(backbone.net), train_rows.tobytes(), labels[train_rows].tobytes(), epochs,
              params.warmup_lr, bs, params.warmup_weight_decay, augment, seed)).encode()
    ).hexdigest()[:16]
    metrics.update(
        warmup_train(
            backbone.net, batches_for_epoch, labels, epochs=epochs, steps_per_epoch=-(-len(train_rows) // bs),
            lr=params.warmup_lr, weight_decay=params.warmup_weight_decay, pad=pad, flip=augment == "natural",
            prepare=backbone.prepare, seed=seed, device=backbone.device, amp=params.amp, checkpoints=checkpoints,
            fingerprint=fingerprint, key=key, label=key.replace("-", " "),
        )
    )
    metrics["warmup_seconds"] = time.perf_counter() - t0
    return {k: v.detach().cpu().clone() for k, v in backbone.net.state_dict().items()}
