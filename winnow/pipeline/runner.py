"""Run one stage with the cache rules of DESIGN.md.

A stage is skipped when its ``stage.json`` records the same cache key: the same parameters,
seed, device, CPU thread count (for the stages whose results depend on it), winnow version and
the same digests of its inputs (the upstream stages' output digests, or the source files for
ingest). A changed parameter or input therefore re-runs the stage, and because its outputs
change, every stage downstream of it as well. A stage whose recorded output files have been
deleted since is run again rather than skipped. Nothing timing-dependent enters a key or an
output digest: timings live in ``stage.json``'s ``timings`` and ``metrics`` only.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from winnow.pipeline.rundir import DiskCheckpoints, RunDir, json_digest

log = logging.getLogger(__name__)


def versions() -> dict[str, str]:
    """Versions of winnow and the libraries whose behaviour shapes the results."""
    out = {"python": platform.python_version()}
    for dist in ("winnow-curate", "torch", "torchvision", "faiss-cpu", "numpy", "pyarrow", "scikit-learn", "apache-beam"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


@dataclass
class StageContext:
    """What a stage adapter gets: where to write, and how to checkpoint."""

    run: RunDir
    out: Path  # temporary folder, committed atomically when the adapter returns
    seed: int
    device: str
    checkpoints: DiskCheckpoints
    executor: str = "local"
    beam_options: tuple[str, ...] = ()


@dataclass
class StageOutcome:
    stage: str
    cached: bool
    record: dict[str, Any]
    seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)


def run_stage(
    run: RunDir,
    stage: str,
    *,
    params: dict[str, Any],
    inputs: dict[str, str],
    adapter: Callable[[StageContext], dict[str, Any]],
    seed: int,
    device: str,
    force: bool = False,
    executor: str = "local",
    beam_options: tuple[str, ...] = (),
    threads: int | None = None,
    thread_dependence: str = "",
) -> StageOutcome:
    """Run ``adapter`` unless the stage's cache key is unchanged (then return the cached record).

    ``inputs`` maps an input's name to its digest; ``adapter`` writes its files into
    ``ctx.out`` and returns the stage's metrics. ``threads`` is the CPU thread count torch and
    FAISS compute with, None for a stage whose results do not depend on it. It is part of the
    key: on CPU, training reductions and FAISS's BLAS distances round differently with another
    count, and a chaotic computation (a warm-up) amplifies that, so two machines would otherwise
    share a key for two answers. ``thread_dependence`` (what varies, and by how much) is
    recorded beside it in ``stage.json``. Checkpoints of the key are removed once it completes,
    whether it ran or was cached; a failure leaves no empty checkpoint folder.
    """
    vers = versions()
    key_fields = {
        "stage": stage,
        "params": params,
        "inputs": inputs,
        "seed": seed,
        "device": device,
        "threads": threads,
        "winnow": vers.get("winnow-curate", "dev"),
    }
    key = json_digest(key_fields)
    previous = run.record(stage)
    if previous is not None and previous.get("cache_key") == key and not force:
        missing = [name for name in previous.get("outputs", {}) if not (run.stage_dir(stage) / name).is_file()]
        if not missing:
            run.clear_work(stage, key)  # what a killed rerun of this key left is of no further use
            return StageOutcome(stage, True, previous, 0.0, previous.get("metrics", {}))
        log.warning("%s: output(s) %s were removed since it ran; running it again", stage, ", ".join(missing[:3]))
    work = run.work_dir(stage, key)
    started = time.time()
    record: dict[str, Any] = {**key_fields, "cache_key": key, "versions": vers, "executor": executor,
                              "thread_dependence": thread_dependence or None}
    try:
        with run.commit(stage, record) as out:
            ctx = StageContext(run, out, seed, device, DiskCheckpoints(work), executor, beam_options)
            metrics = adapter(ctx) or {}
            seconds = time.time() - started
            record.update(metrics=metrics, timings={"started": started, "seconds": round(seconds, 3)})
    except BaseException:
        run.keep_checkpoints_only(work)  # for a rerun to resume from; scratch files and empty folders go
        raise
    run.clear_work(stage, key)
    return StageOutcome(stage, False, run.record(stage) or record, seconds, metrics)
