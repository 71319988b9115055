"""Pure core of the weight stage: tensors in, per-example weight columns and a model out.

``run_weight`` trains a head on frozen embeddings (``trainable="head"``) or a full network on
images (``trainable="full"``, the model coming from ``model_factory``) for ``rounds * epochs``
epochs with one of L2RW, Meta-Weight-Net, Deep Bilevel, SOSELETO or plain training, records every
example's weight each time it is in a batch, and checkpoints every epoch through ``checkpoints``
so that a killed run resumes to the same result.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from winnow.models.heads import LinearHead, MLPHead
from winnow.stages.common.checkpoint import Checkpoints
from winnow.stages.common.reprs import short_repr
from winnow.stages.common.torch_utils import resolve_device
from winnow.stages.weight.mwn import mwn_curve
from winnow.stages.weight.params import WeightParams
from winnow.stages.weight.rounds import Data, Trainer, set_coreset


@dataclass
class WeightResult:
    """What the weight stage produces.

    columns:
        Per train example given (length n_train): weight, weight_last, weight_std (float32),
        times_seen (int32), zero_fraction (weight <= 0), loss_mean and round_0..round_{R-1}
        (mean weight in that round, NaN if unseen).
    curve:
        Meta-Weight-Net's loss -> weight curve ``{"loss": (101,), "weight": (101,)}``, else None.
    model_state:
        Final model state_dict (CPU tensors).
    metrics:
        Per-epoch lists train_loss, trusted_loss, trusted_accuracy, epoch_seconds, lr; and
        seconds, steps, method.
    """

    columns: dict[str, np.ndarray]
    curve: dict[str, np.ndarray] | None
    model_state: dict[str, torch.Tensor]
    metrics: dict[str, Any]

    __repr__ = short_repr


def _check_inputs(train_x: torch.Tensor, train_y: torch.Tensor, trusted_x: torch.Tensor,
                  trusted_y: torch.Tensor, params: WeightParams, num_classes: int) -> None:
    if train_x.shape[0] != train_y.shape[0]:
        raise ValueError(f"train_x has {train_x.shape[0]} rows but train_y {train_y.shape[0]}")
    if trusted_x.shape[0] != trusted_y.shape[0]:
        raise ValueError(f"trusted_x has {trusted_x.shape[0]} rows but trusted_y {trusted_y.shape[0]}")
    if train_x.shape[0] == 0:
        raise ValueError("no training examples: the manifest has no usable split=train rows")
    if trusted_x.shape[1:] != train_x.shape[1:]:
        raise ValueError(f"trusted_x rows have shape {tuple(trusted_x.shape[1:])}, train_x rows "
                         f"{tuple(train_x.shape[1:])}: both must come from the same embedding/images")
    needs_trusted = params.method in ("l2rw", "mwn", "soseleto") or (
        params.method == "bilevel" and params.bilevel_validation == "trusted")
    if needs_trusted and trusted_x.shape[0] == 0:
        raise ValueError(f"--method {params.method} needs trusted examples (split=trusted rows); "
                         "add some, or use --method none (or bilevel with --bilevel-validation train)")
    if params.trainable == "head" and train_x.dim() != 2:
        raise ValueError(f"--trainable head expects embeddings of shape (n, d), got {tuple(train_x.shape)}")
    if not torch.is_floating_point(train_x):
        raise ValueError("train_x must be a floating-point tensor (embeddings or images scaled to floats)")
    for name, y in (("train_y", train_y), ("trusted_y", trusted_y)):
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise ValueError(f"{name} has labels outside [0, {num_classes}); check num_classes")
    if not torch.isfinite(train_x).all() or not torch.isfinite(trusted_x).all():
        raise ValueError("inputs contain NaN or inf: exclude those rows (set their error) before weighting")


def condition_head_inputs(train_x: torch.Tensor, trusted_x: torch.Tensor, *,
                          chunk: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardise the head's inputs, then scale them so that the largest eigenvalue of the second
    moment of [x, 1] is 1.

    Why: the loss of a linear head is (1/2) * lambda_max-smooth in its parameters, with lambda_max
    that eigenvalue, so this fixes the curvature whatever the embedding's scale and correlation:
    ``--lr`` means the same on any embedding and 0.1 with momentum 0.9 is stable (raw features
    made the default diverge: loss 22.8 at epoch 1 on synthetic features). Centring also matters
    for the weights themselves: the alignments <g_i, g_t> contain the inputs' inner products, and
    on uncentred ReLU embeddings a common offset (digits: norm of the mean 4.6 against a mean
    norm 5.5) swamps the class structure. Statistics come from train and trusted rows together,
    in float64, two passes of ``chunk`` rows (no n x d float64 copy); a constant feature is only
    centred.
    """
    d = train_x.shape[1]
    parts = (train_x, trusted_x)
    total = sum(t.shape[0] for t in parts)
    mean = torch.zeros(d, dtype=torch.float64)
    for t in parts:
        for s in range(0, t.shape[0], chunk):
            mean += t[s:s + chunk].to("cpu", torch.float64).sum(0)
    mean /= total
    cov = torch.zeros(d, d, dtype=torch.float64)
    for t in parts:
        for s in range(0, t.shape[0], chunk):
            c = t[s:s + chunk].to("cpu", torch.float64) - mean
            cov += c.T @ c
    cov /= max(total - 1, 1)
    std = cov.diagonal().sqrt()
    std[~(std > 0)] = 1.0
    corr = cov / std[:, None] / std[None, :]
    # [z, 1] has second moment [[corr, 0], [0, 1]] (z is centred): its top eigenvalue.
    lam = max(float(torch.linalg.eigvalsh(corr)[-1]), 1.0)
    shift = mean.to(train_x.dtype)
    scale = (std * lam ** 0.5).to(train_x.dtype)

    def apply(t: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(t)  # filled chunk by chunk: no full-size temporary
        sh, sc = shift.to(t.device), scale.to(t.device)
        for s in range(0, t.shape[0], chunk):
            torch.sub(t[s:s + chunk], sh, out=out[s:s + chunk]).div_(sc)
        return out

    return apply(train_x), apply(trusted_x)


def run_weight(train_x: torch.Tensor, train_y: torch.Tensor, trusted_x: torch.Tensor,
               trusted_y: torch.Tensor, params: WeightParams, *, num_classes: int, seed: int = 0,
               device: str = "cpu", checkpoints: Checkpoints | None = None,
               model_factory: Callable[[], nn.Module] | None = None,
               coreset: tuple[np.ndarray, np.ndarray] | None = None,
               reselect: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
               on_epoch_end: Callable[[int, nn.Module], None] | None = None,
               ) -> WeightResult:
    """Weight every training example by training with the chosen method.

    Parameters
    ----------
    train_x, train_y:
        ``trainable="head"``: frozen embeddings (n, d) float, of any scale (the head sees them
        through :func:`condition_head_inputs`); ``"full"``: images (n, C, H, W) float.
        Labels (n,) integer in [0, num_classes).
    trusted_x, trusted_y:
        The trusted (clean) set, same layout (m may be 0 for ``none`` and paper-mode bilevel).
    params:
        :class:`~winnow.stages.weight.params.WeightParams`.
    num_classes:
        Number of classes C.
    seed:
        Seeds initialisation, shuffling and trusted sampling; same inputs + seed on CPU give
        identical outputs.
    device:
        ``auto``, ``cpu`` or ``cuda``.
    checkpoints:
        Store for the per-epoch checkpoint (key ``weight-epoch``); a run finding a checkpoint of
        the same configuration resumes from it.
    model_factory:
        Builds the backbone+head for ``trainable="full"`` (ignored for ``head``).
    coreset:
        (indices into train rows, CRAIG weights) for ``subset="coreset"``.
    reselect:
        ``reselect(grad_embedding (n, C) float32, labels (n,)) -> (indices, weights)``, called every
        ``reselect_every`` epochs with the current model's last-layer gradient embeddings.
    on_epoch_end:
        Called as on_epoch_end(epoch, model) after each epoch (0-based over all rounds) and its
        checkpoint; e.g. to evaluate on a test set. The model must not be modified.

    Returns
    -------
    :class:`WeightResult`.
    """
    params.validate()
    _check_inputs(train_x, train_y, trusted_x, trusted_y, params, num_classes)
    dev = resolve_device(device)
    dtype = train_x.dtype
    if params.trainable == "head":
        train_x, trusted_x = condition_head_inputs(train_x, trusted_x)
    if params.subset == "coreset" and coreset is None:
        raise ValueError("--subset coreset needs the select stage's coreset (run winnow select first)")
    if params.trainable == "full" and model_factory is None:
        raise ValueError("--trainable full needs a model_factory (the pipeline builds one from --model)")

    def build() -> nn.Module:
        if params.trainable == "full":
            return model_factory()
        d = train_x.shape[1]
        if params.head == "linear":
            return LinearHead(d, num_classes)
        return MLPHead(d, num_classes, hidden=params.head_hidden)

    def init_state(round_: int) -> dict[str, torch.Tensor]:
        # Seeded independently of the training RNG, so a restart round is the same after a resume.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 1_000_003 + round_)
            return build().to(dev, dtype).state_dict()

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 1_000_003)
        model = build().to(dev, dtype)
    model.train()

    n = train_x.shape[0]
    data = Data(train_x.to(dev), train_y.to(dev, torch.long), trusted_x.to(dev, dtype),
                trusted_y.to(dev, torch.long), num_classes, torch.arange(n, device=dev), None)
    if params.subset == "coreset":
        set_coreset(data, *coreset)

    trainer = Trainer(params, data, model, init_state, seed=seed)
    t0 = time.perf_counter()
    trainer.run(checkpoints=checkpoints, reselect=reselect if params.subset == "coreset" else None,
                on_epoch_end=on_epoch_end)
    curve = None
    if trainer.vnet is not None:
        max_loss = max(trainer.recorder.max_loss, float(np.log(num_classes)) * 2)
        curve = {k: v.float().cpu().numpy() for k, v in mwn_curve(trainer.vnet, max_loss=max_loss).items()}
    metrics: dict[str, Any] = dict(trainer.metrics)
    metrics.update(seconds=time.perf_counter() - t0, steps=trainer.step_count, method=params.method,
                   resumed_from_epoch=trainer.resumed_from_epoch)
    return WeightResult(
        columns=trainer.recorder.columns(clip_mean=params.method == "l2rw"),
        curve=curve,
        model_state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        metrics=metrics,
    )
