"""The stages as Python functions on a run directory (winnow.pipeline.api), and the example that
curates digits with them."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import winnow
from winnow.stages.select.params import SelectParams


def test_example_curates_digits_and_matches_the_demo_options(curated_dir):
    cwd, out = curated_dir
    m = re.search(r"flagged (\d+) of (\d+) training rows; precision ([\d.]+), recall ([\d.]+)", out)
    assert m, out
    flagged, rows, precision, recall = int(m[1]), int(m[2]), float(m[3]), float(m[4])
    assert rows == 1338 and 400 < flagged < 700  # 40% of the train rows were flipped
    assert precision > 0.9 and recall > 0.9
    for stage in ("ingest", "embed", "select", "weight", "export"):
        assert (cwd / "runs" / "demo" / stage / "stage.json").is_file()


def test_a_stage_function_goes_through_the_cache_and_returns_a_short_result(curated_dir):
    run_dir = curated_dir[0] / "runs" / "demo"
    result = winnow.export(run_dir, policy="weight", threads=1)  # the example's call: cached
    assert result.cached and result.stage == "export" and result.run_dir == run_dir
    assert {"curated.parquet", "train.parquet", "flags.parquet", "summary.json"} <= set(result.outputs)
    flags = result.table("flags.parquet")
    assert flags.num_rows > 0 and "noise_score" in flags.column_names
    assert result.table().num_rows == result.table("curated.parquet").num_rows  # the first Parquet file
    text = repr(result)
    assert len(text) < 300 and text.startswith("StageRun('export', cached") and "PNG" not in text
    with pytest.raises(KeyError, match="report.html"):
        result.path("report.html")
    changed = winnow.export(run_dir, policy="soft", threads=1, force=False)  # another option: runs again
    try:
        assert not changed.cached and changed.seconds > 0
    finally:
        winnow.export(run_dir, policy="weight", threads=1)  # leave the run as the other tests expect it


def test_stage_functions_take_the_cli_options_as_keyword_only_arguments():
    sig = inspect.signature(winnow.select)
    names = [f.name for f in dataclasses.fields(SelectParams)]
    for name in names:
        assert sig.parameters[name].kind is inspect.Parameter.KEYWORD_ONLY
        assert sig.parameters[name].default == getattr(SelectParams(), name)
    assert list(sig.parameters)[0] == "run_dir"
    assert {"seed", "device", "threads", "force", "executor", "beam_options"} <= set(sig.parameters)
    assert "executor" not in inspect.signature(winnow.weight).parameters  # weight never runs on Beam
    doc = winnow.select.__doc__
    for section in ("Parameters", "Returns", "Examples"):
        assert f"\n{section}\n" in doc
    assert "budget : float, default 0.1" in doc


def test_a_bad_option_is_a_clear_error(tmp_path: Path):
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['budgett'\]"):
        winnow.select(tmp_path, budgett=0.2)
    with pytest.raises(ValueError, match="budget"):
        winnow.select(tmp_path, budget=-1)
    with pytest.raises(ValueError, match="threads"):
        winnow.select(tmp_path, threads=-2)


def test_a_missing_upstream_stage_says_what_to_run(tmp_path: Path):
    with pytest.raises(ValueError, match="winnow ingest"):
        winnow.embed(tmp_path, threads=1)


def test_a_missing_run_dir_is_refused_and_not_created(tmp_path: Path):
    with pytest.raises(ValueError, match=r"no run directory .*typo; run winnow.ingest"):
        winnow.embed(tmp_path / "typo", threads=1)
    assert not (tmp_path / "typo").exists()


def _feature_table(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], n // 3)
    emb = (rng.normal(size=(n, 4)) + 3 * np.eye(3, 4)[y]).astype(np.float32)
    return pd.DataFrame({"id": [f"r{i}" for i in range(n)], "label": y,
                         "split": np.where(np.arange(n) % 10 == 0, "trusted", "train"), "embedding": list(emb)})


@pytest.mark.parametrize("kind", ["pandas", "polars", "pyarrow"])
def test_ingest_takes_a_pandas_polars_or_pyarrow_table(tmp_path: Path, kind: str):
    df = _feature_table()
    table = {"pandas": df, "polars": pl.from_pandas(df), "pyarrow": pa.Table.from_pandas(df)}[kind]
    run = winnow.ingest(tmp_path, source=table, features="embedding", threads=1)
    manifest = run.table("manifest.parquet")
    assert manifest["id"].to_pylist() == df["id"].tolist()
    assert manifest["label"].to_pylist() == df["label"].tolist()
    assert manifest["split"].to_pylist() == df["split"].tolist()
    assert (tmp_path / "inputs" / "source.parquet").is_file()
    again = winnow.ingest(tmp_path, source=table, features="embedding", threads=1)
    assert again.cached, "the same table again is the same source: the cache holds"
    changed = df.assign(label=np.roll(df["label"].to_numpy(), 1))
    assert not winnow.ingest(tmp_path, source=changed, features="embedding", threads=1).cached


def test_ingest_refuses_what_is_not_a_table(tmp_path: Path):
    with pytest.raises(TypeError, match=r"source: expected a table .* got builtins\.list"):
        winnow.ingest(tmp_path, source=[1, 2, 3], threads=1)


@pytest.mark.parametrize("kind", ["pandas", "polars", "pyarrow"])
def test_the_trainer_side_takes_pandas_polars_or_pyarrow(curated_dir, kind: str):
    table = pq.read_table(curated_dir[0] / "runs" / "demo" / "export" / "train.parquet")
    given = {"pandas": table.to_pandas(), "polars": pl.from_arrow(table), "pyarrow": table}[kind]
    ds = winnow.ManifestDataset(given)
    assert len(ds) == table.num_rows
    np.testing.assert_array_equal(ds.labels, table["label"].to_numpy())
    x, label, weight = ds[0]
    assert tuple(x.shape) == (1, 8, 8) and int(label) == table["label"][0].as_py()
    assert len(list(winnow.weighted_sampler(given, num_samples=5))) == 5
    with pytest.raises(TypeError, match="manifest: expected a table"):
        winnow.ManifestDataset(42)
