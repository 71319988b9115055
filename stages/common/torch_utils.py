"""Device choice, CPU threads and seeding, shared by every stage that runs torch."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

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


@contextmanager
def cpu_threads(threads: int) -> Iterator[int]:
    """Within the block, torch and FAISS use ``threads`` CPU threads (0: leave their defaults);
    yields the count torch uses (what a run records).

    Why: on a shared or small machine, OpenMP threads spin-wait against other processes; one
    thread can be many times faster than two there. Restores the previous counts on exit.
    """
    if threads < 0:
        raise ValueError(f"option --threads must be >= 0, got {threads}")
    if threads == 0:
        yield torch.get_num_threads()
        return
    import faiss  # only when asked: importing FAISS costs ~0.2 s

    torch_before, faiss_before = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(torch_before)
        faiss.omp_set_num_threads(faiss_before)
