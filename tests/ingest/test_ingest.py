"""ingest: every source, the trusted split, noise injection, imbalance, and every bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from tests.conftest import png_bytes
from winnow.stages.common import schema
from winnow.stages.common.arrow import class_names, vectors_from_arrow
from winnow.stages.ingest import IngestError, IngestParams, ingest
from winnow.stages.ingest.noise import imbalance_keep, inject_noise, parse_noise


def _split(m: pa.Table) -> np.ndarray:
    return np.asarray(m["split"].to_pylist(), dtype=object)


def test_digits_with_noise_and_trusted_sample():
    r = ingest(IngestParams(source="digits", inject_noise="uniform:0.4", trusted_per_class=10), seed=0)
    m = r.manifest
    assert m.schema.equals(schema.MANIFEST_SCHEMA, check_metadata=False)
    assert m.num_rows == 1797 and class_names(m) == [str(i) for i in range(10)]
    split = _split(m)
    labels, truth = m["label"].to_numpy(), m["true_label"].to_numpy()
    assert all((labels[split == schema.TRUSTED] == c).sum() == 10 for c in range(10))
    train = split == schema.TRAIN
    assert (labels[~train] == truth[~train]).all(), "trusted and test rows are never corrupted"
    flipped = (labels[train] != truth[train]).mean()
    assert flipped == pytest.approx(0.4, abs=0.001), "uniform:0.4 flips exactly 40% of the train rows"
    assert (split == schema.TEST).sum() == pytest.approx(0.2 * 1797, abs=10)
    assert m["error"].null_count == m.num_rows


def test_same_seed_same_manifest_other_seed_differs():
    p = IngestParams(source="digits", inject_noise="pair:0.3", trusted_per_class=5)
    a, b, c = ingest(p, seed=1).manifest, ingest(p, seed=1).manifest, ingest(p, seed=2).manifest
    assert a.equals(b)
    assert not a.equals(c)


def test_image_folder_with_a_corrupt_file(image_folder: Path):
    (image_folder / "dog" / "broken.png").write_bytes(b"not a png")
    r = ingest(IngestParams(source=str(image_folder), trusted_per_class=1), seed=0)
    m = r.manifest
    assert class_names(m) == ["cat", "dog", "eel"]
    assert m.num_rows == 13, "the unreadable image stays in the manifest"
    row = m["id"].to_pylist().index("dog/broken.png")
    assert "cannot decode image" in m["error"][row].as_py() and "0x" not in m["error"][row].as_py()
    assert r.summary["errors"] == 1
    assert _split(m)[row] == schema.TRAIN, "a broken row is never sampled as trusted"
    assert all(Path(u).is_absolute() for u in m["uri"].to_pylist())


def _manifest_file(tmp_path: Path, kind: str, labels: list, **extra) -> Path:
    n = len(labels)
    cols = {"id": [f"x{i}" for i in range(n)], "label": labels, **extra}
    path = tmp_path / f"m.{kind}"
    if kind == "parquet":
        pq.write_table(pa.table(cols), path)
    else:
        pacsv.write_csv(pa.table(cols), path)
    return path


def test_parquet_manifest_with_image_bytes_and_split(tmp_path: Path):
    labels = ["a", "b"] * 6
    split = ["trusted", "trusted"] + ["train"] * 8 + ["test", "test"]
    path = _manifest_file(tmp_path, "parquet", labels, image=[png_bytes(i) for i in range(12)], split=split)
    m = ingest(IngestParams(source=str(path)), seed=0).manifest
    assert class_names(m) == ["a", "b"]
    assert m["label"].to_pylist() == [0, 1] * 6
    assert _split(m).tolist() == split
    assert m["true_label"].null_count == 12, "no noise injected: the truth is unknown"


def test_csv_manifest_with_relative_uris(tmp_path: Path):
    (tmp_path / "img").mkdir()
    for i in range(6):
        (tmp_path / "img" / f"{i}.png").write_bytes(png_bytes(i))
    path = _manifest_file(tmp_path, "csv", [0, 1, 0, 1, 0, 1], uri=[f"img/{i}.png" for i in range(5)] + ["img/missing.png"])
    m = ingest(IngestParams(source=str(path), trusted_per_class=1), seed=0).manifest
    assert m["uri"][0].as_py() == str((tmp_path / "img" / "0.png").resolve())
    assert "not found" in m["error"][5].as_py()


def test_trusted_manifest_file(tmp_path: Path):
    main = _manifest_file(tmp_path, "parquet", ["a", "b"] * 3, image=[png_bytes(i) for i in range(6)])
    t = tmp_path / "clean.parquet"
    pq.write_table(pa.table({"id": ["t0", "t1"], "label": ["b", "a"], "image": [png_bytes(9), png_bytes(8)]}), t)
    m = ingest(IngestParams(source=str(main), trusted=str(t)), seed=0).manifest
    assert _split(m)[-2:].tolist() == [schema.TRUSTED] * 2
    assert m["label"].to_pylist()[-2:] == [1, 0]


def test_feature_table_gives_features(tmp_path: Path):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(8, 4)).astype(np.float32)
    rows = [list(map(float, e)) for e in emb]
    rows[3] = [float("nan")] * 4
    path = tmp_path / "feats.parquet"
    pq.write_table(pa.table({"id": list("abcdefgh"), "label": [0, 1] * 4, "embedding": rows,
                             "split": ["trusted"] * 2 + ["train"] * 6}), path)
    r = ingest(IngestParams(source=str(path), features="embedding"), seed=0)
    assert r.features is not None and r.manifest.num_rows == 8
    v = vectors_from_arrow(r.features[schema.EMBEDDING])
    np.testing.assert_array_equal(v[0], emb[0])
    assert np.isnan(v[3]).all() and "NaN" in r.manifest["error"][3].as_py()


@pytest.mark.parametrize("fixed", [False, True])
def test_feature_table_across_row_groups_keeps_each_rows_vector_and_reason(tmp_path: Path, monkeypatch, fixed: bool):
    """Read a batch of rows at a time: bad rows in several batches, a last partial batch; a
    variable-length list column (its most common length) and a fixed-size one (its type's)."""
    from winnow.stages.ingest import sources

    monkeypatch.setattr(sources, "FEATURE_BATCH_ROWS", 7)  # batches of 7, 7, 7 and 2
    rng = np.random.default_rng(1)
    n, d = 23, 3
    emb = rng.normal(size=(n, d)).astype(np.float32)
    rows: list = [list(map(float, e)) for e in emb]
    if not fixed:  # (pyarrow cannot read back a null in a Parquet fixed-size list column)
        rows[2] = None
        rows[9] = [1.0, 2.0]  # wrong length, in the second batch
    rows[16] = [float("inf")] * d
    path = tmp_path / "feats.parquet"
    typ = pa.list_(pa.float32(), d) if fixed else pa.list_(pa.float64())
    table = pa.table({"id": [f"r{i}" for i in range(n)], "label": [i % 2 for i in range(n)],
                      "embedding": pa.array(rows, typ)})
    pq.write_table(table, path, row_group_size=10)  # batches cross the row groups too
    r = ingest(IngestParams(source=str(path), features="embedding", trusted_per_class=2), seed=0)
    v = vectors_from_arrow(r.features[schema.EMBEDDING])
    errors = r.manifest["error"].to_pylist()
    bad = {16: "NaN or Inf", **({} if fixed else {2: "is null", 9: "has 2 values, expected 3"})}
    for i in range(n):
        if i in bad:
            assert bad[i] in errors[i] and np.isnan(v[i]).all()
        else:
            assert errors[i] is None
            np.testing.assert_array_equal(v[i], emb[i])


def test_cifar_parquet_is_just_a_manifest():
    src = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "cifar10" / "train.parquet"
    if not src.exists():
        pytest.skip("../shared/data/cifar10 is not present")
    r = ingest(IngestParams(source=str(src), max_rows=300, trusted_per_class=2, inject_noise="uniform:0.4"), seed=0)
    assert r.manifest.num_rows == 300 and r.summary["errors"] == 0
    assert r.manifest["id"][0].as_py() == "0"


def test_imbalance_profile():
    r = ingest(IngestParams(source="digits", imbalance=10, trusted_per_class=5), seed=0)
    m = r.manifest
    train = _split(m) == schema.TRAIN
    counts = np.bincount(m["label"].to_numpy()[train], minlength=10)
    assert counts[0] / counts[9] == pytest.approx(10, rel=0.15)
    assert (np.diff(counts) <= 1).all(), "the exponential profile decreases with the class index"


# --- bad input: a clear error, nothing written --------------------------------------------------------


def test_duplicate_ids(tmp_path: Path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "a"], "label": [0, 1, 0], "image": [png_bytes(1)] * 3}), path)
    with pytest.raises(IngestError, match="duplicate id.*'a'"):
        ingest(IngestParams(source=str(path), allow_missing_trusted=True))


def test_unknown_label_names_are_listed(tmp_path: Path):
    main = _manifest_file(tmp_path, "parquet", ["a", "b"], image=[png_bytes(1)] * 2)
    t = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": ["t0", "t1"], "label": ["zebra", "yak"], "image": [png_bytes(1)] * 2}), t)
    with pytest.raises(IngestError, match=r"unknown label name\(s\) \['yak', 'zebra'\]"):
        ingest(IngestParams(source=str(main), trusted=str(t)))


def test_class_without_trusted_example(image_folder: Path):
    with pytest.raises(IngestError, match=r"\['cat', 'dog', 'eel'\] have no trusted example"):
        ingest(IngestParams(source=str(image_folder)))
    r = ingest(IngestParams(source=str(image_folder), allow_missing_trusted=True))
    assert r.manifest.num_rows == 12


def test_empty_input(tmp_path: Path):
    path = tmp_path / "e.parquet"
    pq.write_table(pa.table({"id": pa.array([], pa.string()), "label": pa.array([], pa.int64()),
                             "image": pa.array([], pa.binary())}), path)
    with pytest.raises(IngestError, match="no rows"):
        ingest(IngestParams(source=str(path)))


@pytest.mark.parametrize(
    ("spec", "message"),
    [("gaussian:0.4", "KIND"), ("uniform:1.5", r"\[0, 1\]"), ("uniform:x", "number"), ("pair:0.4:2", "only background")],
)
def test_bad_noise_spec(spec: str, message: str):
    with pytest.raises(ValueError, match=message):
        parse_noise(spec)


def test_missing_source_and_columns(tmp_path: Path):
    with pytest.raises(IngestError, match="does not exist"):
        ingest(IngestParams(source=str(tmp_path / "nope.parquet")))
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"id": ["a"], "label": [0]}), path)
    with pytest.raises(IngestError, match="'uri' column"):
        ingest(IngestParams(source=str(path)))


def test_noise_always_flips_and_background_targets_one_class():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=1000)
    rows = np.arange(1000)
    for kind in ("uniform", "pair", "background"):
        noisy = inject_noise(labels, rows, kind=kind, rate=0.3, num_classes=5, background=2, rng=np.random.default_rng(1))
        changed = noisy != labels
        assert changed.sum() == 300
        if kind == "pair":
            assert ((labels[changed] + 1) % 5 == noisy[changed]).all()
        if kind == "background":
            assert (noisy[changed] == 2).all()


def test_imbalance_keep_never_empties_a_class():
    labels = np.repeat(np.arange(3), 10)
    kept = imbalance_keep(labels, np.arange(30), factor=1000, num_classes=3, rng=np.random.default_rng(0))
    assert set(labels[kept]) == {0, 1, 2}


# --- labels, cells and options as users write them ------------------------------------------------


def test_trusted_image_folder_is_matched_by_class_name(image_folder: Path, tmp_path: Path):
    trusted = tmp_path / "clean"
    for name, value in (("dog", 200), ("eel", 220)):
        (trusted / name).mkdir(parents=True)
        (trusted / name / "t.png").write_bytes(png_bytes(value, mode="RGB"))
    m = ingest(IngestParams(source=str(image_folder), trusted=str(trusted), allow_missing_trusted=True)).manifest
    rows = _split(m) == schema.TRUSTED
    assert np.asarray(m["label_name"].to_pylist())[rows].tolist() == ["dog", "eel"], "by name, not by folder index"
    assert class_names(m) == ["cat", "dog", "eel"]
    (trusted / "yak").mkdir()
    (trusted / "yak" / "t.png").write_bytes(png_bytes(1, mode="RGB"))
    with pytest.raises(IngestError, match=r"unknown label name\(s\) \['yak'\]"):
        ingest(IngestParams(source=str(image_folder), trusted=str(trusted), allow_missing_trusted=True))


def test_image_folder_source_with_trusted_names_or_indices(image_folder: Path, tmp_path: Path):
    for labels, expected in ((["eel", "cat", "dog"], [2, 0, 1]), ([2, 0, 1], [2, 0, 1])):
        t = tmp_path / "t.parquet"
        pq.write_table(pa.table({"id": ["t0", "t1", "t2"], "label": labels, "image": [png_bytes(5)] * 3}), t)
        m = ingest(IngestParams(source=str(image_folder), trusted=str(t))).manifest
        assert m["label"].to_pylist()[-3:] == expected


def _csv(tmp_path: Path, text: str) -> Path:
    (tmp_path / "img").mkdir(exist_ok=True)
    for i in range(4):
        (tmp_path / "img" / f"{i}.png").write_bytes(png_bytes(10 * i))
    path = tmp_path / "m.csv"
    path.write_text(text)
    return path


def test_csv_empty_cells_are_missing(tmp_path: Path):
    path = _csv(tmp_path, "id,uri,label,split\na,img/0.png,cat,trusted\nb,img/1.png,dog,trusted\n"
                          "c,img/2.png,,\nd,img/3.png,dog,\n")
    m = ingest(IngestParams(source=str(path))).manifest
    assert class_names(m) == ["cat", "dog"], "an empty label is no class"
    assert m["error"].to_pylist() == [None, None, "label is missing", None], "the row is kept with its error"
    assert _split(m).tolist() == ["trusted", "trusted", "train", "train"], "an empty split is unspecified"


def test_csv_ids_and_label_names_are_kept_as_written(tmp_path: Path):
    path = _csv(tmp_path, "id,uri,label\n00000,img/0.png,03\n001,img/1.png,07\n1,img/2.png,03\n0.5,img/3.png,07\n")
    m = ingest(IngestParams(source=str(path), allow_missing_trusted=True)).manifest
    assert m["id"].to_pylist() == ["00000", "001", "1", "0.5"]
    assert class_names(m) == ["03", "07"] and m["label"].to_pylist() == [0, 1, 0, 1]


def test_csv_integer_labels_as_pandas_writes_them_are_indices(tmp_path: Path):
    path = _csv(tmp_path, "id,uri,label\na,img/0.png,0.0\nb,img/1.png,2.0\nc,img/2.png,\nd,img/3.png,2.0\n")
    m = ingest(IngestParams(source=str(path), allow_missing_trusted=True)).manifest
    assert class_names(m) == ["0", "1", "2"] and m["label"].to_pylist() == [0, 2, None, 2]
    assert m["error"][2].as_py() == "label is missing"


def test_float_and_categorical_labels(tmp_path: Path):
    images = [png_bytes(i) for i in range(4)]
    path = tmp_path / "f.parquet"
    pq.write_table(pa.table({"id": list("abcd"), "label": [0.0, 1.0, float("nan"), 1.0], "image": images}), path)
    m = ingest(IngestParams(source=str(path), allow_missing_trusted=True)).manifest
    assert m["label"].to_pylist() == [0, 1, None, 1] and m["error"][2].as_py() == "label is missing"
    pq.write_table(pa.table({"id": list("abcd"), "label": [0.0, 1.5, 1.0, 2.5], "image": images}), path)
    with pytest.raises(IngestError, match=r"row 1 \(id 'b'\) has label 1.5, not a whole number"):
        ingest(IngestParams(source=str(path), allow_missing_trusted=True))
    cats = pa.array(["dog", "cat", None, "dog"]).dictionary_encode()
    pq.write_table(pa.table({"id": list("abcd"), "label": cats, "image": images}), path)
    m = ingest(IngestParams(source=str(path), allow_missing_trusted=True)).manifest
    assert class_names(m) == ["cat", "dog"] and m["label"].to_pylist() == [1, 0, None, 1]
    pq.write_table(pa.table({"id": list("abcd"), "label": [True, False, True, False], "image": images}), path)
    with pytest.raises(IngestError, match=r"got bool \(row 0, id 'a', has True\); convert the column"):
        ingest(IngestParams(source=str(path), allow_missing_trusted=True))


def test_feature_table_with_max_rows_keeps_row_errors_aligned(tmp_path: Path):
    rows = [[float(i), 1.0] for i in range(6)]
    rows[2] = [float("nan"), 1.0]
    path = tmp_path / "feats.parquet"
    pq.write_table(pa.table({"id": list("abcdef"), "label": [0, 1] * 3, "emb": rows}), path)
    r = ingest(IngestParams(source=str(path), features="emb", max_rows=3, allow_missing_trusted=True))
    assert r.manifest.num_rows == 3
    assert [e is not None for e in r.manifest["error"].to_pylist()] == [False, False, True]


def test_hugging_face_image_struct(tmp_path: Path):
    (tmp_path / "2.png").write_bytes(png_bytes(2))
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    images = pa.array([{"bytes": png_bytes(0), "path": "0.png"}, {"bytes": png_bytes(1), "path": None},
                       {"bytes": None, "path": "2.png"}, None], image_type)
    path = tmp_path / "hf.parquet"
    pq.write_table(pa.table({"id": list("abcd"), "image": images, "label": [0, 1, 0, 1]}), path)
    m = ingest(IngestParams(source=str(path), allow_missing_trusted=True)).manifest
    assert m["uri"].to_pylist() == [None, None, str((tmp_path / "2.png").resolve()), None], "a path only without bytes"
    assert m["image"][0].as_py() == png_bytes(0)
    assert m["error"].to_pylist() == [None, None, None, "row has neither image bytes nor uri"]
    pq.write_table(pa.table({"id": ["a"], "image": [[1, 2]], "label": [0]}), path)
    with pytest.raises(IngestError, match="column 'image' must hold encoded image bytes"):
        ingest(IngestParams(source=str(path)))


def test_header_only_csv(tmp_path: Path):
    path = _csv(tmp_path, "id,uri,label\n")
    with pytest.raises(IngestError, match="m.csv has no rows"):
        ingest(IngestParams(source=str(path)))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"test_fraction": 1.5}, r"--test-fraction must be in \[0, 1\)"),
        ({"test_fraction": -0.5}, r"--test-fraction must be in \[0, 1\)"),
        ({"imbalance": 0.5}, r"--imbalance must be >= 1 \(a max/min class ratio"),
        ({"max_rows": -5}, r"--max-rows must be >= 0 \(0 = all rows\)"),
        ({"decode_workers": -1}, r"--decode-workers must be >= 0 \(0 = one per core\)"),
        ({"trusted_per_class": -1}, "--trusted-per-class must be >= 0"),
        ({"inject_noise": "gaussian:0.4"}, "--inject-noise"),
    ],
)
def test_bad_options_name_the_option(options: dict, message: str):
    with pytest.raises(ValueError, match=message):
        IngestParams(**options)


def test_referenced_image_files_resolve_as_ingest_does(tmp_path: Path):
    from winnow.stages.ingest.sources import referenced_image_files

    (tmp_path / "m.tsv").write_text("uri\tlabel\nimgs/a.png\tcat\n\tdog\n")
    assert referenced_image_files(tmp_path / "m.tsv") == [(tmp_path / "imgs" / "a.png").resolve()]
    pq.write_table(pa.table({"label": [1]}), tmp_path / "f.parquet")
    assert referenced_image_files(tmp_path / "f.parquet") == [] and referenced_image_files(tmp_path / "x.txt") == []
