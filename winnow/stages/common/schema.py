"""The artifact contract of DESIGN.md, in one place: file names, column names and types.

Every table carries ``id`` (string) and keeps the manifest's row order, so that any tool can
join the artifacts without winnow installed.
"""

from __future__ import annotations

import pyarrow as pa

# Values of the manifest's ``split`` column.
TRAIN, TRUSTED, TEST = "train", "trusted", "test"
SPLITS = (TRAIN, TRUSTED, TEST)

# Schema-metadata keys (bytes, JSON values) written on every table winnow produces.
META_CLASSES = b"winnow.classes"  # JSON list of class names, index = label
META_PARAMS = b"winnow.params"  # JSON object of the producing stage's parameters

# File names, one per artifact.
MANIFEST = "manifest.parquet"
FEATURES = "features.parquet"
CORESET = "coreset.parquet"
WEIGHTS = "weights.parquet"
CURATED = "curated.parquet"
TRAIN_MANIFEST = "train.parquet"
FLAGS = "flags.parquet"
SUMMARY = "summary.json"
REPORT = "report.html"

MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("uri", pa.string()),  # path (absolute, or relative to the manifest's source)
        pa.field("image", pa.binary()),  # encoded image bytes (PNG/JPEG)
        pa.field("label", pa.int32()),  # given (possibly noisy) label, index into classes
        pa.field("label_name", pa.string()),
        pa.field("split", pa.string(), nullable=False),  # train | trusted | test
        pa.field("error", pa.string()),  # null, or why the row cannot be used
        pa.field("true_label", pa.int32()),  # the label before noise injection (null if unknown)
    ]
)

# features.parquet: id + fixed_size_list<float32> vectors (null for rows with an error).
EMBEDDING, PROBS, GRAD_EMBEDDING = "embedding", "probs", "grad_embedding"

CORESET_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("selected", pa.bool_(), nullable=False),
        pa.field("cluster_id", pa.int64()),  # manifest row of the medoid this row is assigned to
        pa.field("coreset_weight", pa.float32()),  # CRAIG: cluster size for medoids, 0 otherwise
        pa.field("gain", pa.float32()),  # marginal gain when selected
        pa.field("rank", pa.int32()),  # selection order within its class
        pa.field("method", pa.string()),
    ]
)

# weights.parquet: these columns plus one float32 column per round, named round_0, round_1, ...
WEIGHT_COLUMNS = (
    "weight",  # mean over all recorded, per-batch normalised weights
    "weight_last",
    "weight_std",
    "times_seen",
    "zero_fraction",
    "loss_mean",
)

# Columns export adds.
NOISE_COLUMNS = ("noise_score", "noise_flag", "suggested_label", "suggested_confidence")

# Columns export adds with --fdr and its audit of the kNN graph (DESIGN.md; outlier_flag is winnow's addition).
AUDIT_COLUMNS = ("noise_pvalue", "noise_flag_fdr", "duplicate_of", "duplicate_kind", "outlier_score", "outlier_flag")

# The manifest column applied review decisions add (winnow.stages.review.apply).
REVIEW_ACTION = "review_action"

# What ingest reads from a manifest file itself; every other column is the user's and passes
# through to manifest.parquet and the exported manifests unchanged.
SOURCE_COLUMNS = ("id", "uri", "image", "label", "split")

# Names winnow writes into the manifests (or uses internally while ingesting): a user column
# with one of these names would be replaced or would clash, so ingest refuses it.
RESERVED_COLUMNS = frozenset(
    MANIFEST_SCHEMA.names + ["label_raw", EMBEDDING, PROBS, GRAD_EMBEDDING] + CORESET_SCHEMA.names
    + list(WEIGHT_COLUMNS) + list(NOISE_COLUMNS) + list(AUDIT_COLUMNS) + [REVIEW_ACTION]
)


def is_reserved(name: str) -> bool:
    """Whether ``name`` is a column winnow writes (``round_<k>`` included: one per weight round)."""
    return name in RESERVED_COLUMNS or (name.startswith("round_") and name[6:].isdigit())


def user_columns(manifest: pa.Table | pa.Schema) -> list[str]:
    """The user's own columns of a manifest: those that are not winnow's, in file order."""
    names = manifest.names if isinstance(manifest, pa.Schema) else manifest.column_names
    return [c for c in names if c not in MANIFEST_SCHEMA.names and not is_reserved(c)]
