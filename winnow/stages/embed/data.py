"""Batched image decoding for the embed stage: manifest rows -> uint8 tensors, off the main process.

A worker decodes a whole batch (one IPC message per batch, not per image) and resizes only
images whose size differs from the target; normalisation happens later, batched, on the
device (:func:`normalise`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from winnow.stages.common.images import ImageError, image_to_array, open_image


@dataclass(frozen=True)
class ImageTransform:
    """How rows become network inputs.

    Attributes
    ----------
    size : int
        Images are resized (shorter side) to ``size`` and centre-cropped to ``size x size``
        (untouched when already that size).
    mode : str
        PIL mode, "L" (1 channel) or "RGB" (3 channels).
    mean, std : tuple of float
        Normalisation of pixels scaled to [0, 1]; one value applies to every channel.
    """

    size: int
    mode: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3


def _fit(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    if (w, h) == (size, size):
        return img
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


class BatchDecoder(Dataset):
    """Map-style dataset whose item ``i`` is the decoded batch ``batches[i]`` of manifest rows.

    Returns ``(pixels uint8 (B, C, S, S), rows int64 (B,), errors list[str | None])``; a row
    that fails to decode gets zeros and its reason in ``errors``.
    """

    def __init__(self, manifest: pa.Table, batches: list[np.ndarray], transform: ImageTransform) -> None:
        cols = manifest.column_names
        self.images = manifest.column("image").combine_chunks() if "image" in cols else None
        self.uris = manifest.column("uri").combine_chunks() if "uri" in cols else None
        self.batches = batches
        self.transform = transform

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, list[str | None]]:
        rows = self.batches[i]
        t = self.transform
        out = np.zeros((len(rows), t.size, t.size, t.channels), dtype=np.uint8)
        errors: list[str | None] = [None] * len(rows)
        images = self.images.take(rows).to_pylist() if self.images is not None else [None] * len(rows)
        uris = self.uris.take(rows).to_pylist() if self.uris is not None else [None] * len(rows)
        for j, (data, uri) in enumerate(zip(images, uris)):
            try:
                out[j] = image_to_array(_fit(open_image(data, uri, mode=t.mode), t.size))
            except ImageError as exc:
                errors[j] = str(exc)
        return torch.from_numpy(out).permute(0, 3, 1, 2), torch.from_numpy(np.asarray(rows, dtype=np.int64)), errors


def probe_image(manifest: pa.Table, rows: np.ndarray) -> tuple[int, int, int]:
    """(channels, height, width) of the first decodable image among ``rows`` (1 for grayscale)."""
    cols = manifest.column_names
    first_error = ""
    for r in rows[:64]:
        data = manifest.column("image")[int(r)].as_py() if "image" in cols else None
        uri = manifest.column("uri")[int(r)].as_py() if "uri" in cols else None
        try:
            img = open_image(data, uri)
        except ImageError as exc:
            first_error = first_error or f"; row {manifest.column('id')[int(r)].as_py()!r}: {exc}"
            continue
        channels = 1 if img.mode in ("1", "L", "LA", "I", "I;16", "F") else 3
        return channels, img.size[1], img.size[0]
    raise ValueError(f"none of the first {min(len(rows), 64)} usable manifest rows has a decodable image"
                     f"{first_error}; check that ingest can read the images")


def auto_workers(requested: int, device: torch.device) -> int:
    """``requested`` if >= 0; else a count that keeps the forward pass fed without starving it.

    On CUDA the CPU only decodes: cores - 1 workers (at most 8). On CPU the forward pass already
    uses every core through intra-op threads, and decoding is a small share of the work, so a
    worker pays only where cores are plentiful: 0 up to 4 cores (measured on a 2-core box: one
    worker cost 5-30% of throughput), then cores // 4 (at most 4).
    """
    if requested >= 0:
        return requested
    cores = len(os.sched_getaffinity(0))
    if device.type == "cuda":
        return max(0, min(8, cores - 1))
    return 0 if cores <= 4 else min(4, cores // 4)


def make_loader(dataset: BatchDecoder, *, num_workers: int, pin_memory: bool) -> DataLoader:
    """Iterate ``dataset`` in order; workers decode whole batches ahead of the forward pass."""
    return DataLoader(
        dataset,
        batch_size=None,  # items are already batches
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if num_workers > 0 else None,
        persistent_workers=False,
    )


def normalise(pixels: torch.Tensor, transform: ImageTransform, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (B, C, S, S) -> float ``(x / 255 - mean) / std``, on ``pixels``' device."""
    mean = torch.tensor(transform.mean, device=pixels.device, dtype=dtype).view(1, -1, 1, 1)
    std = torch.tensor(transform.std, device=pixels.device, dtype=dtype).view(1, -1, 1, 1)
    return (pixels.to(dtype) / 255.0 - mean) / std
