"""Rounds of weighted training: the epoch loop, what is recorded per example, and resumable state.

Every time an example is in a batch its weight is recorded (L2RW and Meta-Weight-Net: the
per-batch normalised weight times the batch size, so an average example weighs 1; Deep Bilevel:
its mini-batch's omega times the number of mini-batches; SOSELETO: its alpha after the update;
none: 1). :class:`Recorder` keeps running sums, so memory is O(n * rounds) whatever the epochs.

The ``weight`` column is the mean of those per-step weights, except for L2RW. An L2RW step's
weight is max(d_i, 0) / sum_j max(d_j, 0): one look-ahead's verdict, clipped. Once the head fits,
the alignments d_i of clean rows are small and sometimes negative, so a clean row is clipped to 0
in some steps and a mislabelled one, rarely aligned, gets a full-size weight in others; the mean of
clipped steps mixes the two (AUROC 0.92 against the true flips on 100k synthetic rows). L2RW's
``weight`` is therefore the same rule with the clip applied once, to the mean over steps of the
unclipped weights d_i / sum_j max(d_j, 0) (AUROC 0.997 on the same steps): the weight that a
persistent per-example epsilon would get, as SOSELETO keeps its alphas. Evidence and the other
causes in docs/design-notes.md. The per-step weights stay in ``weight_last``, ``weight_std``,
``zero_fraction`` and the per-round columns.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from winnow.models.meta_weight_net import MetaWeightNet
from winnow.stages.common.batches import batch_bounds
from winnow.stages.common.checkpoint import Checkpoints
from winnow.stages.common.progress import track
from winnow.stages.weight.bilevel import bilevel_step, stratified_groups
from winnow.stages.weight.l2rw import l2rw_step
from winnow.stages.weight.mwn import mwn_step
from winnow.stages.weight.params import WeightParams
from winnow.stages.weight.soseleto import soseleto_step
from winnow.stages.weight.step_output import StepOutput

CHECKPOINT_KEY = "weight-epoch"


class Recorder:
    """Running per-example sums of recorded weights and losses, overall and per round."""

    def __init__(self, n: int, rounds: int) -> None:
        f64 = torch.float64
        self.sum_w = torch.zeros(n, dtype=f64)
        self.sum_w2 = torch.zeros(n, dtype=f64)
        self.count = torch.zeros(n, dtype=torch.int64)
        self.zeros = torch.zeros(n, dtype=torch.int64)
        self.last = torch.full((n,), float("nan"), dtype=f64)
        self.sum_loss = torch.zeros(n, dtype=f64)
        self.round_sum = torch.zeros(rounds, n, dtype=f64)
        self.round_count = torch.zeros(rounds, n, dtype=torch.int64)
        self.sum_unclipped = torch.zeros(n, dtype=f64)
        self.max_loss = 0.0

    def record(self, index: torch.Tensor, weights: torch.Tensor, losses: torch.Tensor, round_: int,
               unclipped: torch.Tensor | None = None) -> None:
        """Add one batch: ``index`` (n,) train rows; NaN weights (validation examples) are skipped.

        ``unclipped`` (n,): L2RW's weights before the clip at 0, summed per example.
        """
        w = weights.detach().to("cpu", torch.float64)
        loss = losses.detach().to("cpu", torch.float64)
        keep = ~torch.isnan(w)
        idx, w, loss = index.cpu()[keep], w[keep], loss[keep]
        if unclipped is not None:
            self.sum_unclipped.index_add_(0, idx, unclipped.detach().to("cpu", torch.float64)[keep])
        # index_add_ because an example can appear twice in a batch only through padding (never
        # here), but it keeps the sums right whatever the caller passes.
        self.sum_w.index_add_(0, idx, w)
        self.sum_w2.index_add_(0, idx, w * w)
        self.count.index_add_(0, idx, torch.ones_like(idx))
        self.zeros.index_add_(0, idx, (w <= 0).long())
        self.last[idx] = w
        self.sum_loss.index_add_(0, idx, loss)
        self.round_sum[round_].index_add_(0, idx, w)
        self.round_count[round_].index_add_(0, idx, torch.ones_like(idx))
        if loss.numel():
            self.max_loss = max(self.max_loss, float(loss.max()))

    def state(self) -> dict[str, Any]:
        """Checkpointable state (tensors and numbers only)."""
        names = ("sum_w", "sum_w2", "count", "zeros", "last", "sum_loss", "round_sum", "round_count",
                 "sum_unclipped")
        out: dict[str, Any] = {k: getattr(self, k).clone() for k in names}
        out["max_loss"] = self.max_loss
        return out

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`."""
        for k, v in state.items():
            setattr(self, k, v.clone() if isinstance(v, torch.Tensor) else v)

    def columns(self, *, clip_mean: bool = False) -> dict[str, np.ndarray]:
        """The weights.parquet columns: weight, weight_last, weight_std, times_seen, zero_fraction,
        loss_mean and round_0..round_{R-1} (NaN where an example was never seen).

        ``clip_mean`` (L2RW): ``weight`` is max(mean of the unclipped per-step weights, 0) rather
        than the mean of the per-step weights (see the module docstring).
        """
        c = self.count.to(torch.float64)
        seen = c > 0
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        mean = torch.where(seen, self.sum_w / c.clamp(min=1), nan)
        var = torch.where(seen, (self.sum_w2 / c.clamp(min=1) - mean.nan_to_num() ** 2).clamp(min=0), nan)
        weight = torch.where(seen, (self.sum_unclipped / c.clamp(min=1)).clamp(min=0), nan) if clip_mean else mean
        cols = {
            "weight": weight,
            "weight_last": self.last,
            "weight_std": var.sqrt(),
            "zero_fraction": torch.where(seen, self.zeros / c.clamp(min=1), nan),
            "loss_mean": torch.where(seen, self.sum_loss / c.clamp(min=1), nan),
        }
        for r in range(self.round_sum.shape[0]):
            rc = self.round_count[r].to(torch.float64)
            cols[f"round_{r}"] = torch.where(rc > 0, self.round_sum[r] / rc.clamp(min=1), nan)
        out = {k: v.numpy().astype(np.float32) for k, v in cols.items()}
        out["times_seen"] = self.count.numpy().astype(np.int32)
        return out


@dataclass
class Data:
    """Tensors on the training device; ``scale`` multiplies the loss of the active examples."""

    x: torch.Tensor
    y: torch.Tensor
    trusted_x: torch.Tensor
    trusted_y: torch.Tensor
    num_classes: int
    active: torch.Tensor  # (m,) long train rows trained on (all, or the coreset)
    scale: torch.Tensor | None  # (n,) per-row loss multipliers (CRAIG weights), None = 1
    trusted_by_class: tuple[torch.Tensor, torch.Tensor, torch.Tensor] = field(init=False)

    def __post_init__(self) -> None:
        order = torch.argsort(self.trusted_y.cpu(), stable=True)
        counts = torch.bincount(self.trusted_y.cpu(), minlength=self.num_classes)
        starts = torch.cumsum(counts, 0) - counts
        self.trusted_by_class = (order, counts, starts)


def _clone(obj: Any) -> Any:
    """Deep copy of nested dicts/lists of tensors, so a saved state never aliases live tensors."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone().cpu()
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_clone(v) for v in obj)
    return obj


def _lr_at(params: WeightParams, progress: float) -> float:
    """Learning rate at ``progress`` in [0, 1) through a round."""
    if params.lr_schedule == "constant":
        return params.resolved_lr()
    return params.resolved_lr() * 0.5 * (1.0 + math.cos(math.pi * progress))


def _trusted_batch(data: Data, size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` random trusted rows (x, y), or all of them as they are (no copy, nothing drawn) when
    there are no more."""
    n = data.trusted_y.shape[0]
    if size >= n:
        return data.trusted_x, data.trusted_y
    t = torch.randperm(n, generator=gen)[:size].to(data.trusted_x.device)
    return data.trusted_x[t], data.trusted_y[t]


def _matched_trusted(data: Data, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Trusted rows with the same labels as ``labels`` (a random one of each class; a random
    trusted row for a class without trusted examples)."""
    order, counts, starts = data.trusted_by_class
    labels = labels.cpu()
    u = torch.rand(labels.shape[0], generator=gen, dtype=torch.float64)
    c = counts[labels]
    pick = order[(starts[labels] + (u * c.clamp(min=1)).long()).clamp(max=order.numel() - 1)]
    fallback = torch.randint(0, data.trusted_y.shape[0], (labels.shape[0],), generator=gen)
    return torch.where(c > 0, pick, fallback)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, chunk: int = 2048) -> tuple[float, float]:
    """Mean cross-entropy and accuracy in eval mode (running BatchNorm statistics)."""
    if y.numel() == 0:
        return float("nan"), float("nan")
    was = model.training
    model.eval()
    loss, correct = 0.0, 0
    for s in range(0, y.shape[0], chunk):
        z = model(x[s: s + chunk])
        loss += float(F.cross_entropy(z, y[s: s + chunk], reduction="sum"))
        correct += int((z.argmax(1) == y[s: s + chunk]).sum())
    model.train(was)
    return loss / y.shape[0], correct / y.shape[0]


@torch.no_grad()
def gradient_embeddings(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, *,
                        chunk: int = 2048) -> np.ndarray:
    """Last-layer gradient embeddings softmax(z) - onehot(y), (n, num_classes) float32, eval mode."""
    was = model.training
    model.eval()
    out = []
    for s in range(0, y.shape[0], chunk):
        p = torch.softmax(model(x[s: s + chunk]), 1)
        out.append((p - F.one_hot(y[s: s + chunk], num_classes).to(p.dtype)).float().cpu())
    model.train(was)
    return torch.cat(out).numpy()


class Trainer:
    """Owns the model, optimisers and method state; runs epochs and (de)serialises itself."""

    def __init__(self, params: WeightParams, data: Data, model: nn.Module,
                 init_model: Callable[[int], dict[str, torch.Tensor]], *, seed: int) -> None:
        self.p, self.data, self.model, self.init_model, self.seed = params, data, model, init_model, seed
        self._signature = self._describe()  # before training moves the coreset
        self.optimizer = self._make_optimizer()
        self.gen = torch.Generator().manual_seed(seed)
        self.recorder = Recorder(data.x.shape[0], params.rounds)
        self.epoch = 0
        self.step_count = 0
        self.metrics: dict[str, list[float]] = {
            "train_loss": [], "trusted_loss": [], "trusted_accuracy": [], "epoch_seconds": [], "lr": []}
        self.vnet: nn.Module | None = None
        self.vnet_optimizer: torch.optim.Optimizer | None = None
        if params.method == "mwn":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + 7919)
                self.vnet = MetaWeightNet(params.mwn_hidden).to(data.x.device, data.x.dtype)
            # fused: one kernel instead of a Python loop over four tiny tensors (29 vs 104 us a step
            # on CPU), which on a head was a fifth of Meta-Weight-Net's step.
            self.vnet_optimizer = torch.optim.Adam(self.vnet.parameters(), lr=params.mwn_lr,
                                                   weight_decay=params.mwn_weight_decay,
                                                   fused=data.x.device.type in ("cpu", "cuda"))
        self.alpha = torch.full((data.x.shape[0],), params.alpha_init, dtype=torch.float64)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.model.parameters(), lr=self.p.resolved_lr(), momentum=self.p.momentum,
                               weight_decay=self.p.resolved_weight_decay())

    # -- state ------------------------------------------------------------------------------
    def signature(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed: every option, the seed, the data's shapes and
        labels, the starting coreset and the model's parameter shapes."""
        return self._signature

    def _describe(self) -> dict[str, Any]:
        d = self.data
        digest = hashlib.sha256()
        for t in (d.y, d.trusted_y, d.active, d.scale):
            if t is not None:
                digest.update(str(t.dtype).encode() + t.detach().cpu().contiguous().numpy().tobytes())
        return {"params": asdict(self.p), "seed": self.seed, "x": list(d.x.shape), "trusted_x": list(d.trusted_x.shape),
                "labels_and_coreset": digest.hexdigest(),
                "model": [[k, list(v.shape)] for k, v in self.model.state_dict().items()]}

    def state(self) -> dict[str, Any]:
        """Everything needed to resume bit-exactly (tensors, numbers, strings, lists, dicts)."""
        s: dict[str, Any] = {
            "signature": self.signature(), "epoch": self.epoch, "step_count": self.step_count,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "generator": self.gen.get_state(), "torch_rng": torch.get_rng_state(),
            "recorder": self.recorder.state(), "alpha": self.alpha, "metrics": self.metrics,
            "active": self.data.active, "scale": self.data.scale,
        }
        if self.vnet is not None:
            s["vnet"] = self.vnet.state_dict()
            s["vnet_optimizer"] = self.vnet_optimizer.state_dict()
        return _clone(s)

    def load(self, s: dict[str, Any]) -> bool:
        """Restore :meth:`state`; False (and nothing changed) if it belongs to another run."""
        if s.get("signature") != self.signature():
            return False
        dev = self.data.x.device
        self.epoch, self.step_count = int(s["epoch"]), int(s["step_count"])
        self.model.load_state_dict(s["model"])
        self.optimizer.load_state_dict(s["optimizer"])
        self.gen.set_state(s["generator"])
        torch.set_rng_state(s["torch_rng"])
        self.recorder.load(s["recorder"])
        self.alpha = s["alpha"].clone()
        self.metrics = {k: list(v) for k, v in s["metrics"].items()}
        self.data.active = s["active"].to(dev)
        self.data.scale = None if s["scale"] is None else s["scale"].to(dev)
        if self.vnet is not None:
            self.vnet.load_state_dict(s["vnet"])
            self.vnet_optimizer.load_state_dict(s["vnet_optimizer"])
        return True

    # -- training ---------------------------------------------------------------------------
    def run(self, *, checkpoints: Checkpoints | None = None,
            reselect: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
            on_epoch_end: Callable[[int, nn.Module], None] | None = None) -> None:
        """Train until rounds * epochs epochs are done, resuming from ``checkpoints`` if it has state."""
        p = self.p
        if checkpoints is not None:
            saved = checkpoints.load(CHECKPOINT_KEY)
            if saved is not None:
                self.load(saved)
        self.resumed_from_epoch = self.epoch  # 0 for a fresh run
        total = p.rounds * p.epochs
        for epoch in track(range(self.epoch, total), f"weight ({p.method})", total=total - self.epoch):
            round_, e = divmod(epoch, p.epochs)
            if e == 0 and round_ > 0 and p.round_init == "restart":
                self.model.load_state_dict(self.init_model(round_))
                self.optimizer = self._make_optimizer()
            if reselect is not None and p.reselect_every > 0 and epoch > 0 and epoch % p.reselect_every == 0:
                self._reselect(reselect)
            self._epoch(round_, e)
            self.epoch = epoch + 1
            if checkpoints is not None:
                checkpoints.save(CHECKPOINT_KEY, self.state())
            if on_epoch_end is not None:
                on_epoch_end(epoch, self.model)

    def _reselect(self, reselect: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]) -> None:
        d = self.data
        emb = gradient_embeddings(self.model, d.x, d.y, d.num_classes)
        idx, w = reselect(emb, d.y.cpu().numpy())
        set_coreset(d, np.asarray(idx), np.asarray(w))

    def _epoch(self, round_: int, e: int) -> None:
        p, d, model = self.p, self.data, self.model
        t0 = time.perf_counter()
        model.train()
        order = d.active[torch.randperm(d.active.numel(), generator=self.gen).to(d.active.device)]
        bounds = batch_bounds(order.numel(), p.batch_size)
        nb = len(bounds)
        loss_sum, loss_n, lr = 0.0, 0, p.resolved_lr()
        for b, (start, end) in enumerate(bounds):
            idx = order[start:end]
            lr = _lr_at(p, (e + b / nb) / p.epochs)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            weights, losses, unclipped = self._step(idx, lr)
            self.recorder.record(idx, weights, losses, round_, unclipped)
            self.step_count += 1
            ok = ~torch.isnan(losses)
            loss_sum += float(losses[ok].sum())
            loss_n += int(ok.sum())
        t_loss, t_acc = evaluate(model, d.trusted_x, d.trusted_y)
        self.metrics["train_loss"].append(loss_sum / max(loss_n, 1))
        self.metrics["trusted_loss"].append(t_loss)
        self.metrics["trusted_accuracy"].append(t_acc)
        self.metrics["epoch_seconds"].append(time.perf_counter() - t0)
        self.metrics["lr"].append(lr)

    def _step(self, idx: torch.Tensor, lr: float) -> StepOutput:
        """One step of the chosen method: recorded weights (n,; an average example weighs 1), losses."""
        p, d, model = self.p, self.data, self.model
        x, y = d.x[idx], d.y[idx]
        scale = None if d.scale is None else d.scale[idx]
        n = idx.numel()
        if p.method in ("l2rw", "mwn", "soseleto"):
            tx, ty = _trusted_batch(d, p.resolved_trusted_batch_size(d.trusted_y.shape[0]), self.gen)
        if p.method == "l2rw":
            out = l2rw_step(model, self.optimizer, x, y, tx, ty, lr=lr, loss_scale=scale)
            return out._replace(weights=out.weights * n, unclipped=out.unclipped * n)
        if p.method == "mwn":
            meta = self.step_count % p.meta_interval == 0
            out = mwn_step(model, self.optimizer, self.vnet, self.vnet_optimizer, x, y, tx, ty,
                           lr=lr, meta=meta, loss_scale=scale)
            return out._replace(weights=out.weights * n)
        if p.method == "soseleto":
            cpu_idx = idx.cpu()
            alpha = self.alpha[cpu_idx].to(d.x.device, d.x.dtype)
            out = soseleto_step(model, self.optimizer, x, y, tx, ty, alpha, lr=lr, lr_alpha=p.lr_alpha,
                                loss_scale=scale)
            self.alpha[cpu_idx] = out.weights.detach().cpu().to(torch.float64)
            return out
        if p.method == "bilevel":
            k = p.resolved_bilevel_batches(n)
            if p.bilevel_validation == "trusted":
                # The validation mini-batch shares the label distribution of a training mini-batch;
                # with mini-batches of one example it is the trusted batch of the other methods.
                if k >= n:
                    vx, vy = _trusted_batch(d, p.resolved_trusted_batch_size(d.trusted_y.shape[0]), self.gen)
                else:
                    index, mask = stratified_groups(y, k)
                    t = _matched_trusted(d, y[index[0][mask[0]]], self.gen).to(d.x.device)
                    vx, vy = d.trusted_x[t], d.trusted_y[t]
            else:
                vx = vy = None
            return bilevel_step(model, self.optimizer, x, y, vx, vy, k=k, mu=p.bilevel_mu, loss_scale=scale)
        # none: plain training with the same schedule.
        losses = F.cross_entropy(model(x), y, reduction="none")
        if scale is not None:
            losses = losses * scale
        self.optimizer.zero_grad(set_to_none=True)
        losses.mean().backward()
        self.optimizer.step()
        return StepOutput(torch.ones_like(losses.detach()), losses.detach())


def set_coreset(data: Data, indices: np.ndarray, weights: np.ndarray) -> None:
    """Train on ``indices`` only, with loss multipliers = CRAIG weights normalised to mean 1."""
    n = data.x.shape[0]
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    if indices.shape != weights.shape:
        raise ValueError(f"coreset: {indices.size} indices but {weights.size} weights; give one weight per index")
    if indices.size == 0:
        raise ValueError("coreset is empty: run select with a larger --budget or use --subset all")
    if indices.min() < 0 or indices.max() >= n:
        raise ValueError(f"coreset index out of range [0, {n}): check that it refers to train rows")
    if np.unique(indices).size != indices.size:
        raise ValueError("coreset has repeated indices")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError("coreset weights must be finite, >= 0 and not all 0")
    dev = data.x.device
    scale = torch.zeros(n, dtype=data.x.dtype)
    scale[torch.from_numpy(indices)] = torch.from_numpy(weights / weights.mean()).to(data.x.dtype)
    data.active = torch.from_numpy(np.sort(indices)).to(dev)
    data.scale = scale.to(dev)
