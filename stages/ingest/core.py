"""The ingest core: read a source, map labels, split, validate images, inject noise.

Nothing usable is lost: a row whose image cannot be read or whose label is missing stays in
the manifest with ``error`` set. Problems with the input as a whole (duplicate ids, unknown
label names, no trusted example for a class, empty input) raise :class:`IngestError`.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stages.common import schema
from stages.common.arrow import vectors_to_arrow, with_metadata
from stages.common.images import ImageError, open_image
from stages.common.params import to_dict
from stages.common.progress import track
from stages.ingest import noise as noise_mod
from stages.ingest.params import IngestParams
from stages.ingest.sources import RawSource, SourceError, read_source


class IngestError(ValueError):
    """The input as a whole cannot be ingested; the message names the problem and the fix."""


@dataclass
class IngestResult:
    manifest: pa.Table  # schema.MANIFEST_SCHEMA, with class names as metadata
    features: pa.Table | None  # id + embedding, when the source was a feature table
    summary: dict[str, Any]


def _rng(seed: int, purpose: int) -> np.random.Generator:
    """An independent stream per random choice, so that changing one option reshuffles nothing else."""
    return np.random.default_rng([seed, purpose])


def ingest(
    params: IngestParams, *, seed: int = 0, validate: Callable[[pa.Table], list[str | None]] | None = None
) -> IngestResult:
    """Build the manifest described by ``params`` (see :class:`IngestParams`).

    ``validate`` maps the combined source table (``id``, ``uri``, ``image``, ...) to one error
    (or None) per row, as :func:`validate_image` gives; default: threads in this process. The
    Beam executor passes a function that decodes the images on its workers instead.
    """
    try:
        raw = read_source(params.source, features=params.features, max_rows=params.max_rows)
        trusted_raw = read_source(params.trusted, features=params.features) if params.trusted else None
    except SourceError as exc:
        raise IngestError(str(exc)) from exc
    if raw.table.num_rows == 0:
        raise IngestError(f"source {params.source!r} has no rows; nothing to ingest")
    table, embedding, feature_errors = _combine(raw, trusted_raw)
    n = table.num_rows
    _check_unique_ids(table["id"].to_pylist())

    labels, classes, errors = _map_labels(table, raw.class_names, has_trusted_file=trusted_raw is not None)
    for i, e in enumerate(feature_errors):
        errors[i] = errors[i] or e
    split = _splits(table["split"].to_pylist())

    check = validate or (lambda t: _validate_images(t, workers=params.decode_workers))
    image_errors = check(table) if embedding is None else [None] * n
    errors = [a or b for a, b in zip(errors, image_errors)]
    usable = np.array([e is None for e in errors])
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
        labels = noise_mod.inject_noise(
            labels, candidates, kind=kind, rate=rate, num_classes=num_classes, background=background, rng=_rng(seed, 4)
        )
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
    ).filter(pa.array(keep))
    manifest = with_metadata(manifest, classes=classes, params=to_dict(params))

    features = None
    if embedding is not None:
        ok = np.array([e is None for e in errors])
        features = pa.table({"id": table["id"], schema.EMBEDDING: vectors_to_arrow(embedding, valid=ok)}).filter(pa.array(keep))
        features = with_metadata(features, classes=classes)
    return IngestResult(manifest, features, _summary(manifest, classes, noise_info, int((~keep).sum()), raw))


def _combine(raw: RawSource, trusted: RawSource | None) -> tuple[pa.Table, np.ndarray | None, list[str | None]]:
    """Stack the trusted manifest under the main one (its rows all get split=trusted)."""
    table, emb = raw.table, raw.embedding
    errors = list(raw.extra.get("errors", [None] * table.num_rows))
    if trusted is None:
        return table, emb, errors
    t = trusted.table.set_column(4, "split", pa.array([schema.TRUSTED] * trusted.table.num_rows, pa.string()))
    table, t = _align_labels(table, raw.class_names, t, trusted.class_names)
    if table.schema.field("label_raw").type != t.schema.field("label_raw").type:
        raise IngestError(
            "the trusted manifest's labels must be of the same kind as the source's: both class indices (integers) "
            "or both class names (text); write the same kind in both files"
        )
    if (emb is None) != (trusted.embedding is None):
        raise IngestError("the trusted table must be a feature table exactly when the source is one (--features)")
    if emb is not None and trusted.embedding is not None:
        if emb.shape[1] != trusted.embedding.shape[1]:
            raise IngestError(f"embedding sizes differ: source {emb.shape[1]}, trusted {trusted.embedding.shape[1]}")
        emb = np.concatenate([emb, trusted.embedding])
    errors += list(trusted.extra.get("errors", [None] * t.num_rows))
    return pa.concat_tables([table, t.cast(table.schema)]), emb, errors


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


def _check_unique_ids(ids: list[str]) -> None:
    counts = Counter(ids)
    dups = [i for i, c in counts.items() if c > 1]
    if dups:
        shown = ", ".join(repr(d) for d in dups[:5])
        raise IngestError(f"{len(dups)} duplicate id(s), e.g. {shown}; every row needs a unique id")


def _map_labels(table: pa.Table, known: list[str] | None, *, has_trusted_file: bool) -> tuple[np.ndarray, list[str], list]:
    """Class indices (-1 where missing, with a row error), the class names, and row errors."""
    raw = table["label_raw"].to_pylist()
    is_trusted = [s == schema.TRUSTED for s in table["split"].to_pylist()]
    errors: list[str | None] = [None if v is not None else "label is missing" for v in raw]
    if pa.types.is_integer(table.schema.field("label_raw").type):
        values = [v for v in raw if v is not None]
        if any(v < 0 for v in values):
            bad = sorted({v for v in values if v < 0})
            raise IngestError(f"negative label value(s) {bad}; integer labels must be class indices 0..C-1")
        main_values = [v for v, t in zip(raw, is_trusted) if v is not None and not (t and has_trusted_file)]
        num = max(main_values, default=-1) + 1
        classes = list(known) if known is not None else [str(c) for c in range(num)]
        unknown = sorted({v for v in values if v >= len(classes)})
        if unknown:
            raise IngestError(f"label value(s) {unknown} are not classes of the source (0..{len(classes) - 1})")
        labels = np.array([-1 if v is None else v for v in raw], dtype=np.int64)
    else:
        main_names = {v for v, t in zip(raw, is_trusted) if v is not None and not (t and has_trusted_file)}
        classes = list(known) if known is not None else sorted(main_names)
        index = {name: i for i, name in enumerate(classes)}
        unknown = sorted({v for v in raw if v is not None and v not in index})
        if unknown:
            raise IngestError(
                f"unknown label name(s) {unknown}: not among the source's classes {classes}; "
                "fix the trusted manifest's labels or add those classes to the source"
            )
        labels = np.array([-1 if v is None else index[v] for v in raw], dtype=np.int64)
    if not classes:
        raise IngestError("no labelled row: every row's label is missing")
    return labels, classes, errors


def _splits(values: list[str | None]) -> list[str | None]:
    allowed = set(schema.SPLITS)
    bad = sorted({v for v in values if v is not None and v not in allowed})
    if bad:
        raise IngestError(f"unknown split value(s) {bad}; the split column takes {', '.join(schema.SPLITS)} (or null)")
    return list(values)


def _stratified(rows: np.ndarray, labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    out = []
    for c in np.unique(labels[rows]):
        members = rng.permutation(rows[labels[rows] == c])
        out.append(members[: int(round(fraction * len(members)))])
    return np.concatenate(out) if out else rows[:0]


def validate_image(image: bytes | None, uri: str | None) -> str | None:
    """Decode one image fully; return why the row cannot be used, or None if it decodes."""
    if image is None and uri is None:
        return "row has neither image bytes nor uri"
    try:
        open_image(image, uri)
    except ImageError as exc:
        return str(exc)
    return None


def _validate_images(table: pa.Table, *, workers: int) -> list[str | None]:
    """Decode every image once (threads; PIL releases the GIL) and return per-row errors."""
    images = table["image"].to_pylist()
    uris = table["uri"].to_pylist()

    def check(i: int) -> str | None:
        return validate_image(images[i], uris[i])

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(track(pool.map(check, range(table.num_rows)), "validating images", total=table.num_rows))


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
    }
