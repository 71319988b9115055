"""The local adapters: for each stage, how the local executor calls the stage's pure core between
reading its inputs and writing its outputs (both in :mod:`winnow.pipeline.io`, shared with Beam).
Also the options of the two pipeline-only stages, evaluate and report."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from winnow.pipeline import contract
from winnow.pipeline.artifacts import column_names, read_table, write_table
from winnow.pipeline.io import export as export_io
from winnow.pipeline.io import ingest as ingest_io
from winnow.pipeline.io import weight as weight_io
from winnow.pipeline.io.embed import feature_vectors, with_feature_column, write_features
from winnow.pipeline.io.export import export_result, load_curated
from winnow.pipeline.io.ingest import ingest_features, load_manifest
from winnow.pipeline.io.select import coreset_table, select_inputs
from winnow.pipeline.io.train import test_table, untimed
from winnow.pipeline.runner import StageContext
from winnow.stages.common import schema
from winnow.stages.common.arrow import class_names
from winnow.stages.common.params import check_options, option
from winnow.stages.common.rows import labels_array, split_array, usable_mask

# ---------------------------------------------------------------------------------------------
# ingest


def ingest_adapter(ctx: StageContext, params: Any) -> dict[str, Any]:
    from winnow.stages.ingest import ingest

    return ingest_io.write_outputs(ctx.out, ingest(params, seed=ctx.seed))


# ---------------------------------------------------------------------------------------------
# embed


def embed_adapter(ctx: StageContext, params: Any, *, map_work: Any = None) -> dict[str, Any]:
    """``map_work``: where the warm-ups and the cross-fit's heads train (the Beam executor
    passes its workers; default: this process)."""
    import torch

    from winnow.stages.common.mapping import map_in_process
    from winnow.stages.embed.core import run_embed

    manifest = load_manifest(ctx.run)
    classes = class_names(manifest)
    result = run_embed(
        manifest, params, num_classes=len(classes), seed=ctx.seed, device=ctx.device,
        features=ingest_features(ctx.run), checkpoints=ctx.checkpoints, lazy_grad=True,
        copy_features=False,  # ingest's embedding, read for this call only
        map_work=map_work or map_in_process,
    )
    write_features(ctx.out / schema.FEATURES, manifest, result, params)
    if result.model_state is not None:
        torch.save(result.model_state, ctx.out / contract.BACKBONE)
    return dict(result.metrics)


# ---------------------------------------------------------------------------------------------
# select


def select_adapter(ctx: StageContext, params: Any) -> dict[str, Any]:
    from winnow.stages.select.core import select

    manifest, vectors, labels, eligible = select_inputs(ctx.run, params)
    result = select(vectors, labels, eligible, params, seed=ctx.seed, device=ctx.device)
    write_table(coreset_table(manifest, result.columns, params), ctx.out / schema.CORESET)
    return dict(result.metrics)


# ---------------------------------------------------------------------------------------------
# weight


def weight_adapter(ctx: StageContext, params: Any) -> dict[str, Any]:
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
        # Writable for torch: a copy only when read_vectors gave a read-only (zero-copy) view.
        x = torch.from_numpy(np.require(embedding, np.float32, ["C", "W"]))
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
        warm = ctx.run.path("embed", contract.BACKBONE, required=False)
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
        select_params = contract.recorded_params(ctx.run.record("select"), SelectParams, stage="select",
                                                 run_dir=ctx.run.root)
        reselect = functools.partial(online_reselect, params=select_params, seed=ctx.seed)

    # Only the rows trained on are kept: the full (n, d) inputs are freed before the weighting runs.
    train_x, trusted_x = x[train_rows], x[trusted_rows]
    del x, embedding
    result = run_weight(
        train_x, y[train_rows], trusted_x, y[trusted_rows], params, num_classes=len(classes),
        seed=ctx.seed, device=ctx.device, checkpoints=ctx.checkpoints, model_factory=model_factory,
        coreset=coreset, reselect=reselect,
    )
    weight_io.write_outputs(ctx.out, manifest, train_rows, result, params)
    return dict(result.metrics)



# ---------------------------------------------------------------------------------------------
# export



def export_adapter(ctx: StageContext, params: Any) -> dict[str, Any]:
    return export_io.write_outputs(ctx.out, export_result(ctx.run, params, seed=ctx.seed), params)



# ---------------------------------------------------------------------------------------------
# train



def train_adapter(ctx: StageContext, params: Any) -> dict[str, Any]:
    import torch

    from winnow.stages.train.core import train_model

    train = read_table(ctx.run.path("export", schema.TRAIN_MANIFEST))
    test = test_table(ctx.run)
    train = with_feature_column(ctx.run, train, params.features, what="training manifest")
    test = with_feature_column(ctx.run, test, params.features, what="test manifest")
    result = train_model(train, test, params, num_classes=len(class_names(train)), seed=ctx.seed, device=ctx.device)
    torch.save(result.model_state, ctx.out / contract.MODEL)
    (ctx.out / contract.TRAIN_METRICS).write_text(json.dumps(untimed(result.metrics), indent=2, sort_keys=True, default=str))
    return dict(result.metrics)


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
        train_params = contract.recorded_params(train_rec, TrainParams, stage="train", run_dir=ctx.run.root)
        manifest = load_manifest(ctx.run)
        test = with_feature_column(ctx.run, test_table(ctx.run),
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
            recorded = contract.recorded_params(export_rec, ExportParams, stage="export", run_dir=ctx.run.root)
            export_params = replace(recorded, policy=policy)
            table = export_result(ctx.run, export_params, seed=export_rec.get("seed", ctx.seed)).train
            downstream[f"policy {policy}"] = accuracy(table, f"--policies {policy} manifest")
        result["downstream"] = downstream
    (ctx.out / contract.EVALUATION).write_text(json.dumps(result, indent=2, sort_keys=True, default=str))
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
    if (p := ctx.run.path("evaluate", contract.EVALUATION, required=False)) is not None:
        evaluation = json.loads(p.read_text())
    select_rec = ctx.run.record("select")
    curve = None
    if (p := ctx.run.path("weight", contract.MWN_CURVE, required=False)) is not None:
        table = read_table(p)  # Meta-Weight-Net's learned loss -> weight function
        curve = {"x": table["loss"].to_numpy(), "MWN weight": table["weight"].to_numpy()}
    html = render_report(curated, summary, evaluation=evaluation,
                         coreset_metrics=None if select_rec is None else untimed(select_rec.get("metrics")),
                         weight_curve=curve, title=params.title, top=params.top)
    (ctx.out / schema.REPORT).write_text(html, encoding="utf-8")
    return {"bytes": len(html.encode())}

