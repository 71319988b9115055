"""The reference trainer: fit a classifier on a curated manifest and evaluate it on a test table.

Pure core of ``winnow train``: tables in, a ``state_dict`` and metrics out, no paths. The manifest's
``weight`` is used by a weighted sampler (rows drawn in proportion to weight), by a weighted loss,
or not at all (``TrainParams.weighting``), so ``winnow evaluate`` can compare curated training
against plain training with the same model and schedule. All inputs are decoded once into one
tensor (images as uint8) and batches are sliced from it: no per-example Python work per step.
Same tables, parameters and seed on CPU give identical weights and metrics.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn

from winnow.models.small import StandardizedCNN, StandardizedMLP
from winnow.stages.common.arrow import class_names as table_class_names
from winnow.stages.common.batches import batch_bounds
from winnow.stages.common.progress import track
from winnow.stages.common.reprs import short_repr
from winnow.stages.common.torch_utils import resolve_device, seed_everything
from winnow.stages.train.dataset import ManifestDataset, weighted_loss, weighted_sampler
from winnow.stages.train.params import TrainParams

# Largest side --model auto trains the built-in CNN on: it works at any size (adaptive pooling), but
# its cost grows with the pixel count, so larger images are a choice the user makes (--model cnn).
MAX_CNN_SIDE = 32
LEFT_OUT_SHOWN = 20  # rows left out that metrics.json names (all are counted)

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """A trained model's weights (CPU tensors) and its metrics (JSON-able)."""

    model_state: dict[str, torch.Tensor]
    metrics: dict[str, Any] = field(default_factory=dict)

    __repr__ = short_repr


def _inputs(
    table: pa.Table, params: TrainParams
) -> tuple[ManifestDataset | pa.Table, torch.Tensor, torch.Tensor, torch.Tensor, list[dict[str, Any]]]:
    """``(rows, x, labels, weights, left_out)``; x is ``(n, d)`` float32 features or ``(n, C, H, W)``
    uint8 images. A row whose image cannot be read or has another size than the rest is left out
    (``left_out``: its id and why) rather than failing the stage: one odd row costs that row.
    ``rows`` is what the weighted sampler draws from: the dataset, or its usable rows."""
    ds = ManifestDataset(table, features=params.features)
    if len(ds) == 0:
        raise ValueError("the manifest has no usable rows (all have an error, or it is empty)")
    arrays, errors = ds.usable_arrays()
    keep = np.array([e is None for e in errors], dtype=bool)
    ids = ds.table.column("id").to_pylist() if "id" in ds.table.column_names else list(range(len(ds)))
    left_out = [{"id": ids[i], "error": e} for i, e in enumerate(errors) if e is not None]
    x = torch.from_numpy(arrays if arrays.flags.writeable else arrays.copy())
    if not params.features:
        x = x.permute(0, 3, 1, 2).contiguous()
    rows: ManifestDataset | pa.Table = ds if keep.all() else ds.table.filter(pa.array(keep))
    return rows, x, torch.from_numpy(ds.labels[keep]), torch.from_numpy(ds.weights[keep]), left_out


def _note_left_out(left_out: list[dict[str, Any]], what: str) -> None:
    if left_out:
        log.warning("train: %d %s row(s) left out, e.g. id %r: %s", len(left_out), what, left_out[0]["id"],
                    left_out[0]["error"])


def _as_float(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Batched random crop from a 4-px zero padding, then a horizontal flip with probability 1/2."""
    n, c, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4))
    dy = torch.randint(0, 9, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 9, (n,), generator=generator).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    out = padded[torch.arange(n, device=x.device)[:, None, None, None], chan, rows, cols]
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], out.flip(3), out)


@dataclass(frozen=True)
class Weighting:
    """A ``--weighting``: how the manifest's weight enters an epoch. ``sampled``: the epoch's rows
    are drawn in proportion to weight (else a seeded permutation of all rows); ``in_loss``: the
    cross-entropy is weighted per example. Adding one is an entry in :data:`WEIGHTINGS`."""

    sampled: bool
    in_loss: bool

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The step's loss on a batch (``weights``: the batch's manifest weights)."""
        return weighted_loss(logits, labels, weights) if self.in_loss else F.cross_entropy(logits, labels)


WEIGHTINGS: dict[str, Weighting] = {
    "sampler": Weighting(sampled=True, in_loss=False),
    "loss": Weighting(sampled=False, in_loss=True),
    "none": Weighting(sampled=False, in_loss=False),
}


def build_model(params: TrainParams, x: torch.Tensor, num_classes: int) -> tuple[nn.Module, str]:
    """The built-in model for these inputs, its input statistics set from ``x``; and its name."""
    kind = params.model
    if kind == "auto":
        if params.features:
            kind = "mlp"
        elif max(x.shape[2:]) <= MAX_CNN_SIDE:
            kind = "cnn"
        else:
            h, w = x.shape[2:]
            raise ValueError(
                f"images of {h}x{w} px are larger than the {MAX_CNN_SIDE} px up to which --model auto picks the "
                f"built-in CNN; choose one: --model cnn (it pools adaptively, so it trains at any size, at a cost "
                f"that grows with the pixel count), --features embedding (train on the embed stage's vectors), "
                f"or re-run `winnow ingest --image-size {MAX_CNN_SIDE}x{MAX_CNN_SIDE}` to shrink every image"
            )
    if kind == "mlp":
        if x.ndim != 2:
            x = x.flatten(1)
        xf = x.float() / (255.0 if x.dtype == torch.uint8 else 1.0)
        return StandardizedMLP(xf.shape[1], num_classes, hidden=params.hidden, mean=xf.mean(0), std=xf.std(0)), kind
    if x.ndim != 4:
        raise ValueError("--model cnn needs image inputs; use --model mlp (or auto) with --features")
    # Channel statistics from a strided subset: exact enough, and cheap on 50k images.
    sub = x[:: max(1, len(x) // 4096)].float() / 255.0
    mean, std = sub.mean(dim=(0, 2, 3)), sub.std(dim=(0, 2, 3))
    return StandardizedCNN(x.shape[1], num_classes, width=params.width, mean=mean, std=std), kind


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int, device: torch.device,
            flatten: bool = False) -> np.ndarray:
    """Argmax predictions ``(n,)`` of ``model`` in eval mode over inputs ``x`` (uint8 images or features)."""
    model.eval()
    out = []
    for start in range(0, len(x), batch_size):
        xb = _as_float(x[start : start + batch_size], device)
        out.append(model(xb.flatten(1) if flatten else xb).argmax(1).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.int64)


def _lr_factor(params: TrainParams, total_steps: int) -> Callable[[int], float]:
    if params.schedule == "constant":
        return lambda step: 1.0
    return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))


def train_model(
    train: pa.Table,
    test: pa.Table | None,
    params: TrainParams,
    *,
    num_classes: int,
    seed: int = 0,
    device: str = "cpu",
    model_factory: Callable[[], nn.Module] | None = None,
) -> TrainResult:
    """Train a classifier on a manifest and evaluate it on a test table.

    Parameters
    ----------
    train : pa.Table
        Training manifest (e.g. export's ``train.parquet``): ``label`` int32 in ``[0, num_classes)``,
        ``image``/``uri`` or the ``params.features`` column, optional ``weight`` (>= 0). Rows with an
        ``error`` are left out.
    test : pa.Table, optional
        Evaluation rows with clean labels (the manifest's test split); None skips evaluation.
    params : TrainParams
        Model, schedule and how the weights are used.
    num_classes : int
        Number of classes (output width).
    seed : int
        Seeds model initialisation, sampling and augmentation.
    device : str
        ``auto``, ``cpu`` or ``cuda``.
    model_factory : callable, optional
        Builds the model instead of the built-in ones; it receives float inputs in [0, 1]
        ``(n, C, H, W)`` (images) or ``(n, d)`` (features) and must return ``(n, num_classes)`` logits.

    Returns
    -------
    TrainResult
        ``model_state`` (CPU tensors) and ``metrics``: ``epochs`` (per epoch: ``train_loss``,
        ``test_accuracy``, ``lr``), ``test_accuracy`` (final), ``best_test_accuracy``, ``best_epoch``,
        ``per_class_accuracy`` (class name -> accuracy of the final model), counts and timings.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    return _train(train, test, params, num_classes=num_classes, seed=seed, device=device,
                  model_factory=model_factory)


def _train(train: pa.Table, test: pa.Table | None, params: TrainParams, *, num_classes: int, seed: int,
           device: str, model_factory: Callable[[], nn.Module] | None) -> TrainResult:
    start_time = time.perf_counter()
    dev = resolve_device(device)
    generator = seed_everything(seed)
    rows, x, y, w, left_out = _inputs(train, params)
    _note_left_out(left_out, "training")
    if len(y) < 2:
        why = f" ({len(left_out)} left out, e.g. id {left_out[0]['id']!r}: {left_out[0]['error']})" if left_out else ""
        raise ValueError(f"the manifest has {len(y)} usable row(s){why}; training needs at least 2")
    weighting = WEIGHTINGS[params.weighting]
    if weighting.in_loss and not bool((w > 0).any()):
        raise ValueError("every manifest weight is zero; nothing to train on (export with another --policy)")
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ValueError(f"train labels span [{int(y.min())}, {int(y.max())}] but num_classes is {num_classes}")
    if model_factory is not None:
        model, kind = model_factory(), "custom"
    else:
        model, kind = build_model(params, x, num_classes)
    flatten = kind == "mlp" and x.ndim == 4  # an MLP on raw pixels
    model = model.to(dev)

    n = len(y)
    sampler = weighted_sampler(rows, seed=seed) if weighting.sampled else None
    steps_per_epoch = max(1, math.ceil(n / params.batch_size))
    total_steps = params.epochs * steps_per_epoch
    optimizer = torch.optim.SGD(
        model.parameters(), lr=params.lr, momentum=params.momentum,
        weight_decay=params.weight_decay, nesterov=params.momentum > 0,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(params, total_steps))

    x_test = y_test = None
    test_left_out: list[dict[str, Any]] = []
    if test is not None:
        _, xt, yt, _, test_left_out = _inputs(test, params)
        _note_left_out(test_left_out, "test")
        if len(yt):
            x_test, y_test = xt, yt

    history: list[dict[str, Any]] = []
    best_acc, best_epoch = -1.0, -1
    for epoch in track(range(params.epochs), "train", total=params.epochs):
        model.train()
        order = torch.tensor(list(sampler)) if sampler is not None else torch.randperm(n, generator=generator)
        total_loss, seen = 0.0, 0
        for start, end in batch_bounds(len(order), params.batch_size):
            idx = order[start:end]
            xb, yb = _as_float(x[idx], dev), y[idx].to(dev)
            if params.augment and xb.ndim == 4:
                xb = _augment(xb, generator)
            loss = weighting.loss(model(xb.flatten(1) if flatten else xb), yb, w[idx].to(dev))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += float(loss.detach()) * len(idx)
            seen += len(idx)
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": total_loss / max(seen, 1),
            "lr": optimizer.param_groups[0]["lr"],
        }
        if x_test is not None:
            pred = predict(model, x_test, batch_size=params.eval_batch_size, device=dev, flatten=flatten)
            acc = float((pred == y_test.numpy()).mean())
            record["test_accuracy"] = acc
            if acc > best_acc:
                best_acc, best_epoch = acc, epoch + 1
        history.append(record)

    metrics: dict[str, Any] = {
        "model": kind,
        "weighting": params.weighting,
        "num_train": n,
        "num_classes": num_classes,
        "input_shape": list(x.shape[1:]),
        "seed": seed,
        "device": str(dev),
        "epochs": history,
        "train_loss": history[-1]["train_loss"] if history else None,
        "left_out": len(left_out) + len(test_left_out),
        "left_out_rows": (left_out + test_left_out)[:LEFT_OUT_SHOWN],
    }
    if x_test is not None:
        pred = predict(model, x_test, batch_size=params.eval_batch_size, device=dev, flatten=flatten)
        truth = y_test.numpy()
        names = _class_names(train, num_classes)
        metrics.update(
            num_test=len(truth),
            test_accuracy=float((pred == truth).mean()),
            best_test_accuracy=best_acc,
            best_epoch=best_epoch,
            per_class_accuracy={
                names[c]: float((pred[truth == c] == c).mean()) for c in range(num_classes) if (truth == c).any()
            },
        )
    metrics["seconds"] = time.perf_counter() - start_time
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return TrainResult(model_state=state, metrics=metrics)


def _class_names(table: pa.Table, num_classes: int) -> list[str]:
    try:
        names = table_class_names(table)
    except KeyError:
        names = []
    return names if len(names) >= num_classes else [str(c) for c in range(num_classes)]
