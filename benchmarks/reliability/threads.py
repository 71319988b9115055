"""How much each stage's CPU results depend on the thread count (the figures behind the cache key).

    python -m benchmarks.reliability.threads [--threads 1,2] [--seed 0]

Runs the digits demo on CPU with each of the two thread counts in its own run directory and
compares every Parquet column of every stage (whole pipeline: differences flow downstream). Then,
for each computing stage, reruns that stage alone with each count on the first run's upstream
files, so that a row shows what the stage itself adds. Prints Markdown tables: the largest
absolute difference of each numeric column that differs and how many rows differ. Nothing here
is a timing: the figures do not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.reliability.kill_matrix import ROOT, env
from winnow.pipeline.steps import DEMO_CONFIG, THREAD_DEPENDENCE

STAGES = ("ingest", "embed", "select", "weight", "export", "train", "evaluate", "report")


def _winnow(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "winnow.pipeline.cli", *args, "-q"], cwd=ROOT, env=env(),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"winnow {' '.join(args)} failed:\n{proc.stderr[-3000:]}")


def _values(column: pa.ChunkedArray) -> np.ndarray | None:
    """A numeric column as a float array (vectors as (n, d)), None for other types."""
    typ = column.type
    if pa.types.is_fixed_size_list(typ):
        flat = pa.concat_arrays([c.flatten() for c in column.chunks]).to_numpy(zero_copy_only=False)
        return np.asarray(flat, dtype=float).reshape(len(column), typ.list_size)
    if pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_boolean(typ):
        return np.asarray(column.to_numpy(zero_copy_only=False), dtype=float)
    return None


def compare(a: Path, b: Path, stage: str) -> list[tuple[str, str, str]]:
    """(file:column, max abs diff, rows differing) for each column of ``stage`` that differs."""
    rows: list[tuple[str, str, str]] = []
    outputs = json.loads((a / stage / "stage.json").read_text())["outputs"]
    other = json.loads((b / stage / "stage.json").read_text())["outputs"]
    for name in sorted(outputs):
        if outputs[name] == other.get(name):
            continue
        if not name.endswith(".parquet"):
            rows.append((name, "", "differs"))
            continue
        ta, tb = pq.read_table(a / stage / name), pq.read_table(b / stage / name)
        if ta.num_rows != tb.num_rows:  # flags.parquet holds the flagged rows only
            rows.append((name, "", f"{ta.num_rows} vs {tb.num_rows} rows"))
            continue
        for col in ta.column_names:
            if ta[col].equals(tb[col]):
                continue
            x, y = _values(ta[col]), _values(tb[col])
            if x is None or y is None:
                rows.append((f"{name}:{col}", "", "differs"))
                continue
            both = np.isfinite(x) & np.isfinite(y)
            diff = np.where(both, np.abs(x - y), 0.0)
            changed = (diff > 0) | (np.isfinite(x) != np.isfinite(y))
            per_row = changed.reshape(len(x), -1).any(axis=1)
            rows.append((f"{name}:{col}", f"{diff.max():.3g}", f"{int(per_row.sum())} of {len(x)}"))
    return rows


def _stage_args(stage: str) -> list[str]:
    """The demo's options of ``stage`` as command-line flags."""
    return [arg for key, value in DEMO_CONFIG[stage].items() for arg in (f"--{key.replace('_', '-')}", str(value))]


def _table(title: str, results: dict[str, list[tuple[str, str, str]]]) -> str:
    lines = [f"### {title}", "", "| stage | column | max abs diff | rows differing |", "| --- | --- | ---: | ---: |"]
    for stage, rows in results.items():
        if not rows:
            lines.append(f"| {stage} | (identical) | 0 | 0 |")
        lines += [f"| {stage} | `{col}` | {diff} | {n} |" for col, diff, n in rows]
    return "\n".join(lines)


def _flags(run: Path) -> tuple[np.ndarray, float]:
    flags = pq.read_table(run / "export" / "curated.parquet", columns=["noise_flag"])["noise_flag"]
    f1 = json.loads((run / "evaluate" / "evaluation.json").read_text())["flags"]["overall"]["f1"]
    return np.asarray(flags.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool), f1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="1,2", help="The two thread counts to compare.")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t_a, t_b = (int(t) for t in args.threads.split(","))
    common = ["--seed", str(args.seed), "--device", "cpu"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        a, b = folder / f"threads-{t_a}", folder / f"threads-{t_b}"
        for run, t in ((a, t_a), (b, t_b)):
            _winnow("demo", "--run-dir", str(run), "--threads", str(t), *common)
            print(f"demo with --threads {t} done", file=sys.stderr, flush=True)
        whole = {stage: compare(a, b, stage) for stage in STAGES}
        (fa, f1a), (fb, f1b) = _flags(a), _flags(b)
        alone = {}
        for stage in (s for s in STAGES if s in THREAD_DEPENDENCE):
            runs = []
            for t in (t_a, t_b):
                run = folder / f"{stage}-{t}"
                shutil.copytree(a, run)
                _winnow(stage, "--run-dir", str(run), "--threads", str(t), "--force", *common, *_stage_args(stage))
                runs.append(run)
            alone[stage] = compare(runs[0], runs[1], stage)
            print(f"{stage} alone done", file=sys.stderr, flush=True)
    print(f"Digits demo on CPU, seed {args.seed}, `--threads {t_a}` against `--threads {t_b}`.\n")
    print(_table("Whole pipeline (differences flow downstream)", whole))
    print(f"\nFlags differing: {int((fa != fb).sum())} of {len(fa)}; flag F1 {f1a:.3f} against {f1b:.3f}.\n")
    print(_table("Each stage alone, on the same upstream files", alone))


if __name__ == "__main__":
    main()
