"""embed on Beam: ``RunInference`` with a ``KeyedModelHandler`` (example ids as keys) over the
backbone of :mod:`winnow.stages.embed.core`.

1. The backbone is built by :func:`winnow.stages.embed.backbone.prepare_backbone`, the function the
   local stage calls (same seed); its warm-up, when asked (a training loop), runs on a worker
   (:func:`winnow.pipeline.beam.workers.map_on_workers`), whose state the launcher loads.
2. Workers decode the images in batches (:class:`winnow.stages.embed.data.BatchDecoder`) and run the
   backbone through ``RunInference``; the batch size is ``--batch-size``. Each worker process
   loads one model copy (``--beam-option model_copies=N`` shares N copies between the
   processes of a machine instead, for large models on a GPU). The rows are the local stage's
   shards (:class:`winnow.stages.embed.core.ShardPlan`, ``--shard-size``): the rows of a shard
   are grouped by its index and the worker that completes a shard saves it as a checkpoint in
   the run's work folder, so a killed embed resumes from its finished shards on either
   executor (the work folder must be on storage that the workers and the launcher share, as
   for every file this executor exchanges).
3. The out-of-sample probabilities (K-fold cross-fitting) and the gradient embeddings need
   every row's embedding and label; they run on the collected (n, d) embeddings through
   :func:`winnow.stages.embed.core.run_embed` with those embeddings as features, so they are
   computed exactly as in the local stage. The K + 1 heads (L-BFGS over the fit rows: the costly
   part) are fitted on the workers, with the launcher's thread count, and score the rows on the
   launcher (one matrix product). With ``--model features`` (no network) this is all the stage
   does on Beam. ``--crossfit backbone``'s fold networks warm up side by side on the workers
   (with the backbone's options); their forward passes over the fit rows and their heads run on
   the launcher.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import torch
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference

from winnow.pipeline import contract
from winnow.pipeline.beam.io import (
    CollectToFolder,
    create_via_files,
    read_collected,
    temp_folder,
)
from winnow.pipeline.beam.options import pipeline_options, winnow_options
from winnow.pipeline.beam.workers import map_on_workers
from winnow.pipeline.runner import StageContext
from winnow.stages.common import schema
from winnow.stages.common.arrow import class_names
from winnow.stages.common.checkpoint import Checkpoints
from winnow.stages.common.rows import usable_mask
from winnow.stages.common.torch_utils import resolve_device
from winnow.stages.embed.core import ShardPlan, finish_shard, gather_shards, plan_shards
from winnow.stages.embed.data import BatchDecoder, ImageTransform
from winnow.stages.embed.params import EmbedParams

ERRORS = "errors"


class BackboneHandler(ModelHandler[tuple[np.ndarray, int], np.ndarray, Any]):
    """Runs the stage's backbone on (uint8 (C, S, S) image, forward batch size); returns (d,)
    float32 embeddings.

    Every forward pass has the batch size that the row's batch has in the local stage (padded
    by repeating a row, the padding dropped): CPU and GPU kernels pick their algorithm by batch
    shape, so this makes each embedding bitwise equal to the local one, however the runner
    groups the rows.

    The network travels with the handler (a CPU ``nn.Module``; a ``--model-file`` travels as
    its path, which must be readable on the workers) and is moved to the worker's device in
    :meth:`load_model`, once per process (or once per machine with ``model_copies``).
    """

    def __init__(self, net: torch.nn.Module | None, model_file: str, transform: ImageTransform, name: str,
                 device: str, amp: bool, batch_size: int, model_copies: int | None = None) -> None:
        kwargs: dict[str, Any] = {"min_batch_size": batch_size, "max_batch_size": batch_size}
        if model_copies:
            kwargs["model_copies"] = model_copies
        super().__init__(**kwargs)
        self._net = None if net is None else net.cpu()
        self._model_file, self._transform, self._name = model_file, transform, name
        self._device, self._amp = device, amp

    def load_model(self) -> Any:
        from winnow.models.backbones import load_model_file
        from winnow.stages.embed.backbone import Backbone

        dev = resolve_device(self._device)
        net = (load_model_file(self._model_file) if self._net is None else self._net).to(dev).eval()
        return Backbone(net, self._transform, self._name, dev, self._amp)

    def run_inference(self, batch: Sequence[tuple[np.ndarray, int]], model: Any,
                      inference_args: dict[str, Any] | None = None) -> Iterable[PredictionResult]:
        # Channels-last memory (N, H, W, C), as winnow.stages.embed.data.BatchDecoder hands it to the local
        # stage: the memory layout selects the conv kernels, so it is part of bitwise equality.
        nhwc = np.stack([x.transpose(1, 2, 0) for x, _ in batch])
        sizes = np.array([b for _, b in batch])
        feats: list[torch.Tensor | None] = [None] * len(batch)
        for size in np.unique(sizes).tolist():
            idx = np.flatnonzero(sizes == size)
            for start in range(0, len(idx), size):
                part = idx[start : start + size]
                x = nhwc[np.concatenate([part, np.repeat(part[-1:], size - len(part))])]
                out = model.embed(torch.from_numpy(x).permute(0, 3, 1, 2))[: len(part)]
                for j, r in enumerate(part.tolist()):
                    feats[r] = out[j]
        return [PredictionResult(x, f.numpy()) for x, f in zip(batch, feats)]

    def get_num_bytes(self, batch: Sequence[tuple[np.ndarray, int]]) -> int:
        return sum(x.nbytes for x, _ in batch)


class _Decode(beam.DoFn):
    """A record batch of rows -> ((shard, row), (uint8 image, forward batch size)) per row;
    an undecodable row goes to the ``errors`` output as (shard, (row, reason))."""

    def __init__(self, transform: ImageTransform) -> None:
        self.transform = transform

    def process(self, batch: pa.RecordBatch) -> Iterator[Any]:
        table = pa.Table.from_batches([batch])
        pixels, _, errors = BatchDecoder(table, [np.arange(table.num_rows)], self.transform)[0]
        pixels = pixels.numpy()
        cols = zip(table["shard"].to_pylist(), table["row"].to_pylist(), table["forward_batch"].to_pylist(), errors)
        for j, (shard, row, size, err) in enumerate(cols):
            if err is None:
                yield (shard, row), (pixels[j], size)
            else:
                yield beam.pvalue.TaggedOutput(ERRORS, (shard, (row, None, err)))


class _SaveShard(beam.DoFn):
    """(shard, [(row, embedding or None, error or None), ...]) -> the shard's state, saved
    through the checkpoint store (the local stage's :func:`winnow.stages.embed.core.finish_shard`)
    and passed on to be collected."""

    def __init__(self, shards: ShardPlan, checkpoints: Checkpoints | None) -> None:
        self.shards, self.checkpoints = shards, checkpoints

    def process(self, element: tuple[int, Iterable[tuple[int, np.ndarray | None, str | None]]]) -> Iterator[Any]:
        index, items = element
        got = sorted(items, key=lambda item: item[0])
        done = [(r, v) for r, v, _ in got if v is not None]
        failed = [(r, e) for r, v, e in got if v is None]
        parts: list[tuple[torch.Tensor, torch.Tensor, list[str | None]]] = []
        if done:
            parts.append((torch.from_numpy(np.stack([v for _, v in done])),
                          torch.tensor([r for r, _ in done]), [None] * len(done)))
        if failed:
            d = parts[0][0].shape[1] if parts else 0
            parts.append((torch.zeros(len(failed), d), torch.tensor([r for r, _ in failed]), [e for _, e in failed]))
        yield index, finish_shard(self.shards, index, parts, self.checkpoints)


def embed_on_beam(manifest: pa.Table, ok: np.ndarray, handler: BackboneHandler, transform: ImageTransform,
                  params: EmbedParams, shards: ShardPlan, checkpoints: Checkpoints | None, options: Any,
                  work: Any) -> dict[int, dict[str, Any]]:
    """The state of every pending shard of ``shards`` (each saved through ``checkpoints`` by the
    worker that finishes it), by shard index; the shards in the same forward batches as locally."""
    plan = shards.rows(ok, params.batch_size)
    if not plan:
        return {}
    rows = np.concatenate([r for _, r in plan])
    cols = [c for c in ("id", "image", "uri") if c in manifest.column_names]
    table = (manifest.select(cols).take(pa.array(rows, pa.int64()))
             .append_column("row", pa.array(rows, pa.int64()))
             .append_column("shard", pa.array(np.concatenate([np.full(len(r), i) for i, r in plan]), pa.int64()))
             .append_column("forward_batch", pa.array(np.concatenate([np.full(len(r), len(r)) for _, r in plan]),
                                                      pa.int64())))
    batches = table.combine_chunks().to_batches(params.batch_size)
    out = temp_folder(work, "embed")
    with beam.Pipeline(options=options) as p:
        decoded = (
            create_via_files(p, batches, temp_folder(work, "embed-rows"), "rows")
            | "decode" >> beam.ParDo(_Decode(transform)).with_outputs(ERRORS, main="images")
        )
        embedded = (
            decoded.images
            | "backbone" >> RunInference(KeyedModelHandler(handler))
            | "by shard" >> beam.MapTuple(
                lambda key, result: (key[0], (key[1], np.asarray(result.inference, np.float32), None)))
        )
        _ = (
            (embedded, decoded[ERRORS])
            | "rows" >> beam.Flatten()
            | "shards" >> beam.GroupByKey()
            | "save shards" >> beam.ParDo(_SaveShard(dataclasses.replace(shards, done={}), checkpoints))
            | "collect" >> beam.ParDo(CollectToFolder(str(out)))
        )
    return dict(read_collected(out))


def embed_beam(ctx: StageContext, params: EmbedParams) -> dict[str, Any]:
    """The embed adapter on Beam: same ``features.parquet`` (and ``backbone.pt``) as the local one."""
    from winnow.pipeline.adapters import embed_adapter
    from winnow.pipeline.io.embed import write_features
    from winnow.pipeline.io.ingest import ingest_features, load_manifest
    from winnow.stages.embed.backbone import prepare_backbone
    from winnow.stages.embed.core import NAN_ERROR, run_embed

    manifest = load_manifest(ctx.run)
    classes = class_names(manifest)
    num_classes = len(classes)
    features = ingest_features(ctx.run)
    extra, beam_opts = winnow_options(ctx.beam_options)
    on_workers = functools.partial(map_on_workers, options=pipeline_options(beam_opts), work=ctx.checkpoints.folder)
    if params.model == "features" or (features is not None and not params.model_file and params.model == "auto"):
        return {**embed_adapter(ctx, params, map_work=on_workers), "executor": "beam"}  # no network: heads on Beam
    t_start = time.perf_counter()
    # The network, by the local stage's own function; its warm-up (a training loop) on a worker.
    prepared = prepare_backbone(manifest, params, num_classes=num_classes, seed=ctx.seed, device=ctx.device,
                                checkpoints=ctx.checkpoints, map_work=on_workers)
    backbone, model_state, metrics = prepared.backbone, prepared.model_state, dict(prepared.metrics)
    ok = usable_mask(manifest, need_label=False)
    ids = np.asarray(manifest["id"].to_pylist(), dtype=object)
    shards = plan_shards(params, backbone, ok, ids, ctx.checkpoints)
    handler = BackboneHandler(
        None if params.model_file else backbone.net, params.model_file, backbone.transform, backbone.name,
        ctx.device, params.amp, params.batch_size, model_copies=int(extra["model_copies"]) if "model_copies" in extra else None,
    )
    t0 = time.perf_counter()
    results = {**shards.done, **embed_on_beam(manifest, ok, handler, backbone.transform, params, shards,
                                              ctx.checkpoints, pipeline_options(beam_opts), ctx.checkpoints.folder)}
    for i in shards.pending:
        if i not in results:  # a shard with no usable row
            results[i] = finish_shard(shards, i, [], ctx.checkpoints)
    embed_seconds = time.perf_counter() - t0
    embedding, decode_errors = gather_shards(shards.bounds, results, manifest.num_rows)
    embedded = int(sum(ok[a:b].sum() for i, (a, b) in enumerate(shards.bounds) if i in shards.pending))

    # Cross-fitting and gradient embeddings exactly as the local stage, on these embeddings.
    plain = dataclasses.replace(params, model="features", model_file="", weights="", warmup=0)
    result = run_embed(manifest, plain, num_classes=num_classes, seed=ctx.seed, device=ctx.device, features=embedding,
                       checkpoints=ctx.checkpoints, backbone_params=params, map_work=on_workers, lazy_grad=True,
                       copy_features=False)
    errors = list(result.errors)
    for r, reason in decode_errors.items():
        errors[r] = reason if errors[r] in (None, NAN_ERROR) else errors[r]
    metrics.update({k: v for k, v in result.metrics.items() if k not in ("model", "embed_seconds", "total_seconds")})
    metrics.update(model=backbone.name, embed_seconds=embed_seconds, images_embedded=embedded,
                   images_per_s=embedded / embed_seconds if embed_seconds else 0.0,
                   shards=len(shards.bounds), shards_loaded=len(shards.done),
                   total_seconds=time.perf_counter() - t_start, executor="beam")
    # Assembled here: streamed by the local stage's writer (the gradient embedding a block at a time).
    write_features(ctx.out / schema.FEATURES, manifest, dataclasses.replace(result, errors=errors), params)
    if model_state is not None:
        torch.save(model_state, ctx.out / contract.BACKBONE)
    return metrics
