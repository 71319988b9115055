"""Device choice and seeding, shared by every stage that runs torch (CPU threads: :mod:`.threads`)."""

from __future__ import annotations

import random

import numpy as np
import torch


def resolve_device(device: str = "auto") -> torch.device:
    """Map ``auto|cpu|cuda`` (or ``cuda:N``) to a torch device, with a clear error if CUDA is absent."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA device is available; use --device cpu or auto")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, got {device!r}")
    return torch.device(device)


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch Generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
