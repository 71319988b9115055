"""Moving data in and out of a Beam pipeline, in files (the only channel every runner has).

- :class:`CollectToFolder` writes each bundle's elements to one file of a folder that the
  launcher reads back with :func:`read_collected` (small per-row results: errors, vectors).
- :func:`create_via_files` is ``beam.Create`` for large elements: they go through files in a
  folder the workers can read, not through the pipeline graph (which Beam pickles and
  bz2-compresses on the launcher: seconds per ten megabytes).
- A table assembled on the launcher (ingest's manifest, embed's features, select's coreset) is
  written there by the local stage's writer, not shipped whole to one worker to write.
"""

from __future__ import annotations

import os
import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam


class CollectToFolder(beam.DoFn):
    """Append every element of a bundle to ``folder/<uuid>.pkl`` (written then renamed).

    The files hold plain Python/numpy values produced by this same job and read back by the
    launcher only; a retried bundle may leave a duplicate file, so readers key what they read.
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def start_bundle(self) -> None:
        self.items: list[Any] = []

    def process(self, element: Any) -> Iterator[None]:
        self.items.append(element)
        return iter(())

    def finish_bundle(self) -> None:
        if not self.items:
            return
        os.makedirs(self.folder, exist_ok=True)
        name = uuid.uuid4().hex
        tmp = os.path.join(self.folder, f".{name}.tmp")
        with open(tmp, "wb") as f:
            pickle.dump(self.items, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, os.path.join(self.folder, f"{name}.pkl"))
        self.items = []


def read_collected(folder: Path) -> list[Any]:
    """Every element written by :class:`CollectToFolder` into ``folder`` (any order)."""
    out: list[Any] = []
    for f in sorted(Path(folder).glob("*.pkl")):
        with open(f, "rb") as fh:
            out.extend(pickle.load(fh))  # noqa: S301 -- our own job's temporary files
    return out


def _load(path: str) -> list[Any]:
    with open(path, "rb") as f:
        return pickle.load(f)  # noqa: S301 -- our own job's temporary files


def create_via_files(pipeline: beam.Pipeline, elements: list[Any], folder: Path, label: str,
                     *, parts: int = 16) -> beam.PCollection:
    """A PCollection of ``elements`` (in no particular order), shipped in up to ``parts`` files."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    step = max(1, -(-len(elements) // parts))
    for i, start in enumerate(range(0, len(elements), step)):
        path = folder / f"{label}-{i:05d}.pkl"
        with open(path, "wb") as f:
            pickle.dump(elements[start : start + step], f, protocol=pickle.HIGHEST_PROTOCOL)
        paths.append(str(path))
    return (
        pipeline
        | f"{label} files" >> beam.Create(paths)
        | f"{label} load" >> beam.FlatMap(_load)
    )


def shard_names(name: str, num_rows: int, shard_rows: int) -> list[str]:
    """The file names of :func:`winnow.pipeline.artifacts.write_table` for a table of ``num_rows`` rows:
    ``[name]``, or ``name/part-00000.parquet, ...`` (``shard_rows`` rows each) when
    ``shard_rows`` is set and the table is larger."""
    if shard_rows and num_rows > shard_rows:
        return [f"{name}/part-{i:05d}.parquet" for i in range(-(-num_rows // shard_rows))]
    return [name]


def temp_folder(root: Path, what: str) -> Path:
    """A fresh folder for one pipeline's temporary files."""
    path = root / f"beam-{what}-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    return path
