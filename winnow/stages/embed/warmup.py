"""Warm-up training of a backbone that is not yet trained for the task (CRAIG, L2RW, MW-Net do this).

Plain SGD (momentum 0.9, weight decay, cosine learning rate) with the usual augmentations,
applied batched on the device: random crop after zero padding (+ horizontal flip for natural
images; small shifts only for digits). Each epoch is checkpointed, and every random choice
(order, crops, flips) is drawn from generators seeded by ``(seed, epoch)``, so a resumed
warm-up ends with exactly the weights of an uninterrupted one on CPU.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from winnow.stages.common.checkpoint import Checkpoints
from winnow.stages.common.progress import track


def augment_batch(x: torch.Tensor, *, pad: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random ``pad``-pixel shifts (zero padding + crop) and optional horizontal flips of a batch.

    ``x`` is (B, C, H, W) of any dtype (uint8 pixels in the stage); every random draw comes from ``generator`` (on CPU), so results are
    reproducible whatever the device.
    """
    b, _, h, w = x.shape
    if pad > 0:
        off = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator).to(x.device)
        xp = F.pad(x, (pad, pad, pad, pad))
        rows = (off[:, 0:1] + torch.arange(h, device=x.device))[:, :, None]  # (B, H, 1)
        cols = (off[:, 1:2] + torch.arange(w, device=x.device))[:, None, :]  # (B, 1, W)
        x = xp.permute(0, 2, 3, 1)[torch.arange(b, device=x.device)[:, None, None], rows, cols].permute(0, 3, 1, 2)
    if flip:
        mask = (torch.rand(b, generator=generator) < 0.5).to(x.device)
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x.contiguous()


def _clone_state(obj: Any) -> Any:
    """Detached CPU copies, so a stored checkpoint does not change as training goes on."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _clone_state(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clone_state(v) for v in obj]
    return copy.deepcopy(obj)


def warmup_train(
    net: nn.Module,
    batches_for_epoch: Callable[[int], Any],
    labels: np.ndarray,
    *,
    epochs: int,
    steps_per_epoch: int,
    lr: float,
    weight_decay: float,
    pad: int,
    flip: bool,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    seed: int,
    device: torch.device,
    amp: bool,
    checkpoints: Checkpoints | None = None,
    fingerprint: str = "",
    key: str = "warmup",
    label: str = "warmup",
) -> dict[str, Any]:
    """Train ``net`` in place for ``epochs`` epochs; return metrics (loss and accuracy per epoch).

    Parameters
    ----------
    net : a registry model (``forward(x) -> logits``), already on ``device``.
    batches_for_epoch : ``epoch -> iterable of (uint8 pixels (B, C, S, S), rows (B,), errors)``,
        the shuffled training batches of that epoch.
    labels : (n,) int64 labels indexed by manifest row.
    epochs, steps_per_epoch : schedule length (the cosine decay spans epochs * steps_per_epoch).
    lr, weight_decay : SGD options (momentum 0.9).
    pad, flip : augmentation (see :func:`augment_batch`).
    prepare : uint8 pixels on device -> normalised float inputs.
    seed : seeds the augmentation generators (the caller seeds the order).
    device, amp : where to train; bfloat16 autocast on CUDA when ``amp``.
    checkpoints : if given, ``key`` holds the state after the last finished epoch.
    fingerprint : identifies the inputs/options; a stored state with another one is ignored.
    key, label : checkpoint key and progress-bar label (one per network when several warm up).
    """
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    start, history = 0, {"loss": [], "accuracy": []}
    state = checkpoints.load(key) if checkpoints is not None else None
    if state is not None and state.get("fingerprint") == fingerprint:
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, history = int(state["epoch"]), state["history"]
    total = max(1, epochs * steps_per_epoch)
    labels_t = torch.as_tensor(labels, dtype=torch.int64)
    use_amp = amp and device.type == "cuda"
    for epoch in range(start, epochs):
        t0 = time.perf_counter()
        net.train()
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        loss_sum, correct, seen = 0.0, 0, 0
        for step, (pixels, rows, errors) in enumerate(
            track(batches_for_epoch(epoch), f"{label} epoch {epoch + 1}/{epochs}", total=steps_per_epoch)
        ):
            keep = torch.tensor([e is None for e in errors])
            if int(keep.sum()) < 2:  # BatchNorm needs two examples
                continue
            if not keep.all():  # (indexing would also drop the pinned-memory fast path)
                pixels, rows = pixels[keep], rows[keep]
            # Augment the raw pixels (zero padding = black, as torchvision's RandomCrop), then normalise.
            x = prepare(augment_batch(pixels.to(device, non_blocking=True), pad=pad, flip=flip, generator=gen))
            y = labels_t[rows].to(device, non_blocking=True)
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * (epoch * steps_per_epoch + step) / total))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = net(x)
            loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
        history["loss"].append(loss_sum / max(seen, 1))
        history["accuracy"].append(correct / max(seen, 1))
        if checkpoints is not None:
            checkpoints.save(
                key,
                {
                    "fingerprint": fingerprint,
                    "epoch": epoch + 1,
                    "model": _clone_state(net.state_dict()),
                    "optimizer": _clone_state(opt.state_dict()),
                    "history": copy.deepcopy(history),
                    "seconds": time.perf_counter() - t0,
                },
            )
    net.eval()
    return {"warmup_epochs": epochs, "warmup_loss": history["loss"], "warmup_train_accuracy": history["accuracy"]}
