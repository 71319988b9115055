"""Images/s of the embed stage against a bare ``model(x)`` loop over the same images in memory.

The stage decodes the CIFAR-10 JPEG bytes from Parquet, normalises, runs the backbone shard by
shard (saving each shard to an in-memory checkpoint store) and collects the features; the
bare loop runs the same network, batch size and device over tensors already decoded and
normalised, in whichever memory layout (NCHW or channels-last) is faster for it. Both run in this process, alternating, and the best of ``--repeats`` is kept.

    .venv/bin/python -m benchmarks.embed.throughput --rows 5000 --model resnet20
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from winnow.models.registry import features_and_logits
from winnow.stages.common.checkpoint import MemoryCheckpoints
from winnow.stages.common.images import image_to_array, open_image
from winnow.stages.embed import EmbedParams, run_embed
from winnow.stages.embed.backbone import build_backbone
from winnow.stages.embed.data import normalise

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10" / "train.parquet"


def manifest_from_cifar(rows: int) -> pa.Table:
    t = pq.read_table(DATA).slice(0, rows)
    n = t.num_rows
    return pa.table(
        {
            "id": pa.array([str(i) for i in t.column("id").to_pylist()]),
            "uri": pa.array([None] * n, pa.string()),
            "image": t.column("image"),
            "label": t.column("label").cast(pa.int32()),
            "split": pa.array(["train"] * n),
            "error": pa.array([None] * n, pa.string()),
        }
    )


def bare_loop(net: torch.nn.Module, x_all: torch.Tensor, batch_size: int, dev: torch.device) -> float:
    """Images/s of ``model(x)`` over batches of an in-memory, normalised tensor."""
    t0 = time.perf_counter()
    with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
        for i in range(0, len(x_all), batch_size):
            features_and_logits(net, x_all[i : i + batch_size], logits=False)[0].float().cpu()
    return len(x_all) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--model", nargs="+", default=["resnet20", "small_cnn"])
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=-1)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    manifest = manifest_from_cifar(args.rows)
    n = manifest.num_rows
    print(f"{n} CIFAR-10 train images, batch {args.batch_size}, device {args.device}, "
          f"torch threads {torch.get_num_threads()}, {platform.processor() or platform.machine()}\n")
    print("| model | bare model(x) img/s | embed stage (decode+forward) img/s | ratio | whole run_embed img/s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    dev = torch.device("cuda" if args.device == "cuda" else "cpu")
    for name in args.model:
        params = EmbedParams(model=name, weights="none", warmup=0, batch_size=args.batch_size,
                             num_workers=args.workers, folds=5)
        ok = np.ones(n, bool)
        backbone, _ = build_backbone(manifest, params, ok, 10, dev, None)
        pixels = torch.from_numpy(
            np.stack([image_to_array(open_image(b, mode=backbone.transform.mode))
                      for b in manifest.column("image").to_pylist()])
        ).permute(0, 3, 1, 2)
        x_all = normalise(pixels, backbone.transform).to(dev)
        layouts = {"NCHW": x_all.contiguous(), "NHWC": x_all.contiguous(memory_format=torch.channels_last)}

        def bare() -> float:  # the bare loop gets the faster of the two memory layouts
            return max(bare_loop(backbone.net, x, args.batch_size, dev) for x in layouts.values())  # noqa: B023

        bare()  # warm up allocator / kernels
        best_bare, best_stage, best_total = 0.0, 0.0, 0.0
        for _ in range(args.repeats):
            best_bare = max(best_bare, bare())
            torch.manual_seed(0)
            t0 = time.perf_counter()
            res = run_embed(manifest, params, num_classes=10, device=args.device, checkpoints=MemoryCheckpoints())
            best_total = max(best_total, n / (time.perf_counter() - t0))
            best_stage = max(best_stage, res.metrics["images_per_s"])
        print(f"| {name} | {best_bare:.0f} | {best_stage:.0f} | {best_stage / best_bare:.2f} | {best_total:.0f} |")


if __name__ == "__main__":
    main()
