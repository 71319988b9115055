"""Beam executor (default local runner, multi-process, 2 workers) vs the local executor on CIFAR-10.

Runs ingest -> embed -> select -> export on the first ``--rows`` rows of
/work/shared/data/cifar10/train.parquet, once per executor, each stage as its own ``winnow``
process (as a user runs it). Measures wall time per stage and the peak resident memory of the
whole process tree (the launcher plus Beam's SDK worker processes, summed, sampled every 0.1 s),
and checks that both executors wrote byte-identical artifacts (stage.json output digests).

    .venv/bin/python -m benchmarks.beam.executor --rows 10000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq

CIFAR = Path("/work/shared/data/cifar10/train.parquet")


def stages(source: Path) -> dict[str, list[str]]:
    return {
        "ingest": ["ingest", str(source), "--trusted-per-class", "20", "--inject-noise", "uniform:0.2"],
        "embed": ["embed", "--warmup", "0", "--head-iters", "50"],  # auto = small CNN, random init
        "select": ["select", "--budget", "0.1"],
        "export": ["export", "--policy", "coreset", "--shard-rows", "5000"],
    }


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def run_stage(args: list[str]) -> tuple[float, int]:
    """(wall seconds, peak summed RSS in bytes) of one ``winnow`` command."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "winnow.pipeline.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            try:
                peak[0] = max(peak[0], _tree_rss(ps))
            except psutil.NoSuchProcess:
                break
            time.sleep(0.1)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    _, err = proc.communicate()
    thread.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{err[-3000:]}")
    return time.perf_counter() - t0, peak[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10000, help="first rows of CIFAR-10 train to use")
    ap.add_argument("--workers", type=int, default=2, help="local runner worker processes")
    a = ap.parse_args()
    if not CIFAR.is_file():
        sys.exit(f"{CIFAR} not found")
    tmp = Path(tempfile.mkdtemp(prefix="winnow-beam-bench-"))
    source = tmp / "cifar10-subset.parquet"
    pq.write_table(pq.read_table(CIFAR).slice(0, a.rows), source)
    executors = {
        "local": [],
        "beam": ["--executor", "beam", "--beam-option", f"direct_num_workers={a.workers}",
                 "--beam-option", "direct_running_mode=multi_processing"],
    }
    results: dict[str, dict[str, tuple[float, int, float]]] = {}
    digests: dict[str, dict[str, str]] = {}
    for name, extra in executors.items():
        run = tmp / name
        results[name], digests[name] = {}, {}
        for stage, args in stages(source).items():
            wall, peak = run_stage([*args, "--run-dir", str(run), "--device", "cpu", "-q", *extra])
            record = json.loads((run / stage / "stage.json").read_text())
            results[name][stage] = (wall, peak, record["timings"]["seconds"])
            digests[name][stage] = record["digest"]
            print(f"{name:5s} {stage:7s} {wall:7.1f} s  peak {peak / 2**20:7.0f} MiB", file=sys.stderr)

    print(f"\nCIFAR-10 train, first {a.rows} rows (32x32 JPEG); local runner multi_processing, "
          f"{a.workers} workers\n")
    print("| stage | local wall s | beam wall s | beam / local | local peak MiB | beam peak MiB (tree) | identical output |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    tot = {"local": 0.0, "beam": 0.0}
    for stage in stages(source):
        (lw, lp, _), (bw, bp, _) = results["local"][stage], results["beam"][stage]
        tot["local"] += lw
        tot["beam"] += bw
        same = "yes" if digests["local"][stage] == digests["beam"][stage] else "NO"
        print(f"| {stage} | {lw:.1f} | {bw:.1f} | {bw / lw:.2f} | {lp / 2**20:.0f} | {bp / 2**20:.0f} | {same} |")
    print(f"| total | {tot['local']:.1f} | {tot['beam']:.1f} | {tot['beam'] / tot['local']:.2f} | | | |")
    print("\nWall time includes process start-up (both executors) and, for beam, starting the "
          "local runner's worker processes for every pipeline; stage.json seconds:")
    print("\n| stage | local s | beam s |\n| --- | ---: | ---: |")
    for stage in stages(source):
        print(f"| {stage} | {results['local'][stage][2]:.1f} | {results['beam'][stage][2]:.1f} |")


if __name__ == "__main__":
    main()
