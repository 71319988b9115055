"""The bad-input corpus: inputs users get wrong, and what winnow does with each.

Three promises, checked case by case through the CLI (click's runner, in process):

- **nothing lost**: a row that cannot be used stays in the manifest with its ``error``
  (ingest keeps every input row; ``winnow run`` keeps it through export);
- **nothing left behind**: a refused command leaves no stage folder, temporary folder or lock;
- **every refusal says who and how**: it names its culprit (file, row, id or option) and the fix,
  exits 1 for bad input and 2 for bad usage, and never ends in a traceback.

Cases are tiny (12 rows of 8x8 images) so that the whole corpus runs in seconds.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from tests.conftest import png_bytes
from winnow.pipeline.cli import main
from winnow.stages.common.images import encode_png

N = 12
IDS = [f"x{i}" for i in range(N)]
SPLIT = ["trusted"] * 4 + ["train"] * (N - 4)  # x0..x3 trusted: two per class
QUICK = ["-q", "--threads", "1"]


# --- building inputs ------------------------------------------------------------------------------


def _images(n: int = N) -> list[bytes]:
    return [png_bytes(10 * i + 5) for i in range(n)]


def _cols(**changes: Any) -> dict[str, Any]:
    """The columns of a good manifest (id, label a/b, image bytes, split) with ``changes`` applied;
    a change to None drops the column."""
    cols: dict[str, Any] = {"id": list(IDS), "label": ["a", "b"] * (N // 2), "image": _images(), "split": list(SPLIT)}
    cols.update(changes)
    return {k: v for k, v in cols.items() if v is not None}


def _with(column: list[Any], **at: Any) -> list[Any]:
    """``column`` with the values of the rows named by ``at`` (``r5=...``) replaced."""
    out = list(column)
    for key, value in at.items():
        out[int(key[1:])] = value
    return out


def _parquet(tmp: Path, name: str = "m.parquet", **changes: Any) -> Path:
    path = tmp / name
    pq.write_table(pa.table(_cols(**changes)), path)
    return path


def _csv_rows(tmp: Path, *, uri: dict[int, str] | None = None, label: dict[int, str] | None = None) -> list[list[str]]:
    """Rows (id, label, uri, split) of a good CSV manifest whose images are files under tmp/img."""
    (tmp / "img").mkdir(exist_ok=True)
    rows = []
    for i in range(N):
        (tmp / "img" / f"{i}.png").write_bytes(png_bytes(10 * i + 5))
        rows.append([IDS[i], (label or {}).get(i, "ab"[i % 2]), (uri or {}).get(i, f"img/{i}.png"), SPLIT[i]])
    return rows


def _csv(tmp: Path, rows: list[list[str]], *, header: str = "id,label,uri,split", encoding: str = "utf-8",
         name: str = "m.csv") -> Path:
    path = tmp / name
    path.write_bytes((header + "\n" + "".join(",".join(r) + "\n" for r in rows)).encode(encoding))
    return path


def _folder(tmp: Path) -> Path:
    """photos/<a|b>/<i>.png: two classes of four 8x8 images."""
    root = tmp / "photos"
    for c in "ab":
        (root / c).mkdir(parents=True)
        for i in range(4):
            (root / c / f"{i}.png").write_bytes(png_bytes(40 * i + (5 if c == "a" else 25)))
    return root


def _file(path: Path, data: bytes) -> Path:
    """``path`` (its folder made) holding ``data``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _folder_with(tmp: Path, name: str, data: bytes) -> Path:
    """The two-class image folder plus the file ``name`` holding ``data``."""
    root = _folder(tmp)
    _file(root / name, data)
    return root


def _features(tmp: Path, name: str = "f.parquet", dim: int = 4, **at: Any) -> Path:
    rng = np.random.default_rng(0)
    vectors: list[Any] = [rng.normal(size=dim).tolist() for _ in range(N)]
    return _parquet(tmp, name, image=None, emb=_with(vectors, **at))


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width x height`` pixels and holds none: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + chunk(b"IEND", b"")


def _invoke(args: list[str]) -> Result:
    return CliRunner().invoke(main, args, prog_name="winnow")


def _text(res: Result) -> str:
    return " ".join(res.output.split())


def _ingest(source: Path | str, run: Path, *extra: str) -> list[str]:
    return ["ingest", str(source), "--run-dir", str(run), "--decode-workers", "1", *QUICK, *extra]


def _leftovers(run: Path) -> list[str]:
    """What a command must never leave in a run directory: temporaries, locks, stage folders
    without their ``stage.json`` (a stage is committed whole or not at all), and checkpoint
    folders under ``.work`` (none of these stages checkpoints: a finished or refused one has none)."""
    if not run.exists():
        return []
    found = [p.name for p in run.iterdir() if p.name.startswith((".tmp-", ".old-", ".lock-"))]
    found += [p.name for p in run.iterdir() if p.is_dir() and not p.name.startswith(".")
              and not (p / "stage.json").is_file()]
    found += [f".work/{p.name}" for p in (run / ".work").glob("*")]
    return found


# --- rows that cannot be used: kept, with their error ---------------------------------------------


@dataclass(frozen=True)
class RowCase:
    """An input with bad rows that ingest must keep: ``bad`` maps each bad id to words of its error."""

    build: Callable[[Path, Path], list[str]]  # (tmp, run dir) -> CLI args
    bad: dict[str, str]
    rows: int = N


ROW_CASES: dict[str, RowCase] = {
    "corrupt image bytes": RowCase(
        lambda t, r: _ingest(_parquet(t, image=_with(_images(), r5=b"not a png")), r), {"x5": "cannot decode image"}),
    "truncated png": RowCase(
        lambda t, r: _ingest(_parquet(t, image=_with(_images(), r5=png_bytes(1, size=32)[:60])), r),
        {"x5": "cannot decode image"}),
    "empty image bytes": RowCase(
        lambda t, r: _ingest(_parquet(t, image=_with(_images(), r5=b"")), r), {"x5": "cannot decode image"}),
    "null image, no uri column": RowCase(
        lambda t, r: _ingest(_parquet(t, image=_with(_images(), r5=None)), r),
        {"x5": "row has neither image bytes nor uri"}),
    "decompression bomb": RowCase(
        lambda t, r: _ingest(_parquet(t, image=_with(_images(), r5=_png_header(20_000, 20_000))), r),
        {"x5": "DecompressionBombError"}),
    "16x16 image among 8x8": RowCase(
        lambda t, r: _ingest(_parquet(t, image=_with(_images(), r5=png_bytes(3, size=16))), r),
        {"x5": "image is 16x16 px (height x width) but the run's images are 8x8"}),
    "8x12 image among 8x8": RowCase(
        lambda t, r: _ingest(_parquet(t, image=_with(_images(), r6=encode_png(np.zeros((8, 12), np.uint8)))), r),
        {"x6": "pass --image-size 8x8"}),
    "missing label": RowCase(
        lambda t, r: _ingest(_parquet(t, label=_with(["a", "b"] * 6, r5=None)), r), {"x5": "label is missing"}),
    "NaN float label": RowCase(
        lambda t, r: _ingest(_parquet(t, label=_with([0.0, 1.0] * 6, r5=float("nan"))), r),
        {"x5": "label is missing"}),
    "csv: image file missing": RowCase(
        lambda t, r: _ingest(_csv(t, _csv_rows(t, uri={5: "img/gone.png"})), r), {"x5": "image file not found"}),
    "csv: uri names a folder": RowCase(
        lambda t, r: _ingest(_csv(t, _csv_rows(t, uri={5: "img"})), r), {"x5": "image file not found"}),
    "csv: empty uri cell": RowCase(
        lambda t, r: _ingest(_csv(t, _csv_rows(t, uri={5: ""})), r), {"x5": "row has neither image bytes nor uri"}),
    "csv: empty label cell": RowCase(
        lambda t, r: _ingest(_csv(t, _csv_rows(t, label={5: ""})), r), {"x5": "label is missing"}),
    "folder: text file named .png": RowCase(
        lambda t, r: _ingest(_folder_with(t, "b/notes.png", b"hello"), r, "--trusted-per-class", "1"),
        {"b/notes.png": "cannot decode image"}, rows=9),
    "folder: empty file": RowCase(
        lambda t, r: _ingest(_folder_with(t, "a/empty.png", b""), r, "--trusted-per-class", "1"),
        {"a/empty.png": "cannot decode image"}, rows=9),
    "hugging face struct: null": RowCase(
        lambda t, r: _ingest(_parquet(t, image=pa.array(
            _with([{"bytes": b, "path": None} for b in _images()], r5=None),
            pa.struct([("bytes", pa.binary()), ("path", pa.string())]))), r),
        {"x5": "row has neither image bytes nor uri"}),
    "hugging face struct: missing path": RowCase(
        lambda t, r: _ingest(_parquet(t, image=pa.array(
            _with([{"bytes": b, "path": None} for b in _images()], r5={"bytes": None, "path": "gone.png"}),
            pa.struct([("bytes", pa.binary()), ("path", pa.string())]))), r),
        {"x5": "image file not found"}),
    "features: null vector": RowCase(
        lambda t, r: _ingest(_features(t, r5=None), r, "--features", "emb"), {"x5": "emb is null"}),
    "features: short vector": RowCase(
        lambda t, r: _ingest(_features(t, r5=[1.0, 2.0, 3.0]), r, "--features", "emb"),
        {"x5": "emb has 3 values, expected 4"}),
    "features: NaN": RowCase(
        lambda t, r: _ingest(_features(t, r5=[1.0, float("nan"), 0.0, 0.0]), r, "--features", "emb"),
        {"x5": "NaN or Inf"}),
    "features: Inf": RowCase(
        lambda t, r: _ingest(_features(t, r5=[1.0, float("inf"), 0.0, 0.0]), r, "--features", "emb"),
        {"x5": "NaN or Inf"}),
    "trusted file: corrupt image": RowCase(
        lambda t, r: _ingest(_parquet(t), r, "--trusted", str(_parquet(
            t, "t.parquet", id=["t0", "t1", "t2", "t3"], label=["a", "b", "a", "b"], split=None,
            image=_with(_images(4), r2=b"junk")))),
        {"t2": "cannot decode image"}, rows=N + 4),
    "four kinds of bad row at once": RowCase(
        lambda t, r: _ingest(_parquet(
            t, image=_with(_images(), r5=b"junk", r7=png_bytes(1, size=16), r8=None),
            label=_with(["a", "b"] * 6, r6=None)), r),
        {"x5": "cannot decode image", "x6": "label is missing", "x7": "image is 16x16", "x8": "neither image"}),
}


@pytest.mark.parametrize("name", ROW_CASES)
def test_a_row_that_cannot_be_used_is_kept_with_its_error(tmp_path: Path, name: str):
    case = ROW_CASES[name]
    run = tmp_path / "run"
    res = _invoke(case.build(tmp_path, run))
    assert res.exit_code == 0, res.output
    manifest = pq.read_table(run / "ingest" / "manifest.parquet")
    assert manifest.num_rows == case.rows, "no row is lost"
    errors = dict(zip(manifest["id"].to_pylist(), manifest["error"].to_pylist()))
    for row_id, words in case.bad.items():
        assert words in (errors[row_id] or ""), (row_id, errors[row_id])
    assert sorted(i for i, e in errors.items() if e is not None) == sorted(case.bad), "only the bad rows have an error"
    summary = json.loads((run / "ingest" / "summary.json").read_text())
    assert summary["errors"] == len(case.bad)
    assert _leftovers(run) == []


def test_image_size_resizes_an_odd_image_instead(tmp_path: Path):
    """The other half of the one-size rule: --image-size makes every image that size, so that the
    16x16 row is usable rather than an error."""
    from PIL import Image

    from winnow.stages.common.images import open_image

    source = _parquet(tmp_path, image=_with(_images(), r5=png_bytes(3, size=16)))
    run = tmp_path / "run"
    res = _invoke(_ingest(source, run, "--image-size", "8x8"))
    assert res.exit_code == 0, res.output
    manifest = pq.read_table(run / "ingest" / "manifest.parquet")
    assert manifest["error"].null_count == N
    sizes = {open_image(b, None).size for b in manifest["image"].to_pylist()}
    assert sizes == {(8, 8)}
    assert manifest["image"][0].as_py() == _images()[0], "an image of the right size is stored as given"
    assert Image.open(io.BytesIO(manifest["image"][5].as_py())).getpixel((4, 4)) == 3
    summary = json.loads((run / "ingest" / "summary.json").read_text())
    assert summary["image_size"] == [8, 8] and summary["resized"] == 1


# --- refusals: exit 1 (bad input) or 2 (bad usage), naming the culprit and the fix -----------------


@dataclass(frozen=True)
class Refusal:
    """An input or usage that must be refused: ``culprit`` and ``fix`` are words the message must hold."""

    build: Callable[[Path, Path], list[str]]  # (tmp, run dir) -> CLI args
    code: int
    culprit: list[str]
    fix: list[str]


def _int_labels(**at: Any) -> list[Any]:
    return _with([0, 1] * (N // 2), **at)


def _toml(tmp: Path, run: Path, body: str) -> list[str]:
    path = tmp / "c.toml"
    path.write_text(f'run_dir = "{run}"\n{body}\n')
    return ["run", str(path), "-q"]


def _trusted_parquet(tmp: Path, **changes: Any) -> str:
    cols: dict[str, Any] = {"id": ["t0", "t1"], "label": ["a", "b"], "image": _images(2), "split": None}
    cols.update(changes)
    return str(_parquet(tmp, "t.parquet", **cols))


def _usage(option: str, value: str, culprit: list[str], fix: list[str]) -> Refusal:
    """A bad ``option value`` on the ingest command line: a usage error, exit 2."""
    return Refusal(lambda t, r: _ingest("digits", r, option, value), 2, culprit, fix)


def _config(body: str, culprit: list[str], fix: list[str]) -> Refusal:
    """A bad ``body`` of a TOML config given to ``winnow run``: bad input, exit 1."""
    return Refusal(lambda t, r: _toml(t, r, body), 1, culprit, fix)


REFUSALS: dict[str, Refusal] = {
    # -- labels and classes
    "one class": Refusal(
        lambda t, r: _ingest(_parquet(t, label=["a"] * N), r), 1,
        ["m.parquet", "only one class, 'a'"], ["add rows of another class"]),
    "one class in the rows --max-rows reads": Refusal(
        lambda t, r: _ingest(_parquet(t, label=["a"] * 6 + ["b"] * 6), r, "--max-rows", "6"), 1,
        ["m.parquet", "only one class, 'a'"], ["--max-rows 6 read only the first 6 rows: raise it"]),
    "one class with usable rows": Refusal(
        lambda t, r: _ingest(_parquet(t, image=[b if i % 2 == 0 else b"junk" for i, b in enumerate(_images())]), r), 1,
        ["m.parquet", "only one class, 'a'", "['b'] have no usable row"], ["add rows of another class"]),
    "no usable row": Refusal(
        lambda t, r: _ingest(_parquet(t, image=[b"junk"] * N), r), 1,
        ["no usable row", "m.parquet row 0 (id 'x0')", "cannot decode image"], ["fix what the errors say"]),
    "every label missing": Refusal(
        lambda t, r: _ingest(_parquet(t, label=pa.nulls(N)), r), 1,
        ["m.parquet: no row has a label"], ["fill the 'label' column"]),
    "negative label": Refusal(
        lambda t, r: _ingest(_parquet(t, label=_int_labels(r5=-1)), r), 1,
        ["m.parquet row 5 (id 'x5') has label -1"], ["fix the label", "leave the cell empty"]),
    "negative label in a csv": Refusal(
        lambda t, r: _ingest(_csv(t, _csv_rows(t, label={i: "01"[i % 2] for i in range(N)} | {5: "-1"})), r), 1,
        ["m.csv row 5 (id 'x5') has label -1"], ["fix the label"]),
    "stray label 1000 among 0..1": Refusal(
        lambda t, r: _ingest(_parquet(t, label=_int_labels(r5=1000)), r), 1,
        ["m.parquet row 5 (id 'x5') has label 1000", "1001 classes of which 998 have no row"],
        ["fix the label", "class names"]),
    "sparse labels in the rows --max-rows reads": Refusal(
        lambda t, r: _ingest(_parquet(t, label=_int_labels(r1=9)), r, "--max-rows", "4"), 1,
        ["m.parquet row 1 (id 'x1') has label 9"], ["--max-rows 4 read only the first 4 rows: raise it"]),
    "label too large for int32": Refusal(
        lambda t, r: _ingest(_parquet(t, label=_int_labels(r5=2**40)), r), 1,
        ["m.parquet: row 5 (id 'x5') has label 1099511627776"], ["fix the label"]),
    "fractional label": Refusal(
        lambda t, r: _ingest(_parquet(t, label=_with([0.0, 1.0] * 6, r5=1.5)), r), 1,
        ["m.parquet: row 5 (id 'x5') has label 1.5"], ["must be class indices"]),
    "boolean label column": Refusal(
        lambda t, r: _ingest(_parquet(t, label=[True, False] * 6), r), 1,
        ["m.parquet", "got bool (row 0, id 'x0', has True)"], ["convert the column", "astype(str)"]),
    "trusted label that is no source class": Refusal(
        lambda t, r: _ingest(_parquet(t), r, "--trusted", _trusted_parquet(t, label=["a", "zz"])), 1,
        ["t.parquet row 1 (id 't1') has label 'zz'"], ["fix the trusted file's labels", "add rows of those classes"]),
    "trusted index beyond the source's classes": Refusal(
        lambda t, r: _ingest(_folder(t), r, "--trusted", _trusted_parquet(t, label=[0, 7])), 1,
        ["t.parquet row 1 (id 't1') has label 7", "indices 0..1"], ["fix the label"]),
    "indices in the source, names in the trusted file": Refusal(
        lambda t, r: _ingest(_parquet(t, label=_int_labels()), r, "--trusted", _trusted_parquet(t)), 1,
        ["m.parquet row 0 (id 'x0') has 0", "t.parquet row 0 (id 't0') has 'a'"], ["write the same kind in both files"]),
    "a class without a trusted row": Refusal(
        lambda t, r: _ingest(_parquet(t, split=_with(SPLIT, r1="train", r3="train")), r), 1,
        ["['b'] have no trusted example"], ["--trusted-per-class N", "--allow-missing-trusted"]),
    "background class beyond the classes": Refusal(
        lambda t, r: _ingest(_parquet(t), r, "--inject-noise", "background:0.4:5"), 1,
        ["--inject-noise background:0.4:5", "background class 5"], ["give one of those indices"]),
    # -- ids and splits
    "duplicate id": Refusal(
        lambda t, r: _ingest(_parquet(t, id=_with(IDS, r5="x3")), r), 1,
        ["id 'x3' is", "m.parquet row 3 (id 'x3')", "m.parquet row 5 (id 'x3')"], ["rename or remove the duplicates"]),
    "id in both the source and the trusted file": Refusal(
        lambda t, r: _ingest(_parquet(t), r, "--trusted", _trusted_parquet(t, id=["t0", "x2"])), 1,
        ["m.parquet row 2 (id 'x2')", "t.parquet row 1 (id 'x2')"], ["rename or remove the duplicates"]),
    "missing id": Refusal(
        lambda t, r: _ingest(_parquet(t, id=_with(IDS, r5=None)), r), 1,
        ["m.parquet: row 5 has no id"], ["every row needs a unique id"]),
    "unknown split value": Refusal(
        lambda t, r: _ingest(_parquet(t, split=_with(SPLIT, r5="val")), r), 1,
        ["m.parquet row 5 (id 'x5') has split 'val'"], ["train, trusted, test", "rename the value"]),
    # -- files and columns
    "latin-1 csv": Refusal(
        lambda t, r: _ingest(_csv(t, _csv_rows(t, label={5: "caf\xe9"}), encoding="latin-1"), r), 1,
        ["m.csv: line 7 (row 5, id 'x5') is not UTF-8 text", "byte 0xe9"], ["save the file as UTF-8"]),
    "latin-1 csv header": Refusal(
        lambda t, r: _ingest(_csv(t, _csv_rows(t), header="id,label,uri,split,d\xe9tail", encoding="latin-1"), r), 1,
        ["m.csv: line 1 (the header) is not UTF-8"], ["save the file as UTF-8"]),
    "utf-16 csv": Refusal(
        lambda t, r: _ingest(_csv(t, _csv_rows(t), encoding="utf-16"), r), 1,
        ["m.csv is UTF-16"], ["save the file as UTF-8"]),
    "csv row with an extra field": Refusal(
        lambda t, r: _ingest(_csv(t, _with(_csv_rows(t), r5=[IDS[5], "b", "img/5.png", "train", "x"])), r), 1,
        ["m.csv: line 7 (row 5, id 'x5') has 5 fields but the header has 4"], ["quote a value"]),
    "no label column": Refusal(
        lambda t, r: _ingest(_parquet(t, label=None), r), 1,
        ["m.parquet: no 'label' column"], ["add one with each row's class index or class name"]),
    "no image or uri column": Refusal(
        lambda t, r: _ingest(_parquet(t, image=None), r), 1,
        ["m.parquet: needs a 'uri' column"], ["pass --features COLUMN"]),
    "image column of text": Refusal(
        lambda t, r: _ingest(_parquet(t, image=[f"{i}.png" for i in range(N)]), r), 1,
        ["m.parquet: column 'image' must hold encoded image bytes"], ["use a 'uri' column"]),
    "parquet with no rows": Refusal(
        lambda t, r: _ingest(_parquet(t, id=[], label=pa.array([], pa.string()), image=pa.array([], pa.binary()),
                                      split=None), r), 1,
        ["m.parquet has no rows"], ["write the rows"]),
    "csv with only a header": Refusal(
        lambda t, r: _ingest(_csv(t, []), r), 1, ["m.csv has no rows"], ["write the rows"]),
    "source that does not exist": Refusal(
        lambda t, r: _ingest(t / "nope.parquet", r), 1,
        ["nope.parquet' does not exist"], ["give 'digits', an image folder, or a .parquet/.csv file"]),
    "trusted file that does not exist": Refusal(
        lambda t, r: _ingest(_parquet(t), r, "--trusted", str(t / "nope.parquet")), 1,
        ["--trusted", "nope.parquet' does not exist"], ["give 'digits', an image folder, or a .parquet/.csv file"]),
    "unsupported file type": Refusal(
        lambda t, r: _ingest(_file(t / "m.json", b"{}"), r), 1,
        ["unsupported file type '.json'"], ["use .parquet or .csv"]),
    "corrupt parquet file": Refusal(
        lambda t, r: _ingest(_file(t / "m.parquet", b"PAR1 not really"), r), 1,
        ["cannot read", "m.parquet"], ["check that it is a Parquet or CSV file"]),
    "image folder without class folders": Refusal(
        lambda t, r: _ingest(_file(t / "flat" / "0.png", png_bytes(1)).parent, r), 1,
        ["flat has no class sub-folders"], ["expected", "/<class>/<image file>"]),
    # -- feature tables
    "features: no such column": Refusal(
        lambda t, r: _ingest(_features(t), r, "--features", "nope"), 1,
        ["f.parquet: --features 'nope' is not a column"], ["columns: id, label, split, emb"]),
    "features: not a list column": Refusal(
        lambda t, r: _ingest(_parquet(t, "f.parquet", image=None, emb=[1.0] * N), r, "--features", "emb"), 1,
        ["f.parquet: feature column 'emb' must be a list of floats, got double"], ["one list of floats per row"]),
    "features: every vector null": Refusal(
        lambda t, r: _ingest(_parquet(t, "f.parquet", image=None, emb=pa.nulls(N, pa.list_(pa.float32()))), r,
                             "--features", "emb"), 1,
        ["f.parquet: feature column 'emb' has no non-null vector"], ["one list of floats per row"]),
    "features: trusted table of another size": Refusal(
        lambda t, r: _ingest(_features(t), r, "--features", "emb", "--trusted", str(_parquet(
            t, "t.parquet", id=["t0", "t1"], label=["a", "b"], image=None, split=None, emb=[[0.0] * 3] * 2))), 1,
        ["f.parquet has 4 values per row", "t.parquet 3"], ["compute both with the same model"]),
    "features: given a folder": Refusal(
        lambda t, r: _ingest(_folder(t), r, "--features", "emb"), 1,
        ["--features needs a Parquet feature table, not a folder"], ["drop --features"]),
    "features: given a csv": Refusal(
        lambda t, r: _ingest(_csv(t, _csv_rows(t)), r, "--features", "emb"), 1,
        ["--features needs a Parquet feature table; CSV cannot hold vectors"], ["write the table as Parquet"]),
    # -- options on the command line: bad usage, exit 2
    "--image-size that is no size": _usage("--image-size", "8by8", ["--image-size '8by8'"], ["expected HEIGHTxWIDTH"]),
    "--image-size of zero": _usage("--image-size", "0x8", ["--image-size '0x8'"], ["each 1..8192"]),
    "--image-size with --features": Refusal(
        lambda t, r: _ingest(_features(t), r, "--features", "emb", "--image-size", "8"), 2,
        ["--image-size", "--features"], ["drop one of them"]),
    "--inject-noise of an unknown kind": _usage(
        "--inject-noise", "gauss:0.1", ["--inject-noise 'gauss:0.1'"], ["expected KIND:RATE"]),
    "--inject-noise rate above 1": _usage(
        "--inject-noise", "uniform:1.5", ["--inject-noise 'uniform:1.5'"], ["RATE must be in [0, 1]"]),
    "--test-fraction of 1.5": _usage("--test-fraction", "1.5", ["--test-fraction"], ["must be in [0, 1)"]),
    "--imbalance below 1": _usage("--imbalance", "0.5", ["--imbalance"], ["must be >= 1"]),
    "--trusted-per-class negative": _usage("--trusted-per-class", "-1", ["--trusted-per-class"], ["must be >= 0"]),
    "--trusted-per-class not a number": _usage(
        "--trusted-per-class", "many", ["'--trusted-per-class'", "'many'"], ["is not a valid integer"]),
    "--max-rows negative": _usage("--max-rows", "-5", ["--max-rows"], ["must be >= 0 (0 = all rows)"]),
    "unknown option": _usage("--colour", "red", ["No such option '--colour'"], ["winnow ingest --help"]),
    "--device that does not exist": _usage("--device", "gpu", ["'--device'", "'gpu'"], ["'auto', 'cpu', 'cuda'"]),
    "--threads negative": _usage("--threads", "-1", ["'--threads'", "-1"], ["x>=0"]),
    "select --method unknown": Refusal(
        lambda t, r: ["select", "--run-dir", str(r), "--method", "kmeans"], 2,
        ["'--method'", "'kmeans'"], ["'facility-location', 'set-cover'"]),
    # -- configs: a file the user wrote, so bad input, exit 1
    "config: source as a list": _config(
        '[ingest]\nsource = ["digits"]', ["config [ingest]: option 'source'", "got ['digits']"], ['write source = "digits"']),
    "config: trusted as a number": _config(
        "[ingest]\ntrusted = 5", ["config [ingest]: option 'trusted'", "got 5"], ['write trusted = "..."']),
    "config: unknown option": _config(
        '[ingest]\nsorce = "digits"', ["config [ingest]: unknown option(s) ['sorce']"], ["valid: ", "source"]),
    "config: unknown stage": _config("[ingst]\n", ["unknown key(s) or stage(s) ['ingst']"], ["stages are ingest"]),
    "config: fractional count": _config(
        "[ingest]\ntrusted_per_class = 2.9", ["option 'trusted_per_class'", "got 2.9"], ["must be of type int"]),
    "config: value out of range": _config(
        '[ingest]\nimage_size = "big"', ["config [ingest]", "--image-size 'big'"], ["expected HEIGHTxWIDTH"]),
    "config: not TOML": _config("[ingest\n", ["c.toml is not valid TOML", "line 2"], ["fix the syntax there"]),
    "config: no such file": Refusal(
        lambda t, r: ["run", str(t / "none.toml")], 1, ["config file", "none.toml does not exist"],
        ["give the path of a TOML file"]),
    "config: stages not a list": _config('stages = "ingest"', ["stages = 'ingest'"], ["use a list"]),
    "config: stage not a table": _config(
        "ingest = 5", ["[ingest] must be a table of options"], ["on a line of its own"]),
    "config: negative seed": _config("seed = -1", ["seed = -1"], ["use a whole number >= 0"]),
    # -- the order of the stages
    "a stage before its input": Refusal(
        lambda t, r: (r.mkdir(parents=True, exist_ok=True), ["select", "--run-dir", str(r), *QUICK])[1], 1,
        ["run/ingest/stage.json does not exist"], ["run `winnow ingest --run-dir", "` first"]),
    "a run directory that does not exist (issue 20: it was created empty)": Refusal(
        lambda t, r: ["select", "--run-dir", str(r), *QUICK], 1, ["no run directory", "/run;"],
        ["run `winnow ingest --run-dir", "` first"]),
}


@pytest.mark.parametrize("name", REFUSALS)
def test_a_refusal_names_its_culprit_and_the_fix(tmp_path: Path, name: str):
    case = REFUSALS[name]
    run = tmp_path / "run"
    res = _invoke(case.build(tmp_path, run))
    text = _text(res)
    assert res.exit_code == case.code, text
    assert isinstance(res.exception, SystemExit), f"a traceback, not a refusal: {res.exception!r}"
    for words in case.culprit + case.fix:
        assert words in text, f"{words!r} not in: {text}"
    assert not (run / "ingest").exists() and not (run / "select").exists(), "a refused stage writes nothing"
    assert _leftovers(run) == []


# --- refusals of the later stages, on one run made once -------------------------------------------


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run through export of a feature table with injected noise (so with a truth), made once:
    the refusals below must leave it exactly as it is."""
    tmp = tmp_path_factory.mktemp("exported")
    run = tmp / "run"
    for args in (_ingest(_features(tmp), run, "--features", "emb", "--inject-noise", "uniform:0.25"),
                 ["embed", "--run-dir", str(run), "--folds", "2", *QUICK],
                 ["export", "--run-dir", str(run), *QUICK]):
        res = _invoke(args)
        assert res.exit_code == 0, res.output
    return run


def _truth(tmp: Path, **changes: Any) -> str:
    cols: dict[str, Any] = {"id": list(IDS), "label": [0, 1] * (N // 2)}
    cols.update(changes)
    path = tmp / "truth.parquet"
    pq.write_table(pa.table({k: v for k, v in cols.items() if v is not None}), path)
    return str(path)


LATER_REFUSALS: dict[str, Refusal] = {
    "evaluate: --truth that does not exist": Refusal(
        lambda t, r: ["evaluate", "--truth", str(t / "nope.parquet")], 1,
        ["--truth", "nope.parquet does not exist"], ["give a Parquet table with columns id and label"]),
    "evaluate: --truth without a label column": Refusal(
        lambda t, r: ["evaluate", "--truth", _truth(t, label=None, y=[0] * N)], 1,
        ["--truth", "truth.parquet: needs columns id and label, has id, y"], ["needs columns id and label"]),
    "evaluate: --truth label that is no class": Refusal(
        lambda t, r: ["evaluate", "--truth", _truth(t, label=_int_labels(r1=7))], 1,
        ["truth.parquet: row 1 (id 'x1') has label 7"], ["fix that row"]),
    "evaluate: --truth that lacks an id": Refusal(
        lambda t, r: ["evaluate", "--truth", _truth(t, id=IDS[:-1], label=_int_labels()[:-1])], 1,
        ["truth.parquet: no label for 1 id(s) of this run", "'x11'"], ["add a row (id, label) for each"]),
    "evaluate: --policies unknown": Refusal(
        lambda t, r: ["evaluate", "--policies", "bogus"], 2, ["--policies", "'bogus'"], ["choose from weight"]),
    "evaluate: --policies before train": Refusal(
        lambda t, r: ["evaluate", "--policies", "soft"], 1, ["option --policies"], ["run `winnow train` first"]),
    "train: on a feature table, without --features": Refusal(
        lambda t, r: ["train"], 1, ["no row of the manifest has a readable image"], ["--features embedding"]),
    "train: --features that is no column": Refusal(
        lambda t, r: ["train", "--features", "nope"], 1,
        ["embed/features.parquet has no column 'nope'"], ["vector columns there: embedding"]),
    "report: --top 0": Refusal(lambda t, r: ["report", "--top", "0"], 2, ["--top"], ["must be >= 1"]),
    "embed: --folds 1": Refusal(lambda t, r: ["embed", "--folds", "1"], 2, ["--folds"], ["must be >= 2"]),
    "weight: --epochs 0": Refusal(lambda t, r: ["weight", "--epochs", "0"], 2, ["--epochs"], ["must be >= 1"]),
    "weight: --method unknown": Refusal(
        lambda t, r: ["weight", "--method", "magic"], 2, ["'--method'", "'magic'"], ["'l2rw'"]),
    "select: --budget negative": Refusal(
        lambda t, r: ["select", "--budget", "-1"], 2, ["--budget"], ["must be >= 0"]),
    "export: --policy unknown": Refusal(
        lambda t, r: ["export", "--policy", "all"], 2, ["'--policy'", "'all'"], ["'weight', 'soft'"]),
}


def _state(run: Path) -> dict[str, str]:
    """Every file of a run directory and its bytes' digest."""
    import hashlib

    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest() for p in run.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name", LATER_REFUSALS)
def test_a_later_stage_s_refusal_names_its_culprit_and_changes_nothing(exported_run: Path, tmp_path: Path,
                                                                        name: str):
    case = LATER_REFUSALS[name]
    before = _state(exported_run)
    res = _invoke([*case.build(tmp_path, exported_run), "--run-dir", str(exported_run), *QUICK])
    text = _text(res)
    assert res.exit_code == case.code, text
    assert isinstance(res.exception, SystemExit), f"a traceback, not a refusal: {res.exception!r}"
    for words in case.culprit + case.fix:
        assert words in text, f"{words!r} not in: {text}"
    assert _state(exported_run) == before, "a refused command leaves the run as it was"
    assert _leftovers(exported_run) == []


def test_the_corpus_is_large_enough():
    assert len(ROW_CASES) + len(REFUSALS) + len(LATER_REFUSALS) >= 50


# --- winnow run on real data: every stage that can run, runs; report is reached -------------------

def _run(tmp: Path, ingest: str, train: str = "") -> tuple[Result, Path]:
    """``winnow run`` with the default plan (every stage), each as short as it can be."""
    run = tmp / "run"
    cfg = tmp / "pipeline.toml"
    cfg.write_text(f'run_dir = "{run}"\nthreads = 1\ndevice = "cpu"\n[ingest]\n{ingest}\n'
                   f"[embed]\nwarmup = 1\nfolds = 2\n[weight]\nrounds = 1\nepochs = 1\n[train]\nepochs = 1\n{train}\n")
    return _invoke(["run", str(cfg), "--json"]), run


def test_run_on_own_images_without_truth_reaches_report_and_loses_no_row(tmp_path: Path):
    source = _parquet(tmp_path, image=_with(_images(), r5=b"junk", r7=png_bytes(1, size=16)),
                      label=_with(["a", "b"] * 6, r6=None))
    res, run = _run(tmp_path, f'source = "{source}"')
    assert res.exit_code == 0, res.output
    stages = json.loads(res.stdout)["stages"]
    assert "no truth" in stages["evaluate"]["skipped"] and '[evaluate] truth = "PATH"' in stages["evaluate"]["skipped"]
    assert "skipped" not in stages["train"] and stages["train"]["metrics"]["left_out"] == 0
    assert (run / "report" / "report.html").is_file() and not (run / "evaluate").exists()
    curated = pq.read_table(run / "export" / "curated.parquet")
    assert curated["id"].to_pylist() == IDS, "every row reaches export, in order"
    errors = dict(zip(curated["id"].to_pylist(), curated["error"].to_pylist()))
    assert [i for i, e in errors.items() if e] == ["x5", "x6", "x7"]
    assert _leftovers(run) == []


def test_run_on_a_feature_table_skips_train_and_evaluate_and_reaches_report(tmp_path: Path):
    source = _features(tmp_path, r5=None)
    res, run = _run(tmp_path, f'source = "{source}"\nfeatures = "emb"')
    assert res.exit_code == 0, res.output
    stages = json.loads(res.stdout)["stages"]
    assert "no images" in stages["train"]["skipped"] and '[train] features = "embedding"' in stages["train"]["skipped"]
    assert "skipped" in stages["evaluate"]
    assert (run / "report" / "report.html").is_file()
    assert pq.read_table(run / "export" / "curated.parquet").num_rows == N
    # Asked for by name, the same stages refuse with the fix instead of skipping.
    res = _invoke(["train", "--run-dir", str(run), *QUICK])
    assert res.exit_code == 1 and "--features embedding" in _text(res)
    res = _invoke(["evaluate", "--run-dir", str(run), *QUICK])
    assert res.exit_code == 1 and "--truth" in _text(res)
    assert _leftovers(run) == []
    # With the fix that the line gives, train runs.
    res, run = _run(tmp_path, f'source = "{source}"\nfeatures = "emb"', train='features = "embedding"')
    assert res.exit_code == 0, res.output
    stages = json.loads(res.stdout)["stages"]
    assert "skipped" not in stages["train"] and stages["train"]["metrics"]["num_train"] == N - 1  # all but x5


def test_a_skipped_stage_s_results_from_earlier_data_are_removed(tmp_path: Path):
    """Run once with a truth (evaluate runs), then on data without one in the same run directory:
    evaluate's old results would make report refuse to mix them with the new export (or show
    them as current), so the skip removes them and report is reached."""
    source = _parquet(tmp_path)
    res, run = _run(tmp_path, f'source = "{source}"\ninject_noise = "uniform:0.25"')
    assert res.exit_code == 0, res.output
    assert "skipped" not in json.loads(res.stdout)["stages"]["evaluate"]
    res, run = _run(tmp_path, f'source = "{source}"')
    assert res.exit_code == 0, res.output
    assert "skipped" in json.loads(res.stdout)["stages"]["evaluate"]
    assert not (run / "evaluate").exists() and (run / "report" / "report.html").is_file()
    assert _leftovers(run) == []
