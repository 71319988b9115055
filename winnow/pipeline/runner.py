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

import hashlib
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from winnow.pipeline.contract import CONTRACTS
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


# ---------------------------------------------------------------------------------------------
# the cache key's input digests


def source_digest(*paths: str, data_root: str = "", allow_any_path: bool = False) -> str:
    """Fingerprint of ingest's sources: file sizes and modification times (not contents: an image
    folder can hold millions of files), including the image files a manifest's ``uri`` column
    names, or the scikit-learn version for the bundled digits. Only files under the data root
    count (see :mod:`winnow.stages.ingest.sources`): one outside is neither read nor stat'ed."""
    from winnow.stages.ingest.sources import source_files

    entries: list[Any] = []
    for p in paths:
        if not p:
            continue
        if p == "digits":
            import sklearn

            entries.append(["digits", sklearn.__version__])
            continue
        files = source_files(p, data_root=data_root, allow_any_path=allow_any_path)
        entries.append([str(Path(p).resolve())] + [[str(f), *_stat(f)] for f in files])
    return json_digest(entries)


def _stat(path: Path) -> list[int | None]:
    try:
        st = path.stat()
    except OSError:
        return [None, None]  # missing: ingest keeps the row with its error; appearing later changes this
    return [st.st_size, st.st_mtime_ns]


def code_digest() -> str:
    """Digest of the computing code (``stages`` and ``models``): a code change invalidates the
    cache even within one version (it matters while developing; installed code never changes)."""
    from winnow import models, stages

    h = hashlib.sha256()
    for pkg in (stages, models):
        root = Path(str(pkg.__file__)).parent
        for p in sorted(root.rglob("*.py")):
            h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def input_digests(run: RunDir, stage: str, params: Any) -> dict[str, str]:
    """Digest of every input of ``stage`` as it is now (upstream output digests and the code), its
    upstream stages as :data:`winnow.pipeline.contract.CONTRACTS` names them.

    Raises ValueError when an upstream stage's outputs were computed from an earlier version of
    its own inputs (``winnow ingest`` re-run with new data, then ``winnow export`` alone): joining
    them would mix two datasets with nothing to show for it.
    """
    step = CONTRACTS[stage]
    out: dict[str, str] = {"code": code_digest()}
    if stage == "ingest":
        out["source"] = source_digest(params.source, params.trusted, data_root=params.data_root,
                                      allow_any_path=params.allow_any_path)
        if params.corrections:
            from winnow.stages.review.corrections import corrections_digest

            out["corrections"] = corrections_digest(Path(params.corrections))
    for up in step.required + step.optional:
        rec = run.record(up)
        if rec is None:
            if up in step.required:
                run.path(up, "stage.json")  # raises StageMissing with the command to run
            continue
        stale = outdated_input(run, up)
        if stale is not None:
            raise ValueError(
                f"{up}'s outputs were computed from an earlier {stale} that has since been re-run; "
                f"run `winnow {up} --run-dir {run.root}` again first (or `winnow run` for every stage)")
        out[up] = rec["digest"]
    return out


def outdated_input(run: RunDir, stage: str) -> str | None:
    """The upstream stage whose current outputs differ from those ``stage`` was computed from
    (searched transitively), or None when ``stage`` is up to date."""
    for up, digest in (run.record(stage) or {}).get("inputs", {}).items():
        if up not in CONTRACTS:
            continue  # the code or ingest's source files: not another stage's outputs
        current = run.record(up)
        if current is None or current.get("digest") != digest:
            return up
        deeper = outdated_input(run, up)
        if deeper is not None:
            return deeper
    return None
