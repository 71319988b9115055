"""Decode manifest images (encoded bytes or a file path) safely, in one place."""

from __future__ import annotations

import io
import re
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

# Refuse decompression bombs early; real training images are far smaller.
Image.MAX_IMAGE_PIXELS = 64_000_000
# PIL modes that hold one channel; every other mode is read as RGB.
GRAY_MODES = frozenset({"1", "L", "LA", "P;L", "I", "I;16", "F"})


class ImageError(ValueError):
    """An image that cannot be read; its message is what goes into a row's ``error``."""


# PIL hands EPS (PostScript, a programming language) to the Ghostscript program to render: a
# file from someone else would run in that interpreter. Every other format PIL opens, it decodes.
_RUNS_A_PROGRAM = frozenset({"EPS"})


@cache
def _decodable_formats() -> tuple[str, ...]:
    """The formats :func:`open_image` tries: all PIL can open, except those rendered by another program."""
    Image.init()
    return tuple(f for f in Image.OPEN if f not in _RUNS_A_PROGRAM)


def open_image(image: bytes | None = None, uri: str | None = None, *, mode: str | None = None) -> Image.Image:
    """Open and fully decode one image from bytes or a path, converting to ``mode`` if given.

    Raises :class:`ImageError` with a short reason (missing file, not an image, truncated).
    """
    try:
        if image is not None:
            img = Image.open(io.BytesIO(image), formats=_decodable_formats())
        elif uri is not None:
            path = Path(uri)
            if not path.is_file():
                raise ImageError(f"image file not found: {uri}")
            img = Image.open(path, formats=_decodable_formats())
        else:
            raise ImageError("row has neither image bytes nor uri")
        img.load()
    except ImageError:
        raise
    except Exception as exc:  # PIL raises many types for corrupt data
        # PIL's messages name the in-memory buffer ("<_io.BytesIO object at 0x...>"): drop it,
        # so that the same bad input gives the same error text, byte for byte, on every run.
        reason = re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>", "image bytes", str(exc))
        raise ImageError(f"cannot decode image ({type(exc).__name__}: {reason})") from exc
    return img.convert(mode) if mode and img.mode != mode else img


def image_to_array(img: Image.Image) -> np.ndarray:
    """HWC uint8 array (grayscale images get a channel axis of 1)."""
    arr = np.asarray(img, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def fit_image(img: Image.Image, height: int, width: int) -> Image.Image:
    """``img`` scaled to cover ``height x width`` (aspect kept), centre-cropped to exactly that size,
    in mode L (one channel) or RGB: one size for a run whose sources mix sizes (``--image-size``)."""
    img = img.convert("L" if img.mode in GRAY_MODES else "RGB")
    w, h = img.size
    if (w, h) == (width, height):
        return img
    scale = max(width / w, height / h)
    nw, nh = max(width, round(w * scale)), max(height, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - width) // 2, (nh - height) // 2
    return img.crop((left, top, left + width, top + height))


def encode_png(array: np.ndarray) -> bytes:
    """Encode an HxW or HxWxC uint8 array as PNG bytes (lossless, small, readable anywhere)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array.squeeze(-1) if array.ndim == 3 and array.shape[2] == 1 else array)).save(
        buf, format="PNG"
    )
    return buf.getvalue()


def decode_batch(images: list[bytes | None], uris: list[str | None], ids: list[str] | None = None) -> np.ndarray:
    """Decode equally sized images into an (n, C, H, W) float32 array in [0, 1].

    Every image takes the first one's colour mode (L if it has one channel, else RGB), as
    ``winnow train`` reads them: ingest lets a run mix grayscale and colour images.
    Raises ValueError naming the row (its ``ids`` entry, else its position) whose image cannot be
    read or whose size differs from the first.
    """
    names = ids if ids is not None else [str(i) for i in range(len(images))]
    arrays = []
    mode = None
    for name, b, u in zip(names, images, uris):
        try:
            img = open_image(b, u)
            mode = mode or ("L" if img.mode in GRAY_MODES else "RGB")
            arrays.append(image_to_array(img.convert(mode) if img.mode != mode else img))
        except ImageError as exc:
            raise ImageError(f"row {name!r}: {exc}") from exc
    if not arrays:
        return np.zeros((0, 1, 1, 1), dtype=np.float32)
    shape = arrays[0].shape
    for name, a in zip(names, arrays):
        if a.shape != shape:
            raise ValueError(f"row {name!r}: image shape {a.shape}, the first is {shape}; resize images to one size first")
    return np.stack(arrays).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
