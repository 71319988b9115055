"""The thin adapters: for each stage, which artifacts it reads, how it calls the stage's pure
core, and what it writes. Everything here is I/O and wiring; the computing is in ``stages``."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from winnow.pipeline.artifacts import column_names, read_table, read_vectors, write_table
from winnow.pipeline.rundir import RunDir, json_digest
from winnow.pipeline.runner import StageContext
from winnow.stages.common import schema
from winnow.stages.common.arrow import class_names, vectors_from_arrow, vectors_to_arrow, with_metadata
from winnow.stages.common.params import check_options, option, to_dict
from winnow.stages.common.rows import labels_array, split_array, usable_mask


@dataclass(frozen=True)
class Step:
    """A stage as the pipeline sees it: its parameters, inputs and adapter."""

    name: str
    params_cls: type
    required: tuple[str, ...]  # upstream stages that must have completed
    optional: tuple[str, ...]  # upstream stages used when present
    adapter: Callable[[StageContext, Any], dict[str, Any]]
    summary: str


def source_digest(*paths: str, data_root: str = "", allow_any_path: bool = False) -> str:
    """Fingerprint of ingest's sources: file sizes and modification times (not contents: an image
    folder can hold millions of files), including the image files a manifest's ``uri`` column
    names, or the scikit-learn version for the bundled digits. Only files under the data root
    count (see :mod:`winnow.stages.ingest.sources`): one outside is neither read nor stat'ed."""
    from winnow.stages.ingest.sources import source_files

    entries: list[Any] = []
    for p in paths:
        if not p:
            continue
        if p == "digits":
            import sklearn

            entries.append(["digits", sklearn.__version__])
            continue
        files = source_files(p, data_root=data_root, allow_any_path=allow_any_path)
        entries.append([str(Path(p).resolve())] + [[str(f), *_stat(f)] for f in files])
    return json_digest(entries)


def _stat(path: Path) -> list[int | None]:
    try:
        st = path.stat()
    except OSError:
        return [None, None]  # missing: ingest keeps the row with its error; appearing later changes this
    return [st.st_size, st.st_mtime_ns]


def code_digest() -> str:
    """Digest of the computing code (``stages`` and ``models``): a code change invalidates the
    cache even within one version (it matters while developing; installed code never changes)."""
    from winnow import models, stages

    h = hashlib.sha256()
    for pkg in (stages, models):
        root = Path(pkg.__file__).parent
        for p in sorted(root.rglob("*.py")):
            h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def input_digests(run: RunDir, step: Step, params: Any) -> dict[str, str]:
    """Digest of every input of ``step`` as it is now (upstream output digests and the code).

    Raises ValueError when an upstream stage's outputs were computed from an earlier version of
    its own inputs (``winnow ingest`` re-run with new data, then ``winnow export`` alone): joining
    them would mix two datasets with nothing to show for it.
    """
    out: dict[str, str] = {"code": code_digest()}
    if step.name == "ingest":
        out["source"] = source_digest(params.source, params.trusted, data_root=params.data_root,
                                      allow_any_path=params.allow_any_path)
    for up in step.required + step.optional:
        rec = run.record(up)
        if rec is None:
            if up in step.required:
                run.path(up, "stage.json")  # raises StageMissing with the command to run
            continue
        stale = outdated_input(run, up)
        if stale is not None:
            raise ValueError(
                f"{up}'s outputs were computed from an earlier {stale} that has since been re-run; "
                f"run `winnow {up} --run-dir {run.root}` again first (or `winnow run` for every stage)")
        out[up] = rec["digest"]
    return out


def outdated_input(run: RunDir, stage: str) -> str | None:
    """The upstream stage whose current outputs differ from those ``stage`` was computed from
    (searched transitively), or None when ``stage`` is up to date."""
    for up, digest in (run.record(stage) or {}).get("inputs", {}).items():
        if up not in STEPS:
            continue  # the code or ingest's source files: not another stage's outputs
        current = run.record(up)
        if current is None or current.get("digest") != digest:
            return up
        deeper = outdated_input(run, up)
        if deeper is not None:
            return deeper
    return None


# ---------------------------------------------------------------------------------------------
# ingest


def ingest_adapter(ctx: StageContext, params: Any) -> dict[str, Any]:
    from winnow.stages.ingest import ingest

    result = ingest(params, seed=ctx.seed)
    write_table(result.manifest, ctx.out / schema.MANIFEST)
    if result.features is not None:
        write_table(result.features, ctx.out / schema.FEATURES)
    (ctx.out / schema.SUMMARY).write_text(json.dumps(result.summary, indent=2, default=str))
    return {k: v for k, v in result.summary.items() if k in ("rows", "splits", "errors", "noise", "imbalance_removed")}


def load_manifest(run: RunDir) -> pa.Table:
    return read_table(run.path("ingest", schema.MANIFEST))


def ingest_features(run: RunDir) -> np.ndarray | None:
    """The embedding from a feature table given to ingest, if there was one."""
    p = run.path("ingest", schema.FEATURES, required=False)
    return None if p is None else vectors_from_arrow(read_table(p)[schema.EMBEDDING])


def feature_vectors(run: RunDir, column: str) -> np.ndarray:
    """A vector column from embed's features.parquet, or (embedding only) from ingest's table."""
    p = run.path("embed", schema.FEATURES, required=False)
    if p is None and column == schema.EMBEDDING:
        p = run.path("ingest", schema.FEATURES, required=False)
    if p is None:
        run.path("embed", schema.FEATURES)  # raises with the command to run
    names = column_names(p)
    if column not in names:
        raise ValueError(f"{p} has no column {column!r}; vector columns there: "
                         f"{', '.join(n for n in names if n not in ('id', 'error'))}")
    return read_vectors(p, column)


def with_feature_column(run: RunDir, table: pa.Table | None, column: str, *, what: str) -> pa.Table | None:
    """``table`` with the vector ``column`` of the run's features table joined by id, if it lacks it.

    Manifests (``train.parquet``, the test split) carry no feature vectors: they live in
    ``features.parquet`` (joinable on ``id``), so ``train --features embedding`` joins them here.
    """
    if table is None or not column or column in table.column_names:
        return table
    vectors = feature_vectors(run, column)
    ids = load_manifest(run)["id"].cast(pa.string())
    pos = pc.index_in(table["id"].cast(pa.string()), value_set=ids)
    if pos.null_count:
        first = table["id"][int(np.flatnonzero(pc.is_null(pos).to_numpy(zero_copy_only=False))[0])].as_py()
        raise ValueError(f"--features {column}: {pos.null_count} row(s) of the {what} are not in this run's "
                         f"manifest (e.g. id {first!r}), so they have no {column!r}; add a {column!r} column to it")
    return table.append_column(column, vectors_to_arrow(vectors[pos.to_numpy()]))


# ---------------------------------------------------------------------------------------------
# embed


def embed_adapter(ctx: StageContext, params: Any) -> dict[str, Any]:
    import torch

    from winnow.stages.embed.core import run_embed

    manifest = load_manifest(ctx.run)
    classes = class_names(manifest)
    result = run_embed(
        manifest, params, num_classes=len(classes), seed=ctx.seed, device=ctx.device,
        features=ingest_features(ctx.run), checkpoints=ctx.checkpoints,
    )
    write_table(features_table(manifest, result, params), ctx.out / schema.FEATURES)
    if result.model_state is not None:
        torch.save(result.model_state, ctx.out / "backbone.pt")
    return dict(result.metrics)


def features_table(manifest: pa.Table, result: Any, params: Any) -> pa.Table:
    """``features.parquet`` from an :class:`winnow.stages.embed.core.EmbedResult` (both executors).

    ``error`` is the manifest's (ingest) error where there is one, else the error embed found:
    a row that cannot be used keeps its reason in every table. Vectors are written as computed,
    NaN included (never ``nan_to_num``: a zero vector would pass for data on a valid row).
    """
    valid = np.asarray(result.valid, dtype=bool)
    ingest_errors = manifest["error"].to_pylist()
    errors = [ingest or found for ingest, found in zip(ingest_errors, result.errors)]
    table = pa.table(
        {
            "id": manifest["id"],
            schema.EMBEDDING: vectors_to_arrow(result.embedding, valid=valid),
            schema.PROBS: vectors_to_arrow(result.probs, valid=valid),
            schema.GRAD_EMBEDDING: vectors_to_arrow(result.grad_embedding, valid=valid),
            "error": pa.array(errors, pa.string()),
        }
    )
    return with_metadata(table, classes=class_names(manifest), params=to_dict(params))


# ---------------------------------------------------------------------------------------------
# select


def select_inputs(run: RunDir, params: Any) -> tuple[pa.Table, np.ndarray, np.ndarray, np.ndarray]:
    """Manifest, vectors (of ``params.space``), labels (-1 if missing) and the eligible rows:
    usable train rows with finite vectors (both executors)."""
    manifest = load_manifest(run)
    vectors = feature_vectors(run, params.space)
    eligible = usable_mask(manifest) & (split_array(manifest) == schema.TRAIN) & np.isfinite(vectors).all(axis=1)
    return manifest, vectors, labels_array(manifest), eligible


def select_adapter(ctx: StageContext, params: Any) -> dict[str, Any]:
    from winnow.stages.select.core import select

    manifest, vectors, labels, eligible = select_inputs(ctx.run, params)
    result = select(vectors, labels, eligible, params, seed=ctx.seed, device=ctx.device)
    write_table(coreset_table(manifest, result.columns, params), ctx.out / schema.CORESET)
    return dict(result.metrics)


def coreset_table(manifest: pa.Table, cols: dict[str, np.ndarray], params: Any) -> pa.Table:
    """``coreset.parquet`` from the select core's columns (both executors)."""
    table = pa.table(
        {
            "id": manifest["id"],
            "selected": pa.array(cols["selected"], pa.bool_()),
            "cluster_id": pa.array(cols["cluster_id"], pa.int64(), mask=cols["cluster_id"] < 0),
            "coreset_weight": pa.array(cols["coreset_weight"], pa.float32()),
            "gain": pa.array(cols["gain"], pa.float32(), mask=np.isnan(cols["gain"])),
            "rank": pa.array(cols["rank"], pa.int32(), mask=cols["rank"] < 0),
            "method": pa.array([params.method] * manifest.num_rows, pa.string()),
        },
        schema=schema.CORESET_SCHEMA,
    )
    return with_metadata(table, classes=class_names(manifest), params=to_dict(params))


# ---------------------------------------------------------------------------------------------
# weight


def weight_adapter(ctx: StageContext, params: Any) -> dict[str, Any]:
    import functools

    import torch

    from winnow.stages.common.images import decode_batch
    from winnow.stages.weight.core import run_weight

    manifest = load_manifest(ctx.run)
    classes = class_names(manifest)
    split, labels = split_array(manifest), labels_array(manifest)
    usable = usable_mask(manifest)
    embedding = feature_vectors(ctx.run, schema.EMBEDDING)
    usable &= np.isfinite(embedding).all(axis=1)
    train_rows = np.flatnonzero(usable & (split == schema.TRAIN))
    trusted_rows = np.flatnonzero(usable & (split == schema.TRUSTED))
    if len(trusted_rows) == 0:
        raise ValueError("the manifest has no usable trusted row; weighting needs a trusted set (see `winnow ingest --help`)")

    model_factory = None
    if params.trainable == "head":
        x = torch.from_numpy(np.array(embedding, dtype=np.float32))  # writable copy
    else:
        from winnow.models.registry import build_classifier

        # Only the rows trained on are decoded: a row ingest kept with an unreadable image has its
        # ``error`` and no pixels; the others stay zeros and are never indexed.
        used = np.union1d(train_rows, trusted_rows)
        pixels = torch.from_numpy(decode_batch(
            manifest["image"].take(used).to_pylist(), manifest["uri"].take(used).to_pylist(),
            ids=[str(i) for i in manifest["id"].take(used).to_pylist()]))
        x = torch.zeros((manifest.num_rows, *pixels.shape[1:]), dtype=pixels.dtype)
        x[used] = pixels
        # The backbone embed resolved ('auto' -> e.g. small_cnn), from its warmed-up weights if any.
        embed_rec = ctx.run.record("embed") or {}
        model_name = embed_rec.get("metrics", {}).get("model") or embed_rec.get("params", {}).get("model", "auto")
        warm = ctx.run.path("embed", "backbone.pt", required=False)
        model_factory = functools.partial(build_classifier, model_name, len(classes), in_channels=x.shape[1],
                                          weights=None if warm is None else str(warm))
    y = torch.from_numpy(labels)

    coreset = reselect = None
    if params.subset == "coreset":
        from winnow.stages.select.online import reselect as online_reselect
        from winnow.stages.select.params import SelectParams

        table = read_table(ctx.run.path("select", schema.CORESET))
        selected = np.asarray(table["selected"].to_numpy(zero_copy_only=False), dtype=bool)[train_rows]
        weights = table["coreset_weight"].fill_null(0).to_numpy(zero_copy_only=False)[train_rows]
        coreset = (np.flatnonzero(selected), weights[selected].astype(np.float32))
        select_params = SelectParams(**(ctx.run.record("select") or {}).get("params", {}))
        reselect = functools.partial(online_reselect, params=select_params, seed=ctx.seed)

    result = run_weight(
        x[train_rows], y[train_rows], x[trusted_rows], y[trusted_rows], params, num_classes=len(classes),
        seed=ctx.seed, device=ctx.device, checkpoints=ctx.checkpoints, model_factory=model_factory,
        coreset=coreset, reselect=reselect,
    )
    n = manifest.num_rows
    columns: dict[str, pa.Array] = {"id": manifest["id"]}
    in_train = np.zeros(n, dtype=bool)
    in_train[train_rows] = True
    for name, values in result.columns.items():
        full = np.zeros(n, dtype=values.dtype)
        full[train_rows] = values
        typ = pa.int32() if np.issubdtype(values.dtype, np.integer) else pa.float32()
        columns[name] = pa.array(full, typ, mask=~in_train)
    table = with_metadata(pa.table(columns), classes=classes, params=to_dict(params))
    write_table(table, ctx.out / schema.WEIGHTS)
    rounds = ctx.out / "rounds"
    rounds.mkdir()
    for name in sorted(c for c in result.columns if c.startswith("round_")):
        write_table(table.select(["id", name]), rounds / f"{name}.parquet")
    if result.curve is not None:
        write_table(pa.table({k: pa.array(np.asarray(v, dtype=np.float32)) for k, v in result.curve.items()}),
                    ctx.out / "mwn_curve.parquet")
    torch.save(result.model_state, ctx.out / "model.pt")
    return dict(result.metrics)


# ---------------------------------------------------------------------------------------------
# export


def optional_table(run: RunDir, stage: str, name: str) -> pa.Table | None:
    p = run.path(stage, name, required=False)
    return None if p is None else read_table(p)


def export_result(run: RunDir, params: Any, *, seed: int) -> Any:
    """Run the export core on whatever upstream artifacts exist (both executors)."""
    from winnow.stages.export.core import export

    features = optional_table(run, "embed", schema.FEATURES) or optional_table(run, "ingest", schema.FEATURES)
    return export(load_manifest(run), features, optional_table(run, "select", schema.CORESET),
                  optional_table(run, "weight", schema.WEIGHTS), params, seed=seed)


def export_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: summary[k] for k in ("flagged", "noise_estimate", "threshold", "train_rows") if k in summary}


def export_adapter(ctx: StageContext, params: Any) -> dict[str, Any]:
    result = export_result(ctx.run, params, seed=ctx.seed)
    for name, table in ((schema.CURATED, result.curated), (schema.TRAIN_MANIFEST, result.train), (schema.FLAGS, result.flags)):
        write_table(table, ctx.out / name, shard_rows=params.shard_rows)
    (ctx.out / schema.SUMMARY).write_text(json.dumps(result.summary, indent=2, sort_keys=True, default=str))
    return export_metrics(result.summary)


def load_curated(run: RunDir) -> pa.Table:
    return read_table(run.path("export", schema.CURATED))


# ---------------------------------------------------------------------------------------------
# train


def test_table(run: RunDir, test_path: str = "") -> pa.Table | None:
    """The test split of the manifest (usable rows), or a separate ``--test`` manifest."""
    if test_path:
        return read_table(Path(test_path))
    manifest = load_manifest(run)
    keep = (split_array(manifest) == schema.TEST) & usable_mask(manifest)
    return manifest.filter(pa.array(keep)) if keep.any() else None


def train_adapter(ctx: StageContext, params: Any) -> dict[str, Any]:
    import torch

    from winnow.stages.train.core import train_model

    train = read_table(ctx.run.path("export", schema.TRAIN_MANIFEST))
    test = test_table(ctx.run, getattr(params, "test", ""))
    train = with_feature_column(ctx.run, train, params.features, what="training manifest")
    test = with_feature_column(ctx.run, test, params.features, what="test manifest")
    result = train_model(train, test, params, num_classes=len(class_names(train)), seed=ctx.seed, device=ctx.device)
    torch.save(result.model_state, ctx.out / "model.pt")
    (ctx.out / "metrics.json").write_text(json.dumps(untimed(result.metrics), indent=2, sort_keys=True, default=str))
    return dict(result.metrics)


_TIMING_KEY = re.compile(r"(^|_)(s|seconds)$|^timings$")  # seconds, knn_s, images_per_s, warmup_seconds


def untimed(obj: Any) -> Any:
    """``obj`` (metrics) without its timing entries, at any depth.

    Why: what a stage writes into its folder is digested, and a downstream stage's key holds that
    digest; a timing in a file (train's ``seconds``, select's ``knn_s`` in the report) made two
    bit-identical runs differ and invalidated the cache downstream. Timings stay in ``stage.json``.
    """
    if isinstance(obj, dict):
        return {k: untimed(v) for k, v in obj.items() if not (isinstance(k, str) and _TIMING_KEY.search(k))}
    if isinstance(obj, list):
        return [untimed(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------------------------
# evaluate


@dataclass(frozen=True)
class EvaluateParams:
    truth: str = option("", "A Parquet table with id and the true label column 'label'; default: "
                                          "the manifest's true_label (from --inject-noise).")
    downstream: bool = option(True, "Also train on the plain noisy labels (same model and schedule "
                                                "as `winnow train`) and compare test accuracy.")
    policies: str = option("", "Also train on train.parquet as each of these export policies would write it "
                               "(comma-separated, e.g. 'soft,drop-flagged'; same model and schedule as "
                               "`winnow train`) and compare test accuracy: which policy suits your model.")

    def __post_init__(self) -> None:
        _policies(self.policies)  # a typo is bad usage (exit 2), found before anything runs


def evaluate_adapter(ctx: StageContext, params: EvaluateParams) -> dict[str, Any]:
    from winnow.stages.export.evaluate import evaluate_flags
    from winnow.stages.export.params import ExportParams
    from winnow.stages.train.core import train_model
    from winnow.stages.train.params import TrainParams

    policies = _policies(params.policies)  # before any training: a typo fails fast
    train_rec = ctx.run.record("train")
    if policies and train_rec is None:
        raise ValueError("option --policies trains with `winnow train`'s parameters: run `winnow train` first")
    curated = load_curated(ctx.run)
    truth = _truth_labels(Path(params.truth), curated) if params.truth else None
    result: dict[str, Any] = {"flags": evaluate_flags(curated, truth=truth)}
    if train_rec is not None and (params.downstream or policies):
        train_params = TrainParams(**train_rec["params"])
        manifest = load_manifest(ctx.run)
        test = with_feature_column(ctx.run, test_table(ctx.run, getattr(train_params, "test", "")),
                                   train_params.features, what="test manifest")

        def accuracy(table: pa.Table, what: str) -> dict[str, Any]:
            """Test accuracy of `winnow train`'s model and schedule trained on ``table``."""
            table = with_feature_column(ctx.run, table, train_params.features, what=what)
            return _accuracy(train_model(table, test, train_params, num_classes=len(class_names(manifest)),
                                         seed=ctx.seed, device=ctx.device).metrics)

        downstream = {"curated": _accuracy(train_rec["metrics"])}
        if params.downstream:
            plain = manifest.filter(pa.array(usable_mask(manifest) & np.isin(split_array(manifest), [schema.TRAIN, schema.TRUSTED])))
            plain = plain.append_column("weight", pa.array(np.ones(plain.num_rows, np.float32)))
            downstream["plain"] = accuracy(plain, "manifest")
        export_rec = ctx.run.record("export") or {}
        for policy in policies:
            export_params = replace(ExportParams(**export_rec.get("params", {})), policy=policy)
            table = export_result(ctx.run, export_params, seed=export_rec.get("seed", ctx.seed)).train
            downstream[f"policy {policy}"] = accuracy(table, f"--policies {policy} manifest")
        result["downstream"] = downstream
    (ctx.out / "evaluation.json").write_text(json.dumps(result, indent=2, sort_keys=True, default=str))
    return result


def _truth_labels(path: Path, curated: pa.Table) -> np.ndarray:
    """The true label of every curated row, as class indices, from a table of ``id`` and ``label``
    (indices, or the run's class names); a row it lacks or cannot map is named with the fix."""
    if not path.is_file():
        raise ValueError(f"--truth {path} does not exist; give a Parquet table with columns id and label")
    names = set(column_names(path))
    if not {"id", "label"} <= names:
        raise ValueError(f"--truth {path}: needs columns id and label, has {', '.join(sorted(names))}")
    table = read_table(path, columns=["id", "label"])
    classes = class_names(curated)
    index = {name: i for i, name in enumerate(classes)}
    truth_ids = table["id"].cast(pa.string()).to_pylist()
    values = table["label"].to_pylist()
    for row, (i, v) in enumerate(zip(truth_ids, values)):
        ok = v in index if isinstance(v, str) else (isinstance(v, int) and not isinstance(v, bool)
                                                    and 0 <= v < len(classes))
        if not ok:
            raise ValueError(f"--truth {path}: row {row} (id {i!r}) has label {v!r}, which is neither a class "
                             f"index 0..{len(classes) - 1} nor a class name of this run ({', '.join(classes[:10])}"
                             f"{', ...' if len(classes) > 10 else ''}); fix that row")
    lookup = {i: index[v] if isinstance(v, str) else v for i, v in zip(truth_ids, values)}
    missing = [i for i in curated["id"].to_pylist() if i not in lookup]
    if missing:
        raise ValueError(f"--truth {path}: no label for {len(missing)} id(s) of this run, e.g. {missing[:3]}; "
                         "add a row (id, label) for each")
    return np.array([lookup[i] for i in curated["id"].to_pylist()], dtype=np.int64)


def _policies(text: str) -> list[str]:
    """The --policies list, each checked against export's choices."""
    from winnow.stages.export.params import POLICIES

    names = [p.strip() for p in text.split(",") if p.strip()]
    for name in names:
        if name not in POLICIES:
            raise ValueError(f"option --policies: {name!r} is not an export policy; choose from {', '.join(POLICIES)}")
    return names


def _accuracy(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in ("test_accuracy", "best_test_accuracy") if k in metrics}


# ---------------------------------------------------------------------------------------------
# report


@dataclass(frozen=True)
class ReportParams:
    title: str = option("winnow report", "Title of the page.")
    top: int = option(24, "How many flagged examples to show with thumbnails.", min=1)

    def __post_init__(self) -> None:
        check_options(self)


def report_adapter(ctx: StageContext, params: ReportParams) -> dict[str, Any]:
    from winnow.stages.report.render import render_report

    curated = load_curated(ctx.run)
    summary = json.loads(ctx.run.path("export", schema.SUMMARY).read_text())
    evaluation = None
    if (p := ctx.run.path("evaluate", "evaluation.json", required=False)) is not None:
        evaluation = json.loads(p.read_text())
    select_rec = ctx.run.record("select")
    curve = None
    if (p := ctx.run.path("weight", "mwn_curve.parquet", required=False)) is not None:
        table = read_table(p)  # Meta-Weight-Net's learned loss -> weight function
        curve = {"x": table["loss"].to_numpy(), "MWN weight": table["weight"].to_numpy()}
    html = render_report(curated, summary, evaluation=evaluation,
                         coreset_metrics=None if select_rec is None else untimed(select_rec.get("metrics")),
                         weight_curve=curve, title=params.title, top=params.top)
    (ctx.out / schema.REPORT).write_text(html, encoding="utf-8")
    return {"bytes": len(html.encode())}


# ---------------------------------------------------------------------------------------------
# the table of steps


def _steps() -> dict[str, Step]:
    from winnow.stages.embed.params import EmbedParams
    from winnow.stages.export.params import ExportParams
    from winnow.stages.ingest.params import IngestParams
    from winnow.stages.select.params import SelectParams
    from winnow.stages.train.params import TrainParams
    from winnow.stages.weight.params import WeightParams

    return {
        s.name: s
        for s in [
            Step("ingest", IngestParams, (), (), ingest_adapter, "Read a source into a validated manifest with a trusted split."),
            Step("embed", EmbedParams, ("ingest",), (), embed_adapter,
                 "Embeddings, cross-fitted class probabilities and gradient embeddings."),
            Step("select", SelectParams, ("ingest",), ("embed",), select_adapter,
                 "Per-class coreset: facility location or set cover, with CRAIG weights."),
            Step("weight", WeightParams, ("ingest",), ("embed", "select"), weight_adapter,
                 "Per-example weights from L2RW, Meta-Weight-Net, Deep Bilevel or SOSELETO rounds."),
            Step("export", ExportParams, ("ingest",), ("embed", "select", "weight"), export_adapter,
                 "Noise scores, flags and suggested labels; curated, train and flags manifests."),
            Step("train", TrainParams, ("export",), (), train_adapter,
                 "Train the reference model on the curated train manifest."),
            Step("evaluate", EvaluateParams, ("export",), ("train",), evaluate_adapter,
                 "Score the flags against the truth and compare downstream accuracy with plain training."),
            Step("report", ReportParams, ("export",), ("select", "weight", "evaluate"), report_adapter,
                 "Write a self-contained HTML report."),
        ]
    }


STEPS = _steps()
DEFAULT_PLAN = tuple(STEPS)

# What varies with the CPU thread count, by stage: a stage named here has the count in its cache key
# and this line in stage.json's ``thread_dependence``; ingest and report compute nothing that
# depends on it. Figures: the digits demo on CPU, each stage run alone on the same inputs with
# --threads 1 and 2 (python -m benchmarks.reliability.threads; docs/design-notes.md).
THREAD_DEPENDENCE: dict[str, str] = {
    "embed": "the warm-up's training reductions (oneDNN convolution weight gradients, MKL GEMM) and the "
             "cross-fitted heads; a warm-up amplifies them: embedding max |diff| 0.245, probs 0.517, every row",
    "select": "FAISS's BLAS inner products (about 2e-7), which can reorder near-ties of the kNN graph; IVF "
              "training and HNSW insertion also; the demo's coreset was identical",
    "weight": "the training reductions (MKL GEMM; oneDNN convolutions with --trainable backbone): linear head, "
              "weight max |diff| 2.4e-6, weight_last 1.0e-5",
    "export": "FAISS's BLAS inner products in the trusted-kNN vote: noise_score max |diff| 6e-8, same flags",
    "train": "the training reductions (oneDNN convolution weight gradients, MKL GEMM): other weights",
    "evaluate": "trains as train does: the downstream accuracies",
}


def skip_reason(run: RunDir, step: Step, params: Any) -> str | None:
    """Why ``winnow run`` skips ``step`` on this run's data, with what would make it run; None to run it.

    Only two stages depend on what the data holds rather than on earlier stages: ``evaluate``
    needs the truth (``true_label``, which only ``--inject-noise`` records, or ``--truth``) and
    ``train`` needs images (or a feature column). A user's own images without a truth column, or a
    feature table, must still reach ``report``.
    """
    if step.name not in ("evaluate", "train") or run.record("ingest") is None:
        return None
    manifest = load_manifest(run)
    usable = usable_mask(manifest)
    if step.name == "evaluate" and not params.truth and manifest["true_label"].null_count == manifest.num_rows:
        return ("no truth to score the flags against: the manifest has no true_label (only ingest's --inject-noise "
                "records one); to evaluate, set [evaluate] truth = \"PATH\" (a table of id and true label)")
    if step.name == "train" and not params.features:
        has_image = manifest["image"].is_valid().to_numpy(zero_copy_only=False) | manifest["uri"].is_valid().to_numpy(
            zero_copy_only=False)
        if not (has_image & usable).any():
            return ("the manifest has no images (ingest read a feature table); to train on the embeddings, set "
                    "[train] features = \"embedding\"")
    return None


def discard_outdated(run: RunDir, stage: str) -> bool:
    """Remove ``stage``'s folder if its outputs come from inputs that have changed since (``winnow
    run`` skips the stage this time); a later stage would otherwise refuse to mix them with the new
    ones, or show them as if they were about this data. ``stage.json`` goes first, so that an
    interrupted removal leaves a folder that counts as absent. Returns whether it removed one."""
    if run.record(stage) is None or outdated_input(run, stage) is None:
        return False
    (run.stage_dir(stage) / "stage.json").unlink()
    shutil.rmtree(run.stage_dir(stage), ignore_errors=True)
    return True

DEMO_CONFIG: dict[str, dict[str, Any]] = {
    "ingest": {"source": "digits", "inject_noise": "uniform:0.4", "trusted_per_class": 10},
    "embed": {},
    "select": {},
    "weight": {"method": "l2rw", "rounds": 2, "epochs": 5},
    "export": {"policy": "weight"},
    "train": {},
    "evaluate": {},
    "report": {},
}


def demo_summary(run: RunDir) -> dict[str, Any]:
    evaluation = json.loads(run.path("evaluate", "evaluation.json").read_text())
    flags = evaluation["flags"].get("overall", evaluation["flags"])
    return {
        "run_dir": str(run.root),
        "flags": {"precision": flags.get("precision"), "recall": flags.get("recall"), "f1": flags.get("f1"),
                  "auroc": flags.get("auroc_score")},
        "downstream": evaluation.get("downstream", {}),
        "manifests": {name: str(run.stage_dir("export") / name) for name in (schema.CURATED, schema.TRAIN_MANIFEST, schema.FLAGS)},
        "report": str(run.stage_dir("report") / schema.REPORT),
    }


def print_demo(summary: dict[str, Any], console: Any) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(title="winnow demo: digits, 40% uniform label noise, 10 trusted images per class")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for k, v in summary["flags"].items():
        table.add_row(f"flags {k}", "n/a" if v is None else f"{v:.3f}")
    for name, acc in summary["downstream"].items():
        if "test_accuracy" in acc:
            table.add_row(f"test accuracy, {name} training", f"{acc['test_accuracy']:.3f}")
    console.print(table)
    for name, path in summary["manifests"].items():
        console.print(Text(f"{name}: {path}"))
    console.print(Text(f"report: {summary['report']}"))
    console.print(f"({summary.get('seconds', 0)} s)")


def print_evaluation(run: RunDir, console: Any) -> None:
    """The evaluate stage's numbers as a table (what `winnow evaluate` shows a person)."""
    from rich.table import Table
    from rich.text import Text

    evaluation = json.loads(run.path("evaluate", "evaluation.json").read_text())
    overall = evaluation["flags"]["overall"]
    table = Table(title="flags against the truth")
    for col in ("", "precision", "recall", "F1", "AUROC (score)", "AUROC (weight)"):
        table.add_column(col, justify="right")

    def fmt(v: Any) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    table.add_row("all", *[fmt(overall.get(k)) for k in ("precision", "recall", "f1", "auroc_score", "auroc_weight")])
    for name, m in evaluation["flags"].get("per_class", {}).items():
        table.add_row(Text(str(name)), *[fmt(m.get(k)) for k in ("precision", "recall", "f1", "auroc_score", "auroc_weight")])
    console.print(table)
    for name, acc in evaluation.get("downstream", {}).items():
        if "test_accuracy" in acc:
            console.print(f"test accuracy, {name} training: {acc['test_accuracy']:.3f} "
                          f"(best {acc.get('best_test_accuracy', float('nan')):.3f})")


PRINTERS: dict[str, Callable[[RunDir, Any], None]] = {"evaluate": print_evaluation}
