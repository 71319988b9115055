"""Options of the ingest stage (each becomes a CLI flag and a TOML key)."""

from __future__ import annotations

from dataclasses import dataclass

from stages.common.params import option


@dataclass(frozen=True)
class IngestParams:
    source: str = option(
        "digits",
        "What to ingest: 'digits' (scikit-learn's bundled 8x8 digits), an image folder "
        "(root/<class>/<file>), a Parquet or CSV manifest, or a feature table (with --features).",
        cli=False,
    )
    trusted: str = option("", "A second manifest whose rows form the trusted (clean) split.")
    trusted_per_class: int = option(0, "Sample this many trusted rows per class (seeded; for experiments).")
    features: str = option("", "Treat the source as a feature table and use this column as the embedding.")
    inject_noise: str = option(
        "",
        "Inject label noise into the train split: uniform:P, pair:P or background:P[:CLASS]; "
        "every chosen label really changes; the original is kept in true_label.",
    )
    imbalance: float = option(1.0, "Subsample the train split to this max/min class ratio (exponential profile).")
    test_fraction: float = option(
        -1.0, "Hold out this stratified fraction of unsplit rows as the test split (-1: 0.2 for digits, else 0)."
    )
    allow_missing_trusted: bool = option(False, "Allow classes that have no trusted example.")
    max_rows: int = option(0, "Read at most this many rows of the source (0 = all).")
    decode_workers: int = option(0, "Threads that decode images to validate them (0 = one per core).")
