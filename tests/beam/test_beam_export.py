"""export on Beam: the manifest rows (image bytes included) are joined by id with the export
columns on the workers; the files must be byte-identical to the local stage's, whatever the
manifest's row groups and the output sharding (fast: the in-process local runner)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.export.conftest import make_run
from winnow.pipeline.artifacts import write_table
from winnow.pipeline.beam.export import export_on_beam
from winnow.pipeline.beam.options import pipeline_options
from winnow.stages.export import ExportParams, export

IN_PROCESS = ("direct_running_mode=in_memory", "direct_num_workers=1")
NAMES = ("curated.parquet", "train.parquet", "flags.parquet")


def _with_images(manifest: pa.Table, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, rng.integers(5, 60), dtype=np.uint8).tobytes() for _ in range(manifest.num_rows)]
    col = manifest.column_names.index("image")
    return manifest.set_column(col, manifest.schema.field("image"), pa.array(images, pa.binary()))


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.parquet")) if p.is_file()}


@pytest.mark.parametrize("policy,shard_rows,row_group,threshold", [
    ("coreset", 100, 64, None),       # every table sharded; manifest read in 7 row groups
    ("weight", 0, 1000, None),        # one file each; one row group
    ("drop-flagged", 37, 50, 2.0),    # threshold above every score: an empty flags file
])
def test_export_on_beam_writes_the_local_files(tmp_path: Path, policy: str, shard_rows: int, row_group: int,
                                               threshold: float | None):
    run = make_run(seed=1)
    manifest = _with_images(run["manifest"], 1)
    params = ExportParams(policy=policy, shard_rows=shard_rows, flag_threshold=threshold)
    local = export(manifest, run["features"], run["coreset"], run["weights"], params, seed=4)
    (tmp_path / "local").mkdir()
    for name in NAMES:
        write_table(getattr(local, name.split(".")[0]), tmp_path / "local" / name, shard_rows=shard_rows)
    path = tmp_path / "manifest.parquet"
    pq.write_table(manifest, path, row_group_size=row_group)
    assert pq.ParquetFile(path).num_row_groups == -(-manifest.num_rows // row_group)
    out = tmp_path / "beam"
    out.mkdir()
    summary = export_on_beam(path, run["features"], run["coreset"], run["weights"], params, out, seed=4,
                             options=pipeline_options(IN_PROCESS), work=tmp_path / "work")
    assert json.dumps(summary, sort_keys=True) == json.dumps(local.summary, sort_keys=True)
    expected, got = _files(tmp_path / "local"), _files(out)
    assert sorted(got) == sorted(expected)
    assert all(got[k] == expected[k] for k in expected), [k for k in expected if got[k] != expected[k]]
    if threshold is not None:
        assert local.flags.num_rows == 0 and pq.read_table(out / "flags.parquet").num_rows == 0
    elif shard_rows:
        assert len([k for k in got if k.startswith("curated.parquet/")]) == -(-manifest.num_rows // shard_rows)


def test_export_on_beam_rejects_duplicate_ids(tmp_path: Path):
    run = make_run(seed=2, n_train=40, n_trusted=2, n_test=4)
    manifest = run["manifest"]
    ids = manifest["id"].to_pylist()
    ids[5] = ids[4]
    manifest = manifest.set_column(0, "id", pa.array(ids))
    pq.write_table(manifest, tmp_path / "m.parquet")
    with pytest.raises(ValueError, match=f"{ids[4]!r} is not unique"):
        export_on_beam(tmp_path / "m.parquet", None, None, None, ExportParams(), tmp_path, seed=0,
                       options=pipeline_options(IN_PROCESS), work=tmp_path / "work")
