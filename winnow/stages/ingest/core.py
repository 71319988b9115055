"""The ingest core: read a source, map labels, split, validate images, inject noise.

Nothing usable is lost: a row whose image cannot be read, whose image size is not the run's or
whose label is missing stays in the manifest with ``error`` set. Problems with the input as a
whole (duplicate ids, unknown label names, fewer than two classes, no trusted example for a
class, empty input) raise :class:`IngestError`, naming the file, row and id where one row is
the cause. Ingest checks here whatever a later stage needs, so that no later stage refuses a
run that ingest accepted.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from winnow.stages.common import schema
from winnow.stages.common.arrow import vectors_to_arrow, with_metadata
from winnow.stages.common.images import ImageError, encode_png, fit_image, image_to_array, open_image
from winnow.stages.common.params import to_dict
from winnow.stages.common.progress import track
from winnow.stages.common.reprs import short_repr
from winnow.stages.ingest import noise as noise_mod
from winnow.stages.ingest.params import IngestParams, parse_image_size
from winnow.stages.ingest.sources import RawSource, SourceError, read_source

log = logging.getLogger(__name__)

# What validating one row's image gives: (why the row cannot be used or None, (height, width) or None).
ImageCheck = tuple[str | None, tuple[int, int] | None]


class IngestError(ValueError):
    """The input as a whole cannot be ingested; the message names the problem and the fix."""


class Rows:
    """Where a row of the combined (source + trusted) table comes from, for messages that name it."""

    def __init__(self, table: pa.Table, raw: RawSource, trusted: RawSource | None, *, max_rows: int = 0) -> None:
        self.ids = table["id"]  # an Arrow column: a Python list of 1M ids held 0.1 GB for messages only
        self.n_source = raw.table.num_rows
        self.source, self.trusted = raw.description, trusted.description if trusted is not None else ""
        # --max-rows N that (probably) cut the source: what is missing may be in the rows not read
        self.cut = max_rows if max_rows and self.n_source == max_rows else 0

    def where(self, i: int) -> str:
        """``m.csv row 3 (id 'x3')``: the file, the row within it (0-based, header excluded), the id."""
        file, row = (self.source, i) if i < self.n_source else (self.trusted, i - self.n_source)
        return f"{file} row {row} (id {self.ids[i].as_py()!r})"


def _show(values: list[Any], k: int = 10) -> str:
    """A list for a message, cut after ``k`` items (a run can have thousands of classes)."""
    shown = ", ".join(repr(v) for v in values[:k])
    return f"[{shown}{f', ... ({len(values)} in all)' if len(values) > k else ''}]"


@dataclass
class IngestResult:
    manifest: pa.Table  # schema.MANIFEST_SCHEMA (+ the user's columns), with class names as metadata
    features: pa.Table | None  # id + embedding, when the source was a feature table
    summary: dict[str, Any]

    __repr__ = short_repr


def _rng(seed: int, purpose: int) -> np.random.Generator:
    """An independent stream per random choice, so that changing one option reshuffles nothing else."""
    return np.random.default_rng([seed, purpose])


def ingest(
    params: IngestParams, *, seed: int = 0, validate: Callable[[pa.Table], list[ImageCheck]] | None = None
) -> IngestResult:
    """Build the manifest described by ``params`` (see :class:`IngestParams`).

    ``validate`` maps the combined source table (``id``, ``uri``, ``image``, ...) to one
    :data:`ImageCheck` per row, as :func:`check_image` gives; default: threads in this process.
    The Beam executor passes a function that decodes the images on its workers instead.
    """
    try:
        raw = read_source(params.source, features=params.features, max_rows=params.max_rows,
                          data_root=params.data_root, allow_any_path=params.allow_any_path)
    except SourceError as exc:
        raise IngestError(str(exc)) from exc
    try:
        trusted_raw = read_source(params.trusted, features=params.features, data_root=params.data_root,
                                  allow_any_path=params.allow_any_path) if params.trusted else None
    except SourceError as exc:  # its messages call it the source: say which file it is
        raise IngestError(f"--trusted {params.trusted}: {exc}") from exc
    if raw.table.num_rows == 0:
        raise IngestError(f"source {params.source!r} has no rows; nothing to ingest")
    table, embedding, feature_errors = _combine(raw, trusted_raw)
    n = table.num_rows
    rows = Rows(table, raw, trusted_raw, max_rows=params.max_rows)
    _check_unique_ids(table["id"], rows)

    labels, classes, errors = _map_labels(table, raw.class_names, rows, has_trusted_file=trusted_raw is not None)
    for i, e in enumerate(feature_errors):
        errors[i] = errors[i] or e
    split = _splits(table["split"].to_pylist(), rows)

    image_info: dict[str, Any] = {}
    if embedding is None:
        check = validate or (lambda t: _validate_images(t, workers=params.decode_workers))
        table, image_errors, image_info = _one_image_size(table, check(table), params, rows)
        errors = [a or b for a, b in zip(errors, image_errors)]
    usable = np.array([e is None for e in errors])
    _check_classes(labels, usable, classes, errors, rows)
    num_classes = len(classes)

    test_fraction = params.test_fraction if params.test_fraction >= 0 else (0.2 if params.source == "digits" else 0.0)
    unsplit = np.array([s is None for s in split])
    if test_fraction > 0:
        for i in _stratified(np.flatnonzero(unsplit & usable), labels, test_fraction, _rng(seed, 1)):
            split[i] = schema.TEST
    split = [schema.TRAIN if s is None else s for s in split]
    split_arr = np.array(split, dtype=object)

    if params.trusted_per_class > 0:
        pool = np.flatnonzero((split_arr == schema.TRAIN) & usable)
        rng = _rng(seed, 2)
        for c in range(num_classes):
            rows = pool[labels[pool] == c]
            split_arr[rng.permutation(rows)[: params.trusted_per_class]] = schema.TRUSTED

    keep = np.ones(n, dtype=bool)
    if params.imbalance > 1:
        train_rows = np.flatnonzero((split_arr == schema.TRAIN) & usable)
        kept = noise_mod.imbalance_keep(labels, train_rows, factor=params.imbalance, num_classes=num_classes, rng=_rng(seed, 3))
        keep[np.setdiff1d(train_rows, kept)] = False

    true_label = None
    noise_info: dict[str, Any] = {}
    if params.inject_noise:
        kind, rate, background = noise_mod.parse_noise(params.inject_noise)
        candidates = np.flatnonzero((split_arr == schema.TRAIN) & usable & keep)
        true_label = labels.copy()
        if kind == "background" and not 0 <= background < num_classes:
            raise IngestError(
                f"--inject-noise {params.inject_noise}: background class {background} is not a class index of this "
                f"source (0..{num_classes - 1}: {_show(classes)}); give one of those indices"
            )
        if kind == "model":
            x = embedding if embedding is not None else _pixels(table, usable, workers=params.decode_workers)
            labels = noise_mod.model_noise(x, labels, candidates, rate=rate, num_classes=num_classes,
                                           rng=_rng(seed, 4))
        else:
            labels = noise_mod.inject_noise(labels, candidates, kind=kind, rate=rate, num_classes=num_classes,
                                            background=background, rng=_rng(seed, 4))
        flipped = int((labels[candidates] != true_label[candidates]).sum())
        noise_info = {"kind": kind, "rate": rate, "flipped": flipped, "train_rows": int(len(candidates))}

    _check_trusted(labels, split_arr, usable & keep, classes, params.allow_missing_trusted)

    label_valid = labels >= 0
    manifest = pa.table(
        {
            "id": table["id"],
            "uri": table["uri"],
            "image": table["image"],
            "label": pa.array(labels, pa.int32(), mask=~label_valid),
            "label_name": pa.array([classes[v] if v >= 0 else None for v in labels], pa.string()),
            "split": pa.array(split_arr.tolist(), pa.string()),
            "error": pa.array(errors, pa.string()),
            "true_label": pa.array(true_label if true_label is not None else np.zeros(n, np.int32), pa.int32(),
                                   mask=~label_valid if true_label is not None else np.ones(n, bool)),
        },
        schema=schema.MANIFEST_SCHEMA,
    )
    for name in table.column_names[5:]:  # the user's own columns, after winnow's
        manifest = manifest.append_column(table.schema.field(name), table[name])
    if not keep.all():
        manifest = manifest.filter(pa.array(keep))
    manifest = with_metadata(manifest, classes=classes, params=to_dict(params))
    review_info: dict[str, Any] | None = None
    if params.corrections:
        manifest, review_info = _apply_review(manifest, params)

    features = None
    if embedding is not None:
        ok = np.array([e is None for e in errors])
        features = pa.table({"id": table["id"], schema.EMBEDDING: vectors_to_arrow(embedding, valid=ok)})
        if not keep.all():  # a filter copies every column, the (n, d) vectors too
            features = features.filter(pa.array(keep))
        features = with_metadata(features, classes=classes)
    summary = _summary(manifest, classes, noise_info, int((~keep).sum()), raw)
    if review_info is not None:
        summary["review"] = review_info
    return IngestResult(manifest, features, {**summary, **image_info})


def _apply_review(manifest: pa.Table, params: IngestParams) -> tuple[pa.Table, dict[str, Any]]:
    """The manifest with the decisions of ``params.corrections`` in force applied, and what the
    summary says of them (decisions per action, labels changed, rows moved to trusted)."""
    from winnow.stages.review import CorrectionsError, apply_decisions, in_force, read_corrections

    try:
        decisions = in_force(read_corrections(Path(params.corrections)))
        applied = apply_decisions(manifest, decisions, as_trusted=params.as_trusted,
                                  where=f"--corrections {params.corrections}")
    except CorrectionsError as exc:
        raise IngestError(str(exc)) from exc
    return applied.manifest, {"corrections": params.corrections, "decisions": applied.counts,
                              "relabelled": applied.relabelled, "moved_to_trusted": applied.to_trusted}


def _combine(raw: RawSource, trusted: RawSource | None) -> tuple[pa.Table, np.ndarray | None, list[str | None]]:
    """Stack the trusted manifest under the main one (its rows all get split=trusted)."""
    table, emb = raw.table, raw.embedding
    errors = list(raw.extra.get("errors", [None] * table.num_rows))
    if trusted is None:
        return table, emb, errors
    t = trusted.table.set_column(4, "split", pa.array([schema.TRUSTED] * trusted.table.num_rows, pa.string()))
    table, t = _align_labels(table, raw.class_names, t, trusted.class_names)
    if table.schema.field("label_raw").type != t.schema.field("label_raw").type:
        kinds = ("class indices (integers)", "class names (text)")
        src_kind, tr_kind = (kinds[0], kinds[1]) if _is_int(table) else (kinds[1], kinds[0])
        raise IngestError(
            f"the source's labels are {src_kind} ({_first_label(table, raw.description)}) but the trusted file's are "
            f"{tr_kind} ({_first_label(t, trusted.description)}); write the same kind in both files, e.g. class names "
            "in both (pandas: df['label'] = df['label'].astype(str))"
        )
    if (emb is None) != (trusted.embedding is None):
        raise IngestError(
            f"--features: the trusted file {trusted.description} must be a feature table exactly when the source "
            f"{raw.description} is one; give both as feature tables (with the --features column) or neither"
        )
    if emb is not None and trusted.embedding is not None:
        if emb.shape[1] != trusted.embedding.shape[1]:
            raise IngestError(
                f"embedding sizes differ: {raw.description} has {emb.shape[1]} values per row, the trusted file "
                f"{trusted.description} {trusted.embedding.shape[1]}; compute both with the same model"
            )
        emb = np.concatenate([emb, trusted.embedding])
    errors += list(trusted.extra.get("errors", [None] * t.num_rows))
    return _stack(table, t, raw.description, trusted.description), emb, errors


def _stack(table: pa.Table, trusted_src: pa.Table, src: str, tr: str) -> pa.Table:
    """The source table over the trusted one. Their first five columns are ingest's own (same
    names, cast to the source's types); then the user columns of either file, null where the
    other lacks one: a column both have must have one type, or one that both cast to."""
    base = pa.schema([table.schema.field(i) for i in range(5)])  # id, uri, image, label_raw, split
    trusted = trusted_src.select(base.names).cast(base)
    names = list(dict.fromkeys(table.column_names[5:] + trusted_src.column_names[5:]))
    for name in names:
        a = table.schema.field(name).type if name in table.column_names else None
        b = trusted_src.schema.field(name).type if name in trusted_src.column_names else None
        kind = a if a is not None else b
        if a is not None and b is not None and a != b:
            try:
                kind = pa.unify_schemas([pa.schema([(name, a)]), pa.schema([(name, b)])],
                                        promote_options="permissive").field(name).type
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
                raise IngestError(f"column {name!r} is {a} in {src} but {b} in the trusted file {tr}; write it with "
                                  "one type in both files") from exc
        if a is None:
            table = table.append_column(pa.field(name, kind), pa.nulls(table.num_rows, kind))
        if name in trusted_src.column_names:
            trusted = trusted.append_column(pa.field(name, kind), trusted_src[name].cast(kind))
        else:
            trusted = trusted.append_column(pa.field(name, kind), pa.nulls(trusted.num_rows, kind))
        if a is not None and a != kind:
            table = table.set_column(table.schema.get_field_index(name), pa.field(name, kind), table[name].cast(kind))
    return pa.concat_tables([table, trusted.select(table.column_names)])


def _first_label(table: pa.Table, desc: str) -> str:
    """``m.csv row 0 (id 'a') has 'cat'``: the first labelled row, to show what kind of label a file holds."""
    values = table["label_raw"].to_pylist()
    i = next((j for j, v in enumerate(values) if v is not None), None)
    return desc if i is None else f"{desc} row {i} (id {table['id'][i].as_py()!r}) has {values[i]!r}"


def _align_labels(
    table: pa.Table, classes: list[str] | None, trusted: pa.Table, trusted_classes: list[str] | None
) -> tuple[pa.Table, pa.Table]:
    """Compare labels by class name where a side names its classes itself (an image folder, digits):
    a trusted folder's indices count its own sub-folders, which need not be the source's."""
    if _is_int(trusted) and trusted_classes is not None:
        trusted = _as_names(trusted, trusted_classes)
    if _is_int(table) and not _is_int(trusted) and classes is not None:
        table = _as_names(table, classes)
    return table, trusted


def _is_int(table: pa.Table) -> bool:
    return pa.types.is_integer(table.schema.field("label_raw").type)


def _as_names(table: pa.Table, classes: list[str]) -> pa.Table:
    """Integer labels replaced by the names in ``classes`` that they index (null stays null)."""
    names = pc.take(pa.array(classes, pa.string()), table["label_raw"])
    return table.set_column(table.schema.get_field_index("label_raw"), "label_raw", names)


def _check_unique_ids(ids: pa.ChunkedArray, rows: Rows) -> None:
    counts = pc.value_counts(ids)  # in order of first appearance, without a Python object per id
    repeated = pc.greater(counts.field("counts"), 1)
    if pc.any(repeated).as_py():
        dups = counts.field("values").filter(repeated).to_pylist()
        first = np.flatnonzero(pc.equal(ids, dups[0]).to_numpy(zero_copy_only=False))[:2].tolist()
        raise IngestError(
            f"{len(dups)} duplicate id(s) {_show(dups, 5)}: id {dups[0]!r} is {rows.where(first[0])} and "
            f"{rows.where(first[1])}; every row needs a unique id: rename or remove the duplicates"
        )


def _map_labels(
    table: pa.Table, known: list[str] | None, rows: Rows, *, has_trusted_file: bool
) -> tuple[np.ndarray, list[str], list]:
    """Class indices (-1 where missing, with a row error), the class names, and row errors."""
    raw = table["label_raw"].to_pylist()
    is_trusted = [s == schema.TRUSTED for s in table["split"].to_pylist()]
    errors: list[str | None] = [None if v is not None else "label is missing" for v in raw]
    from_trusted_file = [t and has_trusted_file for t in is_trusted]
    if pa.types.is_integer(table.schema.field("label_raw").type):
        negative = [i for i, v in enumerate(raw) if v is not None and v < 0]
        if negative:
            i = negative[0]
            raise IngestError(
                f"{rows.where(i)} has label {raw[i]}: integer labels are class indices 0..C-1, never negative "
                f"({len(negative)} row(s) like it); fix the label, or leave the cell empty for a missing label"
            )
        main = [i for i, v in enumerate(raw) if v is not None and not from_trusted_file[i]]
        if known is None:
            classes = [str(c) for c in range(max((raw[i] for i in main), default=-1) + 1)]
            _check_index_range(raw, main, len(classes), rows)
        else:
            classes = list(known)
        unknown = [i for i, v in enumerate(raw) if v is not None and v >= len(classes)]
        if unknown:
            i = unknown[0]
            raise IngestError(
                f"{rows.where(i)} has label {raw[i]}, not a class of the source (indices 0..{len(classes) - 1}; "
                f"{len(unknown)} row(s) like it); fix the label, or add rows of that class to the source"
            )
        labels = np.array([-1 if v is None else v for v in raw], dtype=np.int64)
    else:
        main_names = {v for v, t in zip(raw, from_trusted_file) if v is not None and not t}
        classes = list(known) if known is not None else sorted(main_names)
        index = {name: i for i, name in enumerate(classes)}
        unknown_rows = [i for i, v in enumerate(raw) if v is not None and v not in index]
        if unknown_rows:
            i = unknown_rows[0]
            unknown = sorted({raw[j] for j in unknown_rows})
            raise IngestError(
                f"unknown label name(s) {unknown}: {rows.where(i)} has label {raw[i]!r}, which is not among the "
                f"source's classes {_show(classes)}; fix the trusted file's labels or add rows of those classes "
                "to the source"
            )
        labels = np.array([-1 if v is None else index[v] for v in raw], dtype=np.int64)
    if not classes:
        raise IngestError(
            f"{rows.source}: no row has a label (all {len(raw)} are missing); fill the 'label' column "
            "with class indices or class names"
        )
    return labels, classes, errors


def _check_index_range(raw: list[Any], main: list[int], num_classes: int, rows: Rows) -> None:
    """Refuse integer labels that leave most of 0..max without a row: one stray value (1000 among
    0..9) would make a thousand empty classes, and noise injection would flip labels into them."""
    used = {raw[i] for i in main}
    empty = num_classes - len(used)
    if empty * 2 > num_classes:
        i = max(main, key=lambda j: raw[j])
        raise IngestError(
            f"{rows.where(i)} has label {raw[i]}: integer labels are class indices 0..C-1, and this makes "
            f"{num_classes} classes of which {empty} have no row; fix the label if it is a typo, or give the labels "
            "as class names (text; pandas: df['label'] = df['label'].astype(str)) if they are codes, not indices"
            + (f"; --max-rows {rows.cut} read only the first {rows.cut} rows: raise it so that every class has rows"
               if rows.cut else "")
        )


def _splits(values: list[str | None], rows: Rows) -> list[str | None]:
    allowed = set(schema.SPLITS)
    bad_rows = [i for i, v in enumerate(values) if v is not None and v not in allowed]
    if bad_rows:
        i = bad_rows[0]
        bad = sorted({str(values[j]) for j in bad_rows})
        raise IngestError(
            f"unknown split value(s) {_show(bad)}: {rows.where(i)} has split {values[i]!r}; the split column takes "
            f"{', '.join(schema.SPLITS)} (or an empty cell): rename the value"
        )
    return list(values)


def _check_classes(labels: np.ndarray, usable: np.ndarray, classes: list[str], errors: list[str | None],
                   rows: Rows) -> None:
    """At least two classes with a usable row: every later stage trains a classifier (embed's
    cross-fitted head first), which a single class, or none, cannot give."""
    present = sorted(set(labels[usable & (labels >= 0)].tolist()))
    if not present:
        i = next(j for j, e in enumerate(errors) if e is not None)
        raise IngestError(
            f"no usable row: all {len(errors)} rows have an error, e.g. {rows.where(i)}: {errors[i]}; "
            "fix what the errors say (summary.json of a run with fewer bad rows lists more)"
        )
    if len(present) < 2:
        others = [c for j, c in enumerate(classes) if j not in present]
        why = (f" (class(es) {_show(others)} have no usable row: their rows have errors)" if others else "")
        raise IngestError(
            f"{rows.source}: only one class, {classes[present[0]]!r}, has usable rows{why}; finding noisy labels "
            "needs at least two classes: add rows of another class"
            + (f" (--max-rows {rows.cut} read only the first {rows.cut} rows: raise it, or shuffle the file)"
               if rows.cut else "")
        )


def _stratified(rows: np.ndarray, labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    out = []
    for c in np.unique(labels[rows]):
        members = rng.permutation(rows[labels[rows] == c])
        out.append(members[: int(round(fraction * len(members)))])
    return np.concatenate(out) if out else rows[:0]


def check_image(image: bytes | None, uri: str | None) -> ImageCheck:
    """Decode one image fully: (why the row cannot be used, or None; its (height, width) if it decodes)."""
    if image is None and uri is None:
        return "row has neither image bytes nor uri", None
    try:
        img = open_image(image, uri)
    except ImageError as exc:
        return str(exc), None
    return None, (img.size[1], img.size[0])


def _validate_images(table: pa.Table, *, workers: int) -> list[ImageCheck]:
    """Decode every image once (threads; PIL releases the GIL) and return per-row checks."""
    images = table["image"].to_pylist()
    uris = table["uri"].to_pylist()

    def check(i: int) -> ImageCheck:
        return check_image(images[i], uris[i])

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(track(pool.map(check, range(table.num_rows)), "validating images", total=table.num_rows))


def _one_image_size(
    table: pa.Table, checks: list[ImageCheck], params: IngestParams, rows: Rows
) -> tuple[pa.Table, list[str | None], dict[str, Any]]:
    """One image size per run, which embed's networks and ``winnow train`` stack into one tensor.

    With ``--image-size`` every decodable image of another size is resized to it and stored as PNG
    bytes in ``image`` (``uri`` kept, to say where it came from). Without it the run's size is the
    most common one (ties: the earliest row's) and a row of another size keeps an error that says
    how to fix it. Returns the table, the per-row errors and what the summary records.
    """
    errors = [e for e, _ in checks]
    sizes = [s for _, s in checks]
    counts = Counter(s for s in sizes if s is not None)
    if not counts:
        return table, errors, {"image_size": None, "resized": 0}
    if params.image_size:
        target = parse_image_size(params.image_size)
        todo = [i for i, s in enumerate(sizes) if s is not None and s != target]
        if todo:
            table = _resize_rows(table, todo, target, workers=params.decode_workers)
        return table, errors, {"image_size": list(target), "resized": len(todo)}
    first = {s: i for i, s in reversed(list(enumerate(sizes))) if s is not None}  # earliest row of each size
    target = max(counts, key=lambda s: (counts[s], -first[s]))
    h, w = target
    odd = [(i, s) for i, s in enumerate(sizes) if s is not None and s != target]
    for i, (oh, ow) in odd:
        errors[i] = (
            f"image is {oh}x{ow} px (height x width) but the run's images are {h}x{w}, its most "
            f"common size; resize it to {h}x{w}, or pass --image-size {h}x{w} (config: image_size = \"{h}x{w}\") "
            "to resize every image at ingest"
        )
    if odd:
        log.warning("ingest: %d row(s) have an image size other than the run's %dx%d, e.g. %s; they are kept with "
                    "an error (pass --image-size %dx%d to resize them instead)", len(odd), h, w, rows.where(odd[0][0]), h, w)
    return table, errors, {"image_size": [h, w], "resized": 0}


def _resize_rows(table: pa.Table, todo: list[int], size: tuple[int, int], *, workers: int) -> pa.Table:
    """``table`` with the images of rows ``todo`` resized to ``size`` and stored as PNG bytes."""
    images, uris = table["image"].to_pylist(), table["uri"].to_pylist()

    def resize(i: int) -> bytes:
        return encode_png(image_to_array(fit_image(open_image(images[i], uris[i]), *size)))

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for i, data in zip(todo, track(pool.map(resize, todo), "resizing images", total=len(todo))):
            images[i] = data
    return table.set_column(table.schema.get_field_index("image"), "image", pa.array(images, pa.binary()))


def _pixels(table: pa.Table, usable: np.ndarray, *, workers: int) -> np.ndarray:
    """(n, H*W*C) float32 pixels of the usable rows (NaN rows elsewhere), for ``model`` noise.
    Every usable row has the run's one image size by now."""
    images, uris = table["image"].to_pylist(), table["uri"].to_pylist()
    rows = np.flatnonzero(usable)

    def load(i: int) -> np.ndarray:
        return image_to_array(open_image(images[i], uris[i])).reshape(-1).astype(np.float32)

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        arrays = list(track(pool.map(load, rows), "decoding images for model noise", total=len(rows)))
    x = np.full((table.num_rows, len(arrays[0]) if arrays else 1), np.nan, dtype=np.float32)
    if arrays:
        x[rows] = np.stack(arrays)
    return x


def _check_trusted(labels: np.ndarray, split: np.ndarray, usable: np.ndarray, classes: list[str], allow_missing: bool) -> None:
    train_classes = set(labels[(split == schema.TRAIN) & usable & (labels >= 0)].tolist())
    trusted_classes = set(labels[(split == schema.TRUSTED) & usable].tolist())
    missing = sorted(train_classes - trusted_classes)
    if missing and not allow_missing:
        names = [classes[c] for c in missing]
        raise IngestError(
            f"class(es) {names} have no trusted example; give a trusted set (a 'split' column, --trusted PATH or "
            "--trusted-per-class N), or pass --allow-missing-trusted"
        )


def _summary(manifest: pa.Table, classes: list[str], noise_info: dict, dropped_imbalance: int, raw: RawSource) -> dict:
    split = manifest["split"].to_pylist()
    labels = manifest["label"].to_pylist()
    errors = manifest["error"].to_pylist()
    per_class = {name: {s: 0 for s in schema.SPLITS} for name in classes}
    for lab, s in zip(labels, split):
        if lab is not None:
            per_class[classes[lab]][s] += 1
    return {
        "source": raw.description,
        "rows": manifest.num_rows,
        "classes": classes,
        "splits": dict(Counter(split)),
        "per_class": per_class,
        "errors": sum(e is not None for e in errors),
        "error_examples": [{"id": i, "error": e} for i, e in zip(manifest["id"].to_pylist(), errors) if e][:20],
        "noise": noise_info,
        "imbalance_removed": dropped_imbalance,
        "user_columns": schema.user_columns(manifest),
    }
