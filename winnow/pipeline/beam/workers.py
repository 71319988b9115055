"""A :data:`winnow.stages.common.mapping.Map` on Beam's workers: a stage's independent units (embed's
warm-ups and cross-fit heads, export's kNN searches, select's classes) run there, not on the
launcher.

The data (arrays, tensors, Arrow tables) go to ``.npy`` / Arrow IPC files in the run's work
folder (storage the launcher and the workers share, as for every file this executor
exchanges), never through the pipeline graph; each worker loads them once per DoFn instance
(numpy arrays and tables memory-mapped, read-only: a unit reads the rows it needs). The results
come back through :class:`~winnow.pipeline.beam.io.CollectToFolder`, in the items' order, and
the files are removed.
"""

from __future__ import annotations

import shutil
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa

from winnow.pipeline.beam.io import CollectToFolder, read_collected, temp_folder
from winnow.stages.common.threads import cpu_threads

# One unit at a time per process: an SDK worker may run bundles in several threads of one
# process (the in-memory runner with direct_num_workers=2, Dataflow's Python workers), and a unit
# seeds and draws from torch's and numpy's global RNGs and sets torch's thread count, all
# process-wide: two at once interleaved their draws (fold warm-ups' probs differed by 0.49).
_ONE_AT_A_TIME = threading.Lock()


class _Apply(beam.DoFn):
    """(index, item) -> (index, fn(item, **arrays)), with the arrays loaded from ``folder`` and
    torch's and FAISS's thread counts set to the launcher's (a fit's or a search's floating-point
    result may depend on them: the same counts give the local stage's result bit for bit); one
    call at a time per process."""

    def __init__(self, fn: Callable[..., Any], folder: str, names: list[str], threads: int) -> None:
        self.fn, self.folder, self.names, self.threads = fn, folder, names, threads

    def setup(self) -> None:
        self.arrays = {name: _load(Path(self.folder), name) for name in self.names}

    def process(self, element: tuple[int, Any]) -> Iterator[tuple[int, Any]]:
        index, item = element
        # (torch is set too where the unit's module loaded it; a select unit never does)
        with _ONE_AT_A_TIME, cpu_threads(self.threads, uses_torch=False):
            result = self.fn(item, **self.arrays)
        yield index, result


def _launcher_threads() -> int:
    """The count the units run with: torch's where it is loaded (a training unit), else FAISS's;
    inside a stage :func:`~winnow.stages.common.threads.cpu_threads` has set both to one count."""
    if (torch := sys.modules.get("torch")) is not None:
        return int(torch.get_num_threads())
    import faiss

    return int(faiss.omp_get_max_threads())


def _save(folder: Path, name: str, value: Any) -> None:
    if isinstance(value, pa.Table):
        with pa.OSFile(str(folder / f"{name}.arrow"), "wb") as sink, pa.ipc.new_file(sink, value.schema) as writer:
            writer.write_table(value)
    else:  # a tensor comes back as a tensor, an array as an array
        torch = sys.modules.get("torch")  # a tensor means torch is loaded; no need to load it otherwise
        kind = "pt" if torch is not None and isinstance(value, torch.Tensor) else "np"
        np.save(folder / f"{name}.{kind}.npy", value.cpu().numpy() if kind == "pt" else np.asarray(value))


def _load(folder: Path, name: str) -> Any:
    if (folder / f"{name}.arrow").is_file():
        return pa.ipc.open_file(pa.memory_map(str(folder / f"{name}.arrow"))).read_all()
    if (folder / f"{name}.pt.npy").is_file():
        import torch

        return torch.from_numpy(np.load(folder / f"{name}.pt.npy"))
    return np.load(folder / f"{name}.np.npy", mmap_mode="r")  # read-only: a unit reads the rows it needs


def map_on_workers(fn: Callable[..., Any], items: list[Any], arrays: Mapping[str, Any], *, options: Any,
                   work: Path) -> list[Any]:
    """``[fn(item, **arrays) for item in items]``, each call on a Beam worker.

    ``fn`` must pickle small (a top-level function, or a ``functools.partial`` of one with
    small arguments); ``arrays`` are numpy arrays, CPU tensors or Arrow tables of any size,
    and reach ``fn`` as the same type."""
    folder = temp_folder(work, "map-data")
    for name, value in arrays.items():
        _save(folder, name, value)
    out = temp_folder(work, "map-results")
    with beam.Pipeline(options=options) as p:
        _ = (
            p
            | "items" >> beam.Create(list(enumerate(items)))
            | "spread" >> beam.Reshuffle()
            | "apply" >> beam.ParDo(_Apply(fn, str(folder), list(arrays), _launcher_threads()))
            | "collect" >> beam.ParDo(CollectToFolder(str(out)))
        )
    results = dict(read_collected(out))
    shutil.rmtree(folder)  # up to an (n, d) copy: not kept until the stage commits
    shutil.rmtree(out)
    return [results[i] for i in range(len(items))]

