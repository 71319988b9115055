"""kill -9 every stage at a random moment, rerun it, and compare with an uninterrupted run.

    python -m benchmarks.reliability.kill_matrix [--kills 5] [--seed 0] [--rows 400]

One uninterrupted reference run of every stage on a small digits pipeline (``--threads 1``, CPU),
then, per stage and per kill: a copy of the reference, the stage started as its own process,
SIGKILL at a moment drawn uniformly over the reference's duration of that stage (counted from
the moment the stage takes its commit lock, and with torch and FAISS imported before the command
starts, so that the draw lands in the stage's work rather than in Python's start-up), and a plain
rerun. Kills alternate between two scenarios:

* ``fresh``: the stage had not completed; the rerun resumes from the killed run's checkpoints;
* ``force``: a ``--force`` rerun of a completed stage is killed; the plain rerun is then a cache hit
  (or, if the kill came after the swap, finds the new result), and must not leave the killed run's
  checkpoints behind.

A kill passes when the rerun's output files are byte-identical to the reference's and the run
directory holds no leftovers (temporary or old folders, locks, ``.work`` checkpoints, a stage
folder without ``stage.json``, ``*.tmp-*`` files). ``tests/reliability/test_kill_resume.py``
runs the same harness with one kill per stage.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("ingest", "embed", "select", "weight", "export", "train", "evaluate", "report")
MODES = ("fresh", "force")


def tiny_config(rows: int = 400) -> dict[str, dict[str, object]]:
    """Each stage's options: digits cut to ``rows`` rows, every stage short, and the resumable ones
    (embed: warm-up epochs and 100-row shards; weight: epochs) saving several checkpoints."""
    return {
        "ingest": {"source": "digits", "max_rows": rows, "inject_noise": "uniform:0.4", "trusted_per_class": 5},
        "embed": {"warmup": 4, "folds": 3, "shard_size": 100},
        "select": {},
        "weight": {"method": "l2rw", "rounds": 2, "epochs": 5},
        "export": {},
        "train": {"epochs": 3},
        "evaluate": {},
        "report": {},
    }


def _toml(value: object) -> str:
    return json.dumps(value) if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)


def write_config(path: Path, run_dir: Path, stages: tuple[str, ...], rows: int) -> Path:
    """A ``winnow run`` config for ``stages`` on one CPU thread (so that every run gives the same bytes)."""
    lines = [f"run_dir = {json.dumps(str(run_dir))}", "seed = 0", 'device = "cpu"', "threads = 1",
             f"stages = {json.dumps(list(stages))}"]
    for stage, options in tiny_config(rows).items():
        lines.append(f"[{stage}]")
        lines += [f"{k} = {_toml(v)}" for k, v in options.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# The stage processes import the heavy libraries before the CLI starts: the stages import them
# lazily, and `import torch` would otherwise be most of a small stage's duration, so most drawn
# moments would fall in it rather than in the stage's work (its checkpoints, its commit).
PRELOAD = ("import runpy, sys, torch, torchvision, faiss, scipy.sparse, sklearn.datasets; sys.argv[0] = 'winnow'; "
           "runpy.run_module('winnow.pipeline.cli', run_name='__main__')")


def command(config: Path, *extra: str) -> list[str]:
    """``winnow run CONFIG`` as a new process (as a user or a scheduler starts it)."""
    return [sys.executable, "-c", PRELOAD, "run", str(config), "-q", *extra]


def env() -> dict[str, str]:
    """The environment of a stage process: this checkout importable, whatever the working directory."""
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def reference(folder: Path, rows: int = 400) -> Path:
    """An uninterrupted run of every stage in ``folder/reference``."""
    run = folder / "reference"
    config = write_config(folder / "reference.toml", run, STAGES, rows)
    proc = subprocess.run(command(config), cwd=ROOT, env=env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the reference run failed:\n{proc.stderr[-3000:]}")
    return run


def file_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` except ``stage.json`` (its timings and metrics differ
    between runs by design; its ``outputs`` are the digests computed here)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "stage.json"}


def leftovers(run: Path) -> list[str]:
    """What no command may leave behind in a run directory once it has finished."""
    found = [p.name for p in run.iterdir() if p.name.startswith((".tmp-", ".old-", ".lock-", ".work"))]
    found += [p.name for p in run.iterdir() if p.is_dir() and not p.name.startswith(".")
              and not (p / "stage.json").is_file()]
    found += [p.relative_to(run).as_posix() for p in run.rglob("*") if ".tmp-" in p.name]
    return sorted(set(found))


@dataclass
class Kill:
    """One kill and its rerun."""

    stage: str
    mode: str
    delay_s: float
    killed: bool  # False: the stage finished before the drawn moment
    checkpoints: int  # checkpoint files the kill left for the rerun to resume from
    rerun_cached: bool
    identical: bool
    leftovers: list[str] = field(default_factory=list)
    differing: list[str] = field(default_factory=list)


def kill_and_rerun(ref: Path, work: Path, stage: str, *, mode: str, rng: random.Random, rows: int = 400) -> Kill:
    """Copy ``ref``, kill ``stage`` at a random moment (``mode`` as in the module docstring), rerun it
    plainly and compare its files with ``ref``'s."""
    run = work / "run"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(ref, run)
    if mode == "fresh":
        shutil.rmtree(run / stage)
    config = write_config(work / f"{stage}.toml", run, (stage,), rows)
    duration = float(json.loads((ref / stage / "stage.json").read_text())["timings"]["seconds"])
    delay = rng.uniform(0.0, duration)
    proc = subprocess.Popen(command(config, *(["--force"] if mode == "force" else [])), cwd=ROOT, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while proc.poll() is None and not any(p.name.endswith(f"-{stage}") for p in run.glob(".lock-*")):
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{stage} never started")
        time.sleep(0.002)
    time.sleep(delay)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    if not killed and proc.returncode != 0:
        raise RuntimeError(f"{stage} failed before it was killed:\n{err.decode()[-3000:]}")
    checkpoints = len(list((run / ".work").rglob("*.pt")))
    rerun = subprocess.run(command(config, "--json"), cwd=ROOT, env=env(), capture_output=True, text=True)
    if rerun.returncode != 0:
        raise RuntimeError(f"the rerun of {stage} failed:\n{rerun.stderr[-3000:]}")
    cached = json.loads(rerun.stdout)["stages"][stage]["cached"]
    want, got = file_digests(ref / stage), file_digests(run / stage)
    differing = sorted(name for name in set(want) | set(got) if want.get(name) != got.get(name))
    return Kill(stage, mode, round(delay, 3), killed, checkpoints, cached, not differing, leftovers(run), differing)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=5, help="Kills per stage (scenarios alternate fresh, force).")
    ap.add_argument("--seed", type=int, default=0, help="Seeds the kill moments.")
    ap.add_argument("--rows", type=int, default=400, help="Digits rows of the pipeline.")
    ap.add_argument("--stages", default=",".join(STAGES), help="Comma-separated stages to kill.")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ref = reference(folder, args.rows)
        rows = []
        for stage in args.stages.split(","):
            duration = json.loads((ref / stage / "stage.json").read_text())["timings"]["seconds"]
            kills = [kill_and_rerun(ref, folder, stage, mode=MODES[i % 2], rng=rng, rows=args.rows)
                     for i in range(args.kills)]
            rows.append((stage, duration, kills))
            print(f"{stage}: " + ", ".join(f"{k.mode}@{k.delay_s}s{'' if k.killed else ' (finished first)'}"
                                          f"{f' {k.checkpoints} checkpoint(s)' if k.checkpoints else ''}"
                                          f"{' DIFFERS ' + str(k.differing) if not k.identical else ''}"
                                          f"{' LEFT ' + str(k.leftovers) if k.leftovers else ''}" for k in kills),
                  file=sys.stderr, flush=True)
    print("| stage | kill window s | kills | killed mid-stage | left checkpoints | rerun cached | byte-identical "
          "| no leftovers |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for stage, duration, kills in rows:
        n = len(kills)
        print(f"| {stage} | {duration:.2f} | {n} | {sum(k.killed for k in kills)} | "
              f"{sum(k.checkpoints > 0 for k in kills)} | {sum(k.rerun_cached for k in kills)} | "
              f"{sum(k.identical for k in kills)}/{n} | {sum(not k.leftovers for k in kills)}/{n} |")


if __name__ == "__main__":
    main()
