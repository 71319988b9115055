"""Readers for every supported source. Each returns a :class:`RawSource` whose table has the
manifest columns ``id, uri, image, label_raw, split`` (split may be null) in source order, then the
user's own columns of a manifest file (:func:`_user_columns`).

Labels stay raw here (ints or names): :func:`winnow.stages.ingest.core._map_labels` maps them to class indices.

Every file a source names (a manifest's ``uri``, the ``path`` of a Hugging Face image struct, a
file in an image folder) must resolve, symbolic links followed, under the source's data root:
the manifest's folder (an image folder: itself) unless ``--data-root`` names another. A path
outside is a row error that reads the same whether the file exists or not, and nothing outside
the root is opened or stat'ed; ``--allow-any-path`` lifts the rule for manifests one trusts.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from winnow.stages.common import schema
from winnow.stages.common.images import encode_png

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
# Read as text from CSV: type guessing would turn id "007" into 7 and a class "03" into index 3.
CSV_TEXT_COLUMNS = ("id", "label", "uri", "split")
# A CSV label that is a plain integer (or one written as pandas writes floats, "3.0") is a class
# index, as in an integer Parquet column; any other text ("cat", "03") is a class name.
_INDEX_TEXT = re.compile(r"-?(0|[1-9][0-9]*)(\.0)?")
_INT32_MAX = 2**31 - 1
# A byte that is not UTF-8, as Python's "surrogateescape" decoding keeps it.
_NOT_UTF8 = re.compile("[\udc80-\udcff]")
_SAVE_AS_UTF8 = ("save the file as UTF-8 (Excel: Save As 'CSV UTF-8'; pandas: df.to_csv(path, index=False, "
                 "encoding='utf-8'); or iconv -f latin1 -t utf-8 old.csv > new.csv)")


class SourceError(ValueError):
    """The source cannot be read as asked; the message says what to do."""


@dataclass
class RawSource:
    table: pa.Table  # id (string), uri (string), image (binary), label_raw (int or string), split
    class_names: list[str] | None = None  # known class order (image folder, digits), else None
    embedding: np.ndarray | None = None  # (n, d) float32, for feature tables
    description: str = ""
    extra: dict = field(default_factory=dict)


def read_source(
    source: str, *, features: str = "", max_rows: int = 0, data_root: str = "", allow_any_path: bool = False
) -> RawSource:
    """Dispatch on what ``source`` is: 'digits', a folder, or a .parquet/.csv file.

    ``data_root`` / ``allow_any_path``: where the files a manifest or folder names may be (see the
    module docstring); the default root is the manifest's folder, or the image folder itself.
    """
    if source == "digits":
        raw = read_digits()
    else:
        path = Path(source)
        if not path.exists():
            raise SourceError(f"source {source!r} does not exist: give 'digits', an image folder, or a .parquet/.csv file")
        if path.is_dir():
            if features:
                raise SourceError("--features needs a Parquet feature table, not a folder; give the .parquet file "
                                  "that holds the vectors, or drop --features to read the folder's images")
            raw = read_image_folder(path, data_root=data_root, allow_any_path=allow_any_path)
        elif path.suffix.lower() in {".parquet", ".pq"}:
            raw = read_table_file(path, features=features, data_root=data_root, allow_any_path=allow_any_path)
        elif path.suffix.lower() in {".csv", ".tsv"}:
            if features:
                raise SourceError("--features needs a Parquet feature table; CSV cannot hold vectors: write the "
                                  "table as Parquet (pandas: df.to_parquet(path))")
            raw = read_table_file(path, features="", data_root=data_root, allow_any_path=allow_any_path)
        else:
            raise SourceError(f"source {source!r}: unsupported file type {path.suffix!r}; use .parquet or .csv")
    if max_rows and raw.table.num_rows > max_rows:
        _head(raw, max_rows)
    return raw


def _head(raw: RawSource, n: int) -> None:
    """Keep the first ``n`` rows of every per-row field (table, embedding, row errors) alike."""
    raw.table = raw.table.slice(0, n)
    if raw.embedding is not None:
        raw.embedding = raw.embedding[:n]
    if "errors" in raw.extra:
        raw.extra["errors"] = raw.extra["errors"][:n]


ALLOW_PATH = ("pass --data-root DIR with a folder that holds it, or --allow-any-path to read files anywhere (only "
              "for a manifest you trust); in a config: data_root = \"DIR\" or allow_any_path = true under [ingest]")


def resolve_data_root(default: Path, data_root: str = "", allow_any_path: bool = False) -> Path | None:
    """The folder every file a source names must resolve under, symbolic links resolved: ``data_root``
    if given, else ``default`` (the manifest's folder, or the image folder); None with ``allow_any_path``."""
    if allow_any_path:
        return None
    if data_root:
        if not Path(data_root).is_dir():
            raise SourceError(f"--data-root {data_root}: not a folder; give the folder that holds the images "
                              "the manifest names")
        return Path(os.path.realpath(data_root))
    return Path(os.path.realpath(default))


def contained_path(base: Path, path: str, root: Path | None) -> str | None:
    """``path`` (relative to ``base`` unless absolute) as an absolute path, symbolic links resolved,
    or None when that lies outside ``root`` or is no valid path. Decided from names and links only,
    never from whether the file exists, so that a row's error says nothing about files outside."""
    try:
        resolved = os.path.realpath(os.path.join(base, path))
    except ValueError:  # an embedded NUL byte
        return None
    return resolved if root is None or Path(resolved).is_relative_to(root) else None


def path_error(row_id: str, what: str, path: str, root: Path | None) -> str:
    """The row error for a ``path`` that :func:`contained_path` refused: one text whether or not the
    file exists, naming the row and how to allow the path."""
    if root is None or "\0" in path:
        return f"row {row_id!r}: {what} {path!r} is not a valid file path"
    return f"row {row_id!r}: {what} {path!r} resolves outside the data root {root}, so it is not read; {ALLOW_PATH}"


def _files_below(folder: Path, root: Path | None) -> Iterator[tuple[Path, bool]]:
    """Every file below ``folder`` (not into linked folders, as ``Path.rglob``) and whether it is a
    symbolic link that resolves outside ``root``; such a link's target is never stat'ed."""
    stack = [folder]
    while stack:
        here = stack.pop()
        try:
            entries = list(os.scandir(here))
        except OSError:
            continue
        for entry in entries:
            path = Path(entry.path)
            if entry.is_symlink():
                if root is not None and not Path(os.path.realpath(path)).is_relative_to(root):
                    yield path, True
                elif path.is_file():
                    yield path, False
            elif entry.is_dir(follow_symlinks=False):
                stack.append(path)
            elif entry.is_file(follow_symlinks=False):
                yield path, False


def _table(ids: list[str], uris: list | None, images: list | None, labels: pa.Array, split: list | None,
           user: pa.Table | None = None) -> pa.Table:
    """The source table ingest works on: five columns of its own, then the user's (``user``) as given."""
    n = len(ids)
    table = pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "uri": pa.array(uris if uris is not None else [None] * n, pa.string()),
            "image": pa.array(images if images is not None else [None] * n, pa.binary()),
            "label_raw": labels,
            "split": pa.array(split if split is not None else [None] * n, pa.string()),
        }
    )
    if user is not None:
        for name in user.column_names:
            table = table.append_column(user.schema.field(name), user[name])
    return table


def _user_columns(table: pa.Table, path: Path, features: str) -> pa.Table:
    """The columns of a manifest file that are the user's (group, source, any metadata): they pass
    through to every manifest winnow writes. One named like a column winnow writes is refused."""
    consumed = set(schema.SOURCE_COLUMNS) | ({features} if features else set())
    names = [c for c in table.column_names if c not in consumed]
    clash = [c for c in names if schema.is_reserved(c)]
    if clash:
        renames = ", ".join(f"{c!r}: 'user_{c}'" for c in clash)
        raise SourceError(
            f"{path}: column(s) {', '.join(repr(c) for c in clash)} have names winnow writes itself (a manifest "
            f"made by winnow cannot be ingested again as it is); rename them, e.g. pandas: "
            f"df.rename(columns={{{renames}}}), or drop them"
        )
    return table.select(names)


def read_digits() -> RawSource:
    """scikit-learn's bundled digits: 1797 real 8x8 grey images, stored as PNG bytes (0-16 -> 0-255)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    images = [encode_png(p) for p in pixels]
    ids = [f"digits-{i:04d}" for i in range(len(images))]
    labels = pa.array(digits.target.astype(np.int32))
    return RawSource(_table(ids, None, images, labels, None), [str(c) for c in range(10)], description="digits")


def read_image_folder(root: Path, *, data_root: str = "", allow_any_path: bool = False) -> RawSource:
    """``root/<class>/<file>``: one class per sub-folder, sorted by name; ids are relative paths.

    An image file that is a symbolic link resolving outside the data root keeps its row with an
    error; a class folder that does is refused as a whole (listing it would show what it holds).
    """
    allowed = resolve_data_root(root, data_root, allow_any_path)
    if allowed is not None and not Path(os.path.realpath(root)).is_relative_to(allowed):
        raise SourceError(f"image folder {root} is outside --data-root {data_root}; give a data root that holds it")
    classes = []
    for p in root.iterdir():
        if p.name.startswith("."):
            continue
        if allowed is not None and p.is_symlink() and not Path(os.path.realpath(p)).is_relative_to(allowed):
            raise SourceError(f"image folder {root}: {p.name!r} is a symbolic link that resolves outside the data "
                              f"root {allowed}, so it is not read; {ALLOW_PATH}")
        if p.is_dir():
            classes.append(p.name)
    classes.sort()
    if not classes:
        raise SourceError(f"image folder {root} has no class sub-folders; expected {root}/<class>/<image file>")
    ids, uris, labels, errors = [], [], [], []
    for label, name in enumerate(classes):
        for f, outside in sorted(_files_below(root / name, allowed)):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                ids.append(f.relative_to(root).as_posix())
                uris.append(None if outside else os.path.realpath(f))
                errors.append(path_error(ids[-1], "file", ids[-1], allowed) if outside else None)
                labels.append(label)
    return RawSource(
        _table(ids, uris, None, pa.array(labels, pa.int32()), None), classes, description=f"image folder {root}",
        extra={"errors": errors},
    )


def read_table_file(path: Path, *, features: str, data_root: str = "", allow_any_path: bool = False) -> RawSource:
    """A Parquet or CSV manifest (``id``, ``label``, ``uri`` or ``image``, optional ``split``),
    or a feature table (``id``, ``label``, and the embedding column named by ``features``).

    Relative paths are relative to the manifest's folder; every path must resolve under the data
    root (:func:`resolve_data_root`), else its row keeps an error and no ``uri``."""
    is_csv = path.suffix.lower() in {".csv", ".tsv"}
    feature_type = None
    try:
        if features and not is_csv:
            # The vectors are read a batch at a time below, into their array; the rest at once.
            file_schema = pq.read_schema(path)
            names = file_schema.names
            if features in names:
                feature_type = file_schema.field(features).type
            table = _read_file(path, columns=[c for c in names if c != features])
            cols = set(names)
        else:
            table = _read_file(path)
            cols = set(table.column_names)  # (pyarrow decodes the names only here)
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as exc:
        problem = _csv_problem(path, "\t" if path.suffix.lower() == ".tsv" else ",") if is_csv else None
        raise SourceError(problem or f"cannot read {path}: {exc}; check that it is a Parquet or CSV file") from exc
    if "label" not in cols:
        raise SourceError(f"{path}: no 'label' column (columns are: {', '.join(table.column_names)}); add one "
                          "with each row's class index or class name")
    user = _user_columns(table, path, features)
    n = table.num_rows
    if n == 0:
        raise SourceError(f"{path} has no rows (only a header or a schema); nothing to ingest: write the rows "
                          "(one per example) under the header")
    ids = [str(v) for v in table["id"].to_pylist()] if "id" in cols else [f"row-{i}" for i in range(n)]
    if "id" in cols and table["id"].null_count:
        first = table["id"].is_null().to_pylist().index(True)
        raise SourceError(f"{path}: row {first} has no id; every row needs a unique id")
    labels = _labels(table["label"], path, ids, from_text=is_csv)
    split = table["split"].cast(pa.string()).to_pylist() if "split" in cols else None

    embedding = None
    extra: dict = {}
    uris = images = None
    if features:
        if features not in cols:
            raise SourceError(f"{path}: --features {features!r} is not a column (columns: {', '.join(table.column_names)})")
        assert feature_type is not None

        def batches() -> Iterator[pa.Array]:
            try:
                for batch in pq.ParquetFile(path).iter_batches(batch_size=FEATURE_BATCH_ROWS, columns=[features]):
                    yield batch.column(0)
            except (pa.ArrowInvalid, OSError) as exc:
                raise SourceError(f"cannot read {path}: {exc}; check that it is a Parquet or CSV file") from exc

        embedding, errors = _vectors(batches, n, feature_type, path, features)
        extra["errors"] = errors
    else:
        if "uri" not in cols and "image" not in cols:
            raise SourceError(
                f"{path}: needs a 'uri' column (image paths relative to the manifest) or an 'image' column "
                "(encoded bytes); for precomputed embeddings pass --features COLUMN"
            )
        base = path.resolve().parent
        root = resolve_data_root(base, data_root, allow_any_path)
        named: list[str | None] = [None] * n  # the path each row reads its image from, as written
        what = ["uri"] * n
        if "uri" in cols:
            named = table["uri"].cast(pa.string()).to_pylist()
        if "image" in cols:
            images, paths = image_column(table["image"], path)
            if paths is not None:  # a row without bytes is read from its path, as Hugging Face datasets does
                for i, (b, p) in enumerate(zip(images, paths)):
                    if named[i] is None and b is None and p is not None:
                        named[i], what[i] = p, "image path"
        uris = [None if p is None else contained_path(base, p, root) for p in named]
        extra["errors"] = [None if p is None or u is not None else path_error(ids[i], what[i], p, root)
                           for i, (p, u) in enumerate(zip(named, uris))]
    return RawSource(_table(ids, uris, images, labels, split, user), None, embedding,
                     description=str(path), extra=extra)


def _read_file(path: Path, columns: list[str] | None = None) -> pa.Table:
    """A Parquet or CSV/TSV file as a table (CSV: the reserved columns as text, only an empty
    cell missing: "NA" or "null" may well be an id or a class name)."""
    if path.suffix.lower() not in {".csv", ".tsv"}:
        return pq.read_table(path, columns=columns)
    opts = pacsv.ParseOptions(delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    convert = pacsv.ConvertOptions(
        column_types={c: pa.string() for c in CSV_TEXT_COLUMNS}, strings_can_be_null=True, null_values=[""],
        include_columns=columns,
    )
    return pacsv.read_csv(path, parse_options=opts, convert_options=convert)


def _csv_problem(path: Path, delimiter: str) -> str | None:
    """Where and why a CSV that pyarrow refused is malformed, in words one can act on: bytes that
    are not UTF-8 (a latin-1 or UTF-16 export), or a row whose number of fields is not the header's.
    None when neither is found (the caller then gives pyarrow's own message)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in data[:4096]:
        return f"{path} is UTF-16 text (or holds NUL bytes), not UTF-8; {_SAVE_AS_UTF8}"
    reader = csv.reader(io.StringIO(data.decode("utf-8-sig", errors="surrogateescape"), newline=""), delimiter=delimiter)
    header = next(reader, [])
    if any(_NOT_UTF8.search(f) for f in header):
        return f"{path}: line 1 (the header) is not UTF-8 text; {_SAVE_AS_UTF8}"
    id_col = header.index("id") if "id" in header else None
    row = 0
    for fields in reader:
        if not fields:  # a blank line: pyarrow skips it too
            continue
        ident = fields[id_col] if id_col is not None and id_col < len(fields) else f"row-{row}"
        where = f"{path}: line {reader.line_num} (row {row}, id {_NOT_UTF8.sub('?', ident)!r})"
        bad = next((f for f in fields if _NOT_UTF8.search(f)), None)
        if bad is not None:
            byte = ord(_NOT_UTF8.findall(bad)[0]) - 0xDC00
            return f"{where} is not UTF-8 text (byte 0x{byte:02x} in {_NOT_UTF8.sub('?', bad)!r}); {_SAVE_AS_UTF8}"
        if len(fields) != len(header):
            return (f"{where} has {len(fields)} fields but the header has {len(header)}; quote a value that "
                    f"holds the delimiter (\"a{delimiter}b\") or remove the extra field")
        row += 1
    return None


def referenced_image_files(path: Path, *, data_root: str = "", allow_any_path: bool = False) -> list[Path]:
    """The image files a manifest's ``uri`` column names, resolved as ingest resolves them and
    only those under its data root; none for a file that is not a readable manifest with that
    column (ingest itself says what is wrong). The stage cache fingerprints them: replacing an
    image must re-run ingest, and a file outside the root must not be stat'ed."""
    if path.suffix.lower() not in {".parquet", ".csv", ".tsv"}:
        return []
    try:
        if path.suffix.lower() == ".parquet" and "uri" not in pq.read_schema(path).names:
            return []
        uris = _read_file(path, ["uri"])["uri"].cast(pa.string()).to_pylist()
        base = path.resolve().parent
        root = resolve_data_root(base, data_root, allow_any_path)
    except (pa.ArrowException, OSError, KeyError, SourceError):
        return []
    resolved = (contained_path(base, u, root) for u in uris if u)
    return [Path(r) for r in resolved if r is not None]


def source_files(source: str, *, data_root: str = "", allow_any_path: bool = False) -> list[Path]:
    """What ingest reads of ``source`` (a manifest and the images it names, or every file of a
    folder) under the data root, for the stage cache's fingerprint; files outside are left out
    unstat'ed, as ingest leaves them unread."""
    path = Path(source).resolve()
    if path.is_file():
        return [path, *referenced_image_files(path, data_root=data_root, allow_any_path=allow_any_path)]
    if not path.is_dir():
        return []
    try:
        root = resolve_data_root(path, data_root, allow_any_path)
    except SourceError:
        return []
    if root is not None and not path.is_relative_to(root):
        return []  # ingest refuses a folder outside --data-root
    return sorted(f for f, outside in _files_below(path, root) if not outside)


def _labels(column: pa.ChunkedArray, path: Path, ids: list[str], *, from_text: bool) -> pa.Array:
    """The label column as int32 class indices or string class names, null where missing.

    Categorical (dictionary) columns are decoded; float columns, as pandas writes integer labels
    with a missing value, are indices when whole (NaN = missing); CSV text follows ``_INDEX_TEXT``.
    """
    labels = column.combine_chunks()
    if pa.types.is_dictionary(labels.type):
        labels = labels.dictionary_decode()
    if pa.types.is_null(labels.type):  # every label missing: each row keeps that error
        return labels.cast(pa.string())
    if pa.types.is_string(labels.type) or pa.types.is_large_string(labels.type):
        labels = labels.cast(pa.string())
        texts = [v for v in labels.to_pylist() if v is not None]
        if not (from_text and texts and all(_INDEX_TEXT.fullmatch(v) for v in texts)):
            return labels
        labels = labels.cast(pa.float64())
    if pa.types.is_floating(labels.type):
        labels = _whole_floats(labels.cast(pa.float64()), path, ids)
    if not pa.types.is_integer(labels.type):
        values = labels.to_pylist()
        i = next((j for j, v in enumerate(values) if v is not None), 0)
        raise SourceError(
            f"{path}: 'label' must hold class indices (integers) or class names (text), got {labels.type} "
            f"(row {i}, id {ids[i]!r}, has {values[i]!r}); convert the column to one of those "
            "(e.g. with pandas: df['label'] = df['label'].astype(str))"
        )
    big = np.flatnonzero(np.abs(labels.to_numpy(zero_copy_only=False).astype(np.float64)) > _INT32_MAX)  # null: NaN
    if len(big):
        i = int(big[0])
        raise SourceError(f"{path}: row {i} (id {ids[i]!r}) has label {labels[i].as_py()}, too large for a class index; "
                          "fix the label, or give the labels as class names (text) if they are codes")
    return labels.cast(pa.int32())


def _whole_floats(labels: pa.Array, path: Path, ids: list[str]) -> pa.Array:
    """Float labels as int64 indices: NaN is a missing label, anything but a whole number an error."""
    values = labels.to_numpy(zero_copy_only=False)  # nulls become NaN
    finite = np.isfinite(values)
    bad = np.flatnonzero(np.isinf(values) | (finite & (values != np.round(values))))
    if len(bad):
        i = int(bad[0])
        raise SourceError(
            f"{path}: row {i} (id {ids[i]!r}) has label {values[i]}, not a whole number; float labels must be "
            "class indices (0, 1, ...) or empty/NaN for a missing label"
        )
    out = np.where(finite, values, 0).astype(np.int64)
    return pa.array(out, pa.int64(), mask=~finite)


def image_column(column: pa.ChunkedArray, path: Path) -> tuple[list[bytes | None], list[str | None] | None]:
    """Encoded image bytes per row, plus each row's path when the column is the
    ``struct<bytes, path>`` that Hugging Face ``datasets`` writes (else None)."""
    col = column.combine_chunks()
    if pa.types.is_struct(col.type) and {"bytes", "path"} <= {f.name for f in col.type}:
        data, paths = col.field("bytes"), col.field("path")
        if (pa.types.is_binary(data.type) or pa.types.is_large_binary(data.type)) and (
            pa.types.is_string(paths.type) or pa.types.is_large_string(paths.type) or pa.types.is_null(paths.type)
        ):
            valid = col.is_valid()  # a null struct has neither bytes nor path
            data = pc.if_else(valid, data.cast(pa.binary()), pa.scalar(None, pa.binary()))
            paths = pc.if_else(valid, paths.cast(pa.string()), pa.scalar(None, pa.string()))
            return data.to_pylist(), paths.to_pylist()
    if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type) or pa.types.is_null(col.type):
        return col.cast(pa.binary()).to_pylist(), None
    raise SourceError(
        f"{path}: column 'image' must hold encoded image bytes (binary) or struct<bytes: binary, path: string> "
        f"as Hugging Face datasets writes, got {col.type}; for image paths use a 'uri' column"
    )


FEATURE_BATCH_ROWS = 65_536  # rows of a feature column decoded at a time


def _vectors(chunks: Callable[[], Iterable[pa.Array]], n: int, typ: pa.DataType, path: Path,
             name: str) -> tuple[np.ndarray, list[str | None]]:
    """Read a list column, given as a re-iterable of its chunks (``n`` rows of type ``typ``), as
    (n, d) float32; rows that are null, of another length or non-finite keep a reason in the
    returned errors (and zeros as values) instead of failing the whole table.

    A batch at a time from the file, so that only the (n, d) result is held whole: reading the
    column first, then combining and filtering it, held three copies (1.5 GB at 1M x 128).
    ``d`` is the type's size for a fixed-size list, else the most common length (one more pass)."""
    if not (pa.types.is_list(typ) or pa.types.is_fixed_size_list(typ) or pa.types.is_large_list(typ)):
        raise SourceError(f"{path}: feature column {name!r} must be a list of floats, got {typ}; write "
                          "one list of floats per row (pandas: a column of lists or numpy arrays)")

    def lengths_of(chunk: pa.Array) -> np.ndarray:
        return pc.fill_null(pc.list_value_length(chunk), -1).to_numpy(zero_copy_only=False)

    no_vector = SourceError(f"{path}: feature column {name!r} has no non-null vector; write one list of floats per row")
    if pa.types.is_fixed_size_list(typ):
        d = typ.list_size
    else:
        all_lengths = np.concatenate([lengths_of(c) for c in chunks()] or [np.zeros(0, np.int64)])
        valid_lengths = all_lengths[all_lengths >= 0]
        if len(valid_lengths) == 0:
            raise no_vector
        d = int(np.bincount(valid_lengths).argmax())
    out = np.zeros((n, d), dtype=np.float32)
    errors: list[str | None] = [None] * n
    start = 0
    for chunk in chunks():
        stop = start + len(chunk)
        lengths = lengths_of(chunk)
        keep = lengths == d
        for i in np.flatnonzero(~keep):
            errors[start + i] = (f"{name} is null" if lengths[i] < 0
                                 else f"{name} has {lengths[i]} values, expected {d}")
        if keep.any():
            rows = chunk if keep.all() else chunk.filter(pa.array(keep))
            flat = pc.list_flatten(rows).cast(pa.float32()).to_numpy(zero_copy_only=False)
            block = out[start:stop]
            block[keep] = flat.reshape(-1, d)
            for i in np.flatnonzero(keep & ~np.isfinite(block).all(axis=1)):
                errors[start + i] = f"{name} has NaN or Inf values"
                block[i] = 0.0
        start = stop
    if n and all(e is not None and e.endswith(" is null") for e in errors):
        raise no_vector
    return out, errors
