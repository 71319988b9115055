"""Options of the ingest stage (each becomes a CLI flag and a TOML key)."""

from __future__ import annotations

from dataclasses import dataclass

from winnow.stages.common.params import check_options, option
from winnow.stages.ingest.noise import parse_noise


@dataclass(frozen=True)
class IngestParams:
    source: str = option(
        "digits",
        "What to ingest: 'digits' (scikit-learn's bundled 8x8 digits), an image folder "
        "(root/<class>/<file>), a Parquet or CSV manifest, or a feature table (with --features). "
        "Labels are class indices (integers) or class names (text); in a CSV, ids are kept as written and a "
        "label column of plain integers (3, or 3.0 as pandas writes them) holds indices, any other text "
        "(cat, 03) names. An empty cell is missing: a missing label keeps its row with an error.",
        cli=False,
    )
    trusted: str = option(
        "",
        "A second manifest or image folder whose rows form the trusted (clean) split; its labels are "
        "matched to the source's classes by name (by index when both hold integers).",
    )
    data_root: str = option(
        "",
        "Folder that every image a manifest names (uri, or the path of an image struct) or an image folder "
        "holds must resolve under, symbolic links followed; default: the manifest's own folder (an image "
        "folder: itself). Relative paths stay relative to the manifest. A path outside keeps its row with "
        "an error that does not tell whether the file exists.",
    )
    allow_any_path: bool = option(
        False,
        "Read image paths anywhere, outside the data root too (the behaviour before --data-root). Only for "
        "manifests you trust: a manifest could name any file this process may read and put it in the report.",
    )
    trusted_per_class: int = option(0, "Sample this many trusted rows per class (seeded; for experiments).",
                                    min=0, note="0 = none")
    features: str = option("", "Treat the source as a feature table and use this column as the embedding.")
    inject_noise: str = option(
        "",
        "Inject label noise into the train split: uniform:P, pair:P, background:P[:CLASS] or model:P (the P most "
        "confusable rows take a cross-fitted model's likeliest wrong class, as people err); every chosen label "
        "really changes; the original is kept in true_label.",
    )
    imbalance: float = option(1.0, "Subsample the train split to this max/min class ratio (exponential profile).",
                              min=1, note="a max/min class ratio; 1 = off")
    test_fraction: float = option(
        -1.0, "Hold out this stratified fraction of unsplit rows as the test split (-1: 0.2 for digits, else 0).",
        min=0, max=1, max_open=True, also=-1, note="-1 = the default",
    )
    allow_missing_trusted: bool = option(False, "Allow classes that have no trusted example.")
    max_rows: int = option(0, "Read at most this many rows of the source (0 = all).", min=0, note="0 = all rows")
    decode_workers: int = option(0, "Threads that decode images to validate them (0 = one per core).",
                                 min=0, note="0 = one per core")
    image_size: str = option(
        "",
        "HEIGHTxWIDTH (e.g. 32x32): resize every image of another size to it (scaled to cover, centre-cropped) "
        "and store it as PNG bytes in the manifest, so that every later stage sees one size. Without it, the "
        "run's size is its most common one and an image of another size keeps its row with an error.",
    )
    corrections: str = option(
        "",
        "A review's decisions to apply to the manifest: a run's review/corrections.parquet (winnow review), "
        "or a CSV the report downloads (id, action, label, reviewer, time). accept/relabel set the label, "
        "drop marks the row unusable (kept, with its error), and review_action records each decision.",
    )
    as_trusted: bool = option(False, "With --corrections: rows a person labelled (accept, keep, relabel) join "
                                     "the trusted split.")

    def __post_init__(self) -> None:
        check_options(self)
        if self.as_trusted and not self.corrections:
            raise ValueError("option --as-trusted needs --corrections FILE (the decisions whose rows move)")
        if self.inject_noise:
            parse_noise(self.inject_noise)
        if self.image_size:
            parse_image_size(self.image_size)
            if self.features:
                raise ValueError("option --image-size resizes images; a feature table (--features) has none: drop one of them")


MAX_IMAGE_SIDE = 8192


def parse_image_size(text: str) -> tuple[int, int]:
    """``--image-size`` as (height, width): ``HxW`` (``32x32``) or one number for a square (``32``)."""
    parts = text.lower().replace(" ", "").split("x")
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or not all(1 <= int(p) <= MAX_IMAGE_SIDE for p in parts):
        raise ValueError(
            f"option --image-size {text!r}: expected HEIGHTxWIDTH in pixels, each 1..{MAX_IMAGE_SIDE} (e.g. 32x32)"
        )
    return int(parts[0]), int(parts[1])
