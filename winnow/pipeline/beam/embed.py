"""embed on Beam: ``RunInference`` with a ``KeyedModelHandler`` (example ids as keys) over the
backbone of :mod:`winnow.stages.embed.core`.

1. The backbone is built, and warmed up when asked (a training loop: one machine), by
   :func:`winnow.stages.embed.backbone.prepare_backbone`, the function the local stage calls (same seed).
2. Workers decode the images in batches (:class:`winnow.stages.embed.data.BatchDecoder`) and run the
   backbone through ``RunInference``; the batch size is ``--batch-size``. Each worker process
   loads one model copy (``--beam-option model_copies=N`` shares N copies between the
   processes of a machine instead, for large models on a GPU).
3. The out-of-sample probabilities (K-fold cross-fitting, fold by fold) and the gradient
   embeddings need every row's embedding and label; they run once on the collected (n, d)
   embeddings through :func:`winnow.stages.embed.core.run_embed` with those embeddings as features,
   so they are computed exactly as in the local stage. So are ``--crossfit backbone``'s fold
   networks (training loops, on this machine), which get the backbone's options.
"""

from __future__ import annotations

import dataclasses
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
    write_tables,
)
from winnow.pipeline.beam.options import pipeline_options, winnow_options
from winnow.pipeline.runner import StageContext
from winnow.stages.common import schema
from winnow.stages.common.arrow import class_names
from winnow.stages.common.rows import usable_mask
from winnow.stages.common.torch_utils import resolve_device
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
    """A record batch of manifest rows -> (id, uint8 image) per row; undecodable rows go to
    the ``errors`` output as (id, reason)."""

    def __init__(self, transform: ImageTransform) -> None:
        self.transform = transform

    def process(self, batch: pa.RecordBatch) -> Iterator[Any]:
        table = pa.Table.from_batches([batch])
        pixels, _, errors = BatchDecoder(table, [np.arange(table.num_rows)], self.transform)[0]
        pixels = pixels.numpy()
        sizes = table["forward_batch"].to_pylist()
        for j, (key, err) in enumerate(zip(table["id"].to_pylist(), errors)):
            if err is None:
                yield key, (pixels[j], sizes[j])
            else:
                yield beam.pvalue.TaggedOutput(ERRORS, (key, err))


def local_batch_sizes(ok: np.ndarray, batch_size: int, shard_size: int) -> np.ndarray:
    """(n,) size of the forward batch each ``ok`` row is in when the local stage embeds it:
    shards of ``shard_size`` rows, their ``ok`` rows in batches of ``batch_size`` (0 elsewhere)."""
    out = np.zeros(len(ok), np.int64)
    for a in range(0, len(ok), shard_size):
        rows = a + np.flatnonzero(ok[a : a + shard_size])
        for s in range(0, len(rows), batch_size):
            out[rows[s : s + batch_size]] = len(rows[s : s + batch_size])
    return out


def embed_on_beam(manifest: pa.Table, ok: np.ndarray, handler: BackboneHandler, transform: ImageTransform,
                  params: EmbedParams, options: Any, work: Any) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Embeddings by id of the manifest's ``ok`` rows, and decode errors by id."""
    rows = pa.array(np.flatnonzero(ok), pa.int64())
    cols = [c for c in ("id", "image", "uri") if c in manifest.column_names]
    sizes = local_batch_sizes(ok, params.batch_size, params.shard_size)[np.flatnonzero(ok)]
    table = manifest.select(cols).take(rows).append_column("forward_batch", pa.array(sizes, pa.int64()))
    batches = table.combine_chunks().to_batches(params.batch_size)
    out, err = temp_folder(work, "embed"), temp_folder(work, "embed-errors")
    with beam.Pipeline(options=options) as p:
        decoded = (
            create_via_files(p, batches, temp_folder(work, "embed-rows"), "rows")
            | "decode" >> beam.ParDo(_Decode(transform)).with_outputs(ERRORS, main="images")
        )
        _ = (
            decoded.images
            | "backbone" >> RunInference(KeyedModelHandler(handler))
            | "embedding" >> beam.MapTuple(lambda key, result: (key, np.asarray(result.inference, np.float32)))
            | "collect" >> beam.ParDo(CollectToFolder(str(out)))
        )
        _ = decoded[ERRORS] | "collect errors" >> beam.ParDo(CollectToFolder(str(err)))
    return dict(read_collected(out)), dict(read_collected(err))


def embed_beam(ctx: StageContext, params: EmbedParams) -> dict[str, Any]:
    """The embed adapter on Beam: same ``features.parquet`` (and ``backbone.pt``) as the local one."""
    from winnow.pipeline.adapters import embed_adapter
    from winnow.pipeline.io.embed import features_table
    from winnow.pipeline.io.ingest import ingest_features, load_manifest
    from winnow.stages.embed.backbone import prepare_backbone
    from winnow.stages.embed.core import NAN_ERROR, run_embed

    manifest = load_manifest(ctx.run)
    classes = class_names(manifest)
    num_classes = len(classes)
    features = ingest_features(ctx.run)
    if params.model == "features" or (features is not None and not params.model_file and params.model == "auto"):
        return embed_adapter(ctx, params)  # no network to run: nothing to distribute
    t_start = time.perf_counter()
    # The network and its warm-up (a training loop: one machine), by the local stage's own function.
    prepared = prepare_backbone(manifest, params, num_classes=num_classes, seed=ctx.seed, device=ctx.device,
                                checkpoints=ctx.checkpoints)
    backbone, model_state, metrics = prepared.backbone, prepared.model_state, dict(prepared.metrics)
    ok = usable_mask(manifest, need_label=False)
    ids = manifest["id"].to_pylist()
    extra, beam_opts = winnow_options(ctx.beam_options)
    handler = BackboneHandler(
        None if params.model_file else backbone.net, params.model_file, backbone.transform, backbone.name,
        ctx.device, params.amp, params.batch_size, model_copies=int(extra["model_copies"]) if "model_copies" in extra else None,
    )
    t0 = time.perf_counter()
    vectors, decode_errors = embed_on_beam(manifest, ok, handler, backbone.transform, params,
                                           pipeline_options(beam_opts), ctx.checkpoints.folder)
    embed_seconds = time.perf_counter() - t0
    d = len(next(iter(vectors.values()))) if vectors else 1
    embedding = np.full((manifest.num_rows, d), np.nan, np.float32)
    row_of = {key: r for r, key in enumerate(ids)}
    for key, v in vectors.items():
        embedding[row_of[key]] = v

    # Cross-fitting and gradient embeddings exactly as the local stage, on these embeddings.
    plain = dataclasses.replace(params, model="features", model_file="", weights="", warmup=0)
    result = run_embed(manifest, plain, num_classes=num_classes, seed=ctx.seed, device=ctx.device, features=embedding,
                       checkpoints=ctx.checkpoints, backbone_params=params)
    errors = list(result.errors)
    for key, reason in decode_errors.items():
        r = row_of[key]
        errors[r] = reason if errors[r] in (None, NAN_ERROR) else errors[r]
    metrics.update({k: v for k, v in result.metrics.items() if k not in ("model", "embed_seconds", "total_seconds")})
    metrics.update(model=backbone.name, embed_seconds=embed_seconds, images_embedded=len(vectors),
                   images_per_s=len(vectors) / embed_seconds if embed_seconds else 0.0,
                   total_seconds=time.perf_counter() - t_start, executor="beam")
    table = features_table(manifest, dataclasses.replace(result, errors=errors), params)
    with beam.Pipeline(options=pipeline_options(beam_opts)) as p:
        write_tables(p, ctx.out, {schema.FEATURES: table}, temp_folder(ctx.checkpoints.folder, "embed-write"))
    if model_state is not None:
        torch.save(model_state, ctx.out / contract.BACKBONE)
    return metrics
