"""A user's own columns (group, source, path, any metadata) pass through ingest into every manifest
winnow writes; one named like a column winnow writes is refused with a message, never replaced."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from tests.conftest import png_bytes
from winnow.pipeline.cli import main
from winnow.stages.common import schema
from winnow.stages.ingest import IngestError, IngestParams, ingest


def _images(n: int) -> list[bytes]:
    return [png_bytes(40 * (i % 5)) for i in range(n)]


def _manifest(n: int = 12, **user) -> pa.Table:
    labels = [i % 2 for i in range(n)]
    split = ["trusted" if i < 4 else "train" for i in range(n)]
    return pa.table({"id": [f"x{i}" for i in range(n)], "group": pa.array([i // 3 for i in range(n)], pa.int64()),
                     "image": _images(n), "label": labels, "split": split, **user})


def test_user_columns_pass_through_with_their_types_and_order(tmp_path: Path):
    meta = pa.array([{"camera": f"c{i % 2}", "iso": 100 * i} for i in range(12)])
    images = _images(12)
    images[5] = b"not an image"  # a row with an error keeps its user values too
    table = _manifest(source=[f"s{i}" for i in range(12)], meta=meta).set_column(2, "image", pa.array(images))
    pq.write_table(table, tmp_path / "m.parquet")
    r = ingest(IngestParams(source=str(tmp_path / "m.parquet")), seed=0)
    m = r.manifest
    assert m.column_names == schema.MANIFEST_SCHEMA.names + ["group", "source", "meta"]
    assert m.schema.field("group").type == pa.int64() and m.schema.field("meta").type == meta.type
    assert m["group"].to_pylist() == table["group"].to_pylist()
    assert m["meta"].to_pylist() == meta.to_pylist()
    assert m["error"][5].as_py() is not None and m["source"][5].as_py() == "s5"
    assert r.summary["user_columns"] == ["group", "source", "meta"]


def test_csv_user_columns_and_max_rows(tmp_path: Path, image_folder: Path):
    uris = sorted(str(p.relative_to(image_folder)) for p in image_folder.rglob("*.png"))
    n = len(uris)
    pacsv.write_csv(pa.table({"id": [f"r{i}" for i in range(n)], "uri": uris,
                              "label": [u.split("/")[0] for u in uris], "note": [f"n{i}" for i in range(n)],
                              "path": uris}), image_folder / "m.csv")
    m = ingest(IngestParams(source=str(image_folder / "m.csv"), trusted_per_class=1, max_rows=n - 1), seed=0).manifest
    assert m.num_rows == n - 1 and m["note"].to_pylist() == [f"n{i}" for i in range(n - 1)]
    assert m["path"].to_pylist() == uris[: n - 1], "'path' is the user's, not winnow's"


@pytest.mark.parametrize("name", ["true_label", "label_name", "error", "weight", "noise_flag", "round_3", "label_raw"])
def test_a_user_column_named_like_winnows_is_refused(tmp_path: Path, name: str):
    pq.write_table(_manifest(**{name: list(range(12))}), tmp_path / "m.parquet")
    with pytest.raises(IngestError, match=rf"m.parquet: column\(s\) '{name}' have names winnow writes.*'user_{name}'"):
        ingest(IngestParams(source=str(tmp_path / "m.parquet")), seed=0)


def test_trusted_file_with_other_user_columns_gets_nulls_and_one_type(tmp_path: Path):
    main_t = _manifest().drop_columns(["split"]).append_column("source", pa.array(["web"] * 12))
    trusted = _manifest(4).drop_columns(["split"])  # group only, and as int64 too
    trusted = trusted.set_column(1, "group", pa.array([7, 7, 8, 8], pa.int32()))
    trusted = trusted.append_column("annotator", pa.array(["ann"] * 4))
    trusted = trusted.set_column(0, "id", pa.array([f"t{i}" for i in range(4)]))
    pq.write_table(main_t, tmp_path / "m.parquet")
    pq.write_table(trusted, tmp_path / "t.parquet")
    m = ingest(IngestParams(source=str(tmp_path / "m.parquet"), trusted=str(tmp_path / "t.parquet")), seed=0).manifest
    assert schema.user_columns(m) == ["group", "source", "annotator"]
    assert m.schema.field("group").type == pa.int64(), "int32 and int64 unify to int64"
    assert m["group"].to_pylist()[-4:] == [7, 7, 8, 8]
    assert m["source"].to_pylist() == ["web"] * 12 + [None] * 4
    assert m["annotator"].to_pylist() == [None] * 12 + ["ann"] * 4

    bad = trusted.set_column(1, "group", pa.array(["a", "b", "c", "d"]))
    pq.write_table(bad, tmp_path / "t.parquet")
    with pytest.raises(IngestError, match=r"column 'group' is int64 in .*m.parquet but string in the trusted file"):
        ingest(IngestParams(source=str(tmp_path / "m.parquet"), trusted=str(tmp_path / "t.parquet")), seed=0)


def test_user_columns_reach_the_exported_manifests(tmp_path: Path):
    """ingest a feature table with a user column, embed, weight, export: curated, train and
    flags carry it, row for row."""
    rng = np.random.default_rng(0)
    n, d = 300, 8
    labels = rng.integers(0, 3, n)
    x = (np.eye(3, d)[labels] * 3 + rng.normal(size=(n, d))).astype(np.float32)
    split = np.where(np.arange(n) < 30, "trusted", "train")
    labels[(split == "train") & (rng.random(n) < 0.3)] = 0
    group = [f"g{i % 7}" for i in range(n)]
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(n)], "label": labels, "split": split,
                             "embedding": list(x), "group": group}), tmp_path / "f.parquet")
    run = str(tmp_path / "run")
    for args in (["ingest", str(tmp_path / "f.parquet"), "--features", "embedding"],
                 ["embed", "--model", "features", "--folds", "3"],
                 ["weight", "--rounds", "1", "--epochs", "2"],
                 ["export"]):
        res = CliRunner().invoke(main, [*args, "--run-dir", run, "-q", "--threads", "1"] if args[0] != "ingest"
                                 else [*args, "--run-dir", run, "-q"])
        assert res.exit_code == 0, res.output
    by_id = dict(zip([f"r{i}" for i in range(n)], group))
    for name in (schema.CURATED, schema.TRAIN_MANIFEST, schema.FLAGS):
        t = pq.read_table(Path(run) / "export" / name)
        assert "group" in t.column_names, name
        assert t["group"].to_pylist() == [by_id[i] for i in t["id"].to_pylist()], name
    assert pq.read_table(Path(run) / "export" / schema.FLAGS).num_rows > 0
