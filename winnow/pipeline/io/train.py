"""train's inputs: the test split of the manifest, and metrics without timings for the files it writes."""

from __future__ import annotations

import re
from typing import Any

import pyarrow as pa

from winnow.pipeline.io.ingest import load_manifest
from winnow.pipeline.rundir import RunDir
from winnow.stages.common import schema
from winnow.stages.common.rows import split_array, usable_mask


def test_table(run: RunDir) -> pa.Table | None:
    """The test split of the manifest (usable rows), or None when it has none."""
    manifest = load_manifest(run)
    keep = (split_array(manifest) == schema.TEST) & usable_mask(manifest)
    return manifest.filter(pa.array(keep)) if keep.any() else None


_TIMING_KEY = re.compile(r"(^|_)(s|seconds)$|^timings$")  # seconds, knn_s, images_per_s, warmup_seconds


def untimed(obj: Any) -> Any:
    """``obj`` (metrics) without its timing entries, at any depth.

    Why: what a stage writes into its folder is digested, and a downstream stage's key holds that
    digest; a timing in a file (train's ``seconds``, select's ``knn_s`` in the report) made two
    bit-identical runs differ and invalidated the cache downstream. Timings stay in ``stage.json``.
    """
    if isinstance(obj, dict):
        return {k: untimed(v) for k, v in obj.items() if not (isinstance(k, str) and _TIMING_KEY.search(k))}
    if isinstance(obj, list):
        return [untimed(v) for v in obj]
    return obj

