"""Wall time and peak RSS of every stage at N rows (issue 17), through the real CLI.

Writes a seeded clustered feature table (:mod:`benchmarks.synthetic`: N x 128, 10 classes, 5
clusters each, 40% uniform noise, 100 trusted per class), then runs each stage as its own process
under ``/usr/bin/time -v`` (wall seconds, peak RSS of the process and its children)::

    winnow ingest T --features embedding
    winnow embed --model features
    winnow select --method facility-location --budget 0.1
    winnow weight                       (defaults: l2rw, head)
    winnow export

and scores the result against the truth the generator returned (kept outside the table): F1 of
``noise_flag`` against the flipped labels and AUROC of ``weight`` (clean vs flipped), train rows.
Threads are winnow's default (``--threads 0``, one per core) and recorded with the load average.
``--executor beam`` runs every stage with ``--executor beam`` (ingest, embed, select and export
on Beam's local runner, two worker processes by default; weight is local in any case), and
``--beam-option KEY=VALUE`` passes options on; peak RSS is then the launcher's and its workers'.

    python -m benchmarks.scale.run --rows 100000 300000 [1000000] --out DIR [--json FILE]
        [--executor beam [--beam-option direct_num_workers=2 ...]]

Prints a Markdown table per N and, against the smallest N, time(N)/time(N0) and RSS(N)/RSS(N0).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from sklearn.metrics import f1_score, roc_auc_score

from benchmarks.common import print_markdown_table
from benchmarks.synthetic import clustered_features, write_table
from winnow.pipeline.beam import BEAM_STAGES

STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("embed", ("--model", "features")),
    ("select", ("--method", "facility-location", "--budget", "0.1")),
    ("weight", ()),
    ("export", ()),
)


def timed(cmd: list[str], log: Path) -> dict[str, float]:
    """Run ``cmd`` under ``/usr/bin/time -v``; its wall seconds and peak RSS (GB); raise if it fails.

    ``rss_gb`` is the largest single process's peak (``/usr/bin/time``); ``tree_rss_gb`` the
    peak of the RSS summed over the process and its descendants, sampled every 0.2 s with
    psutil (Beam's worker processes hold their own copies: the machine needs the sum)."""
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen(["/usr/bin/time", "-v", *cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    tree_peak = 0
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
            tree_peak = max(tree_peak, sum(_rss(p) for p in procs))
        except psutil.Error:
            pass
        time.sleep(0.2)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - start
    log.write_text(stdout + stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr[-4000:]}")
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
    if found is None:
        raise RuntimeError(f"/usr/bin/time -v gave no peak RSS for {' '.join(cmd)}")
    rss_kb = int(found.group(1))
    return {"wall_s": wall, "rss_gb": rss_kb * 1024 / 1e9, "tree_rss_gb": tree_peak / 1e9}


def _rss(p: Any) -> int:
    try:
        return int(p.memory_info().rss)
    except Exception:  # the process ended between listing and reading
        return 0


def load() -> str:
    """The 1, 5 and 15 minute load averages, as ``uptime`` shows them."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_n(n: int, out: Path, *, seed: int = 0, stages: tuple[str, ...] = (),
          executor: tuple[str, ...] = ()) -> dict[str, Any]:
    """Generate the table for ``n`` rows, run every stage on it, score the flags and weights."""
    out.mkdir(parents=True, exist_ok=True)
    run = out / f"run-{n}"
    arrays = clustered_features(n, seed=seed)
    table = write_table(arrays, out / f"features-{n}.parquet")
    truth = dict(zip(arrays["id"].tolist(), arrays["true_label"].tolist()))
    del arrays
    winnow = [sys.executable, "-m", "winnow.pipeline.cli"]
    common = ["--run-dir", str(run), "--seed", str(seed), "--force", "-q"]
    rows: list[dict[str, Any]] = []
    plan = (("ingest", (str(table), "--features", "embedding")), *STAGES)
    for stage, args in plan:
        if stages and stage not in stages:
            continue
        before = load()
        beam = executor if stage in BEAM_STAGES else ()
        r = timed([*winnow, stage, *args, *common, *beam], out / f"{stage}-{n}.log")
        rows.append({"stage": stage, "load": before, **r})
        print(f"  {n} {stage}: {r['wall_s']:.1f} s, {r['rss_gb']:.2f} GB, all processes {r['tree_rss_gb']:.2f} GB "
              f"(load before {before})", flush=True)
    result: dict[str, Any] = {"rows": n, "threads": os.cpu_count(), "stages": rows, "executor": " ".join(executor),
                              "input_mb": table.stat().st_size / 1e6,
                              "features_mb": _size(run / "embed" / "features.parquet")}
    if not stages or "export" in stages:
        result.update(quality(run, truth))
    return result


def _size(path: Path) -> float:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*.parquet")) / 1e6
    return path.stat().st_size / 1e6 if path.exists() else float("nan")


def quality(run: Path, truth: dict[str, int]) -> dict[str, float]:
    """F1 of ``noise_flag`` and AUROC of ``weight`` (clean = positive) on the train rows."""
    cur = pq.read_table(run / "export" / "curated.parquet",
                        columns=["id", "split", "label", "noise_flag", "weight"]).to_pydict()
    train = np.array([s == "train" for s in cur["split"]])
    given = np.array(cur["label"])[train]
    true = np.array([truth[i] for i, t in zip(cur["id"], train) if t])
    noisy = given != true
    flag = np.array([bool(f) for f in np.array(cur["noise_flag"], dtype=object)[train]])
    weight = np.array([np.nan if w is None else w for w in np.array(cur["weight"], dtype=object)[train]], float)
    ok = np.isfinite(weight)
    return {"flags_f1": float(f1_score(noisy, flag)), "weight_auroc": float(roc_auc_score(~noisy[ok], weight[ok]))}


def report(results: list[dict[str, Any]]) -> None:
    """A Markdown table per N, then the ratios against the first N."""
    base = {s["stage"]: s for s in results[0]["stages"]}
    for res in results:
        print(f"\n### N = {res['rows']:,}, {res.get('executor') or '--executor local'} (threads: default, {res['threads']} cores; input "
              f"{res['input_mb']:.0f} MB, features.parquet {res['features_mb']:.0f} MB; flags F1 "
              f"{res.get('flags_f1', float('nan')):.3f}, weight AUROC {res.get('weight_auroc', float('nan')):.3f})\n")
        stages = [dict(s, t_ratio=s["wall_s"] / base[s["stage"]]["wall_s"],
                       m_ratio=s["rss_gb"] / base[s["stage"]]["rss_gb"]) for s in res["stages"]]
        total = {"stage": "**total**", "wall_s": sum(s["wall_s"] for s in stages),
                 "rss_gb": max(s["rss_gb"] for s in stages), "load": "",
                 "tree_rss_gb": max(s.get("tree_rss_gb", float("nan")) for s in stages),
                 "t_ratio": sum(s["wall_s"] for s in stages) / sum(s["wall_s"] for s in base.values()),
                 "m_ratio": max(s["rss_gb"] for s in stages) / max(s["rss_gb"] for s in base.values())}
        print_markdown_table([*stages, total], [
            ("stage", "{stage}", False), ("wall (s)", "{wall_s:.1f}", True), ("peak RSS (GB)", "{rss_gb:.2f}", True),
            ("all processes (GB)", "{tree_rss_gb:.2f}", True),
            (f"time / time({results[0]['rows'] // 1000}k)", "{t_ratio:.2f}", True),
            (f"RSS / RSS({results[0]['rows'] // 1000}k)", "{m_ratio:.2f}", True), ("load before", "{load}", False)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[100_000, 300_000])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stages", nargs="*", default=[], help="only these stages (default: all five)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--executor", choices=("local", "beam"), default="local")
    ap.add_argument("--beam-option", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    executor = ("--executor", args.executor, *(x for o in args.beam_option for x in ("--beam-option", o)))
    results = [run_n(n, args.out, seed=args.seed, stages=tuple(args.stages), executor=executor) for n in args.rows]
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
