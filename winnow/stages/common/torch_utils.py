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
    """Within the block, torch and FAISS use ``threads`` CPU threads (0: torch's default count,
    one per core, for both); yields that count, which the cache key of a thread-dependent stage holds.

    Why: on a shared or small machine, OpenMP threads spin-wait against other processes; one
    thread can be many times faster than two there. FAISS follows torch's count even by default
    (its own default counts hyperthreads), so that one number says what a CPU result depends on.
    Restores the previous counts on exit.
    """
    if threads < 0:
        raise ValueError(f"option --threads must be >= 0, got {threads}")
    import faiss  # (importing FAISS costs ~0.2 s)

    count = threads or torch.get_num_threads()
    torch_before, faiss_before = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(count)
    faiss.omp_set_num_threads(count)
    try:
        yield count
    finally:
        torch.set_num_threads(torch_before)
        faiss.omp_set_num_threads(faiss_before)
