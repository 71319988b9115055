"""CPU thread counts for torch and FAISS around a stage, without loading torch where a stage runs none.

Importing torch's CUDA build costs about 0.65 GB of resident memory (its shared libraries), a
fifth of the 3 GB a stage may use at 1M rows (issue 17); ingest, select, export and report
never run torch, so they set FAISS's count alone, to the number torch would have used.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def physical_cores() -> int:
    """Physical cores, as torch counts them for its default (cpuinfo: cores, not hyperthreads),
    from /proc/cpuinfo's (physical id, core id) pairs; ``os.cpu_count()`` where that is missing."""
    pairs: set[tuple[str | None, str]] = set()
    try:
        with open("/proc/cpuinfo") as f:
            phys: str | None = None
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    phys = value.strip()
                elif key == "core id":
                    pairs.add((phys, value.strip()))
                elif not key:
                    phys = None
    except OSError:
        pass
    return len(pairs) or os.cpu_count() or 1


def default_threads() -> int:
    """torch's default intra-op thread count (``torch.get_num_threads()`` in a fresh process),
    computed without importing torch: OMP_NUM_THREADS, else MKL_NUM_THREADS, else the physical
    cores. When torch is loaded already, its own count."""
    if "torch" in sys.modules:
        return int(sys.modules["torch"].get_num_threads())
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return physical_cores()


@contextmanager
def cpu_threads(threads: int, *, uses_torch: bool = True) -> Iterator[int]:
    """Within the block, torch and FAISS use ``threads`` CPU threads (0: torch's default count,
    one per physical core, for both); yields that count, which the cache key of a
    thread-dependent stage holds.

    Why: on a shared or small machine, OpenMP threads spin-wait against other processes; one
    thread can be many times faster than two there. FAISS follows torch's count even by default
    (its own default counts hyperthreads), so that one number says what a CPU result depends on.
    ``uses_torch=False`` (a stage that runs no torch) leaves torch unloaded if it is. Restores
    the previous counts on exit.
    """
    if threads < 0:
        raise ValueError(f"option --threads must be >= 0, got {threads}")
    import faiss  # (importing FAISS costs ~0.2 s)

    torch: Any = None
    if uses_torch or "torch" in sys.modules:
        import torch as torch_module

        torch = torch_module
    count = threads or (torch.get_num_threads() if torch is not None else default_threads())
    faiss_before = faiss.omp_get_max_threads()
    if torch is not None:
        torch_before = torch.get_num_threads()
        torch.set_num_threads(count)
    faiss.omp_set_num_threads(count)
    try:
        yield count
    finally:
        if torch is not None:
            torch.set_num_threads(torch_before)
        faiss.omp_set_num_threads(faiss_before)
