"""Consume a winnow manifest from your own trainer: a torch Dataset, a weighted sampler, a weighted loss.

Three lines are all a training script needs::

    ds = ManifestDataset("runs/demo/export")   # its train.parquet
    loader = DataLoader(ds, batch_size=128, sampler=weighted_sampler(ds.table))
    for x, y, w in loader: ...            # or weighted_loss(model(x), y, w) with shuffle=True

Rows whose ``error`` is set are left out of the dataset (they cannot be used, DESIGN.md); the
dataset's ``table`` is the filtered table, so its rows line up with the dataset's indices.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset, Sampler, WeightedRandomSampler

from winnow.stages.common import schema
from winnow.stages.common.arrow import as_arrow_table, vectors_from_arrow
from winnow.stages.common.images import GRAY_MODES, ImageError, image_to_array, open_image
from winnow.stages.common.rows import usable_mask

ManifestLike = pa.Table | str | Path


def manifest_files(folder: Path) -> list[Path]:
    """The Parquet files a folder given as a manifest stands for, in order.

    * an export folder (it holds ``train.parquet``): its training manifest, the table a trainer
      wants (``curated.parquet`` and ``flags.parquet`` beside it hold other rows);
    * an ingest folder (``manifest.parquet``): the manifest;
    * otherwise the folder's own ``*.parquet`` files, sorted by name (shards of one table, as
      winnow writes large tables: ``part-00000.parquet``, ...).

    ``train.parquet`` / ``manifest.parquet`` may themselves be folders of shards. Other files
    (``stage.json``, ``summary.json``) are never read.
    """
    for name in (schema.TRAIN_MANIFEST, schema.MANIFEST):
        if (folder / name).is_file():
            return [folder / name]
        if (folder / name).is_dir():
            return manifest_files(folder / name)
    files = sorted(p for p in folder.glob("*.parquet") if p.is_file())
    if not files:
        raise ValueError(f"manifest folder {folder} holds no Parquet file (no {schema.TRAIN_MANIFEST}, "
                         f"{schema.MANIFEST} or *.parquet shards); pass a Parquet file written by winnow export")
    return files


def read_manifest(manifest: ManifestLike, *, drop_errors: bool = True) -> pa.Table:
    """Read a manifest (table, Parquet file or folder), without its error rows.

    Parameters
    ----------
    manifest : table, str or Path
        A pyarrow, pandas or polars table, or the path of a Parquet file or of a folder: an export folder means its
        ``train.parquet``, an ingest folder its ``manifest.parquet``, any other folder its
        ``*.parquet`` shards (see :func:`manifest_files`).
    drop_errors : bool
        Leave out rows whose ``error`` column is set (default True).

    Returns
    -------
    pa.Table
        The rows that can be used, in manifest order, schema metadata (class names) kept.
    """
    if isinstance(manifest, (str, Path)):
        path = Path(manifest)
        if not path.exists():
            raise ValueError(f"manifest not found: {path}; pass a Parquet file written by winnow export")
        if path.is_dir():
            files = manifest_files(path)
            table = pq.read_table(files[0]) if len(files) == 1 else pads.dataset(files, format="parquet").to_table()
        else:
            table = pq.read_table(path)
    else:  # a pyarrow, pandas or polars table
        table = as_arrow_table(manifest, name="manifest")
    if drop_errors:
        usable = usable_mask(table, need_label=False)  # a missing label is refused later, not dropped
        if not usable.all():
            table = table.filter(pa.array(usable))
    return table


def manifest_weights(table: pa.Table) -> np.ndarray:
    """The ``(n,)`` float64 training weights of a manifest: its ``weight`` column, 1 when absent.

    Null weights and rows with an ``error`` read as 0, so they are never drawn. Negative or
    non-finite weights raise ValueError naming the first offending row.
    """
    n = len(table)
    if "weight" not in table.column_names:
        weights = np.ones(n, dtype=np.float64)
    else:
        col = table.column("weight")
        weights = pc.fill_null(col, 0.0).to_numpy().astype(np.float64) if col.null_count else (
            col.to_numpy().astype(np.float64)
        )
    bad = ~np.isfinite(weights) | (weights < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"manifest row {i} (id {_row_id(table, i)!r}) has weight {weights[i]}; weights must be finite and >= 0"
        )
    weights[~usable_mask(table, need_label=False)] = 0.0
    return weights


def _row_id(table: pa.Table, i: int) -> Any:
    return table.column("id")[i].as_py() if "id" in table.column_names else i


def _labels(table: pa.Table) -> np.ndarray:
    if "label" not in table.column_names:
        raise ValueError("manifest has no 'label' column; is it a winnow manifest?")
    col = table.column("label")
    if col.null_count:
        i = int(np.flatnonzero(~pc.is_valid(col).to_numpy(zero_copy_only=False))[0])
        raise ValueError(
            f"manifest row {i} (id {_row_id(table, i)!r}) has no label; set its 'error' or drop it"
        )
    return col.to_numpy().astype(np.int64)


def infer_mode(images: list[bytes | None], uris: list[str | None]) -> str:
    """``"L"`` when the first readable image has one channel, else ``"RGB"``."""
    for image, uri in zip(images, uris):
        try:
            return "L" if open_image(image, uri).mode in GRAY_MODES else "RGB"
        except ImageError:
            continue
    raise ValueError("no row of the manifest has a readable image (image bytes or uri); to train on vectors "
                     "instead, name a feature column (features=COLUMN; winnow train --features embedding)")


def decode_rows(images: list[bytes | None], uris: list[str | None], *, mode: str) -> tuple[np.ndarray, list[str | None]]:
    """Decode every image that can be used: one bad row should cost that row, not the whole run.

    The manifest's size is its most common one (ties: the earliest row's), as ``winnow ingest``
    decides it. Returns ``(pixels, errors)``: ``errors[i]`` says why row ``i`` cannot be used (its
    image cannot be read, or has another size), None for a usable row; ``pixels`` is
    ``(k, H, W, C)`` uint8 for the ``k`` usable rows, in manifest order.
    """
    arrays: list[np.ndarray | None] = []
    errors: list[str | None] = []
    for image, uri in zip(images, uris):
        try:
            arrays.append(image_to_array(open_image(image, uri, mode=mode)))
            errors.append(None)
        except ImageError as exc:
            arrays.append(None)
            errors.append(str(exc))
    shapes = [a.shape if a is not None else None for a in arrays]
    counts = Counter(s for s in shapes if s is not None)
    if not counts:
        return np.zeros((0, 1, 1, 1 if mode == "L" else 3), dtype=np.uint8), errors
    first = {s: i for i, s in reversed(list(enumerate(shapes))) if s is not None}
    h, w, _ = target = max(counts, key=lambda s: (counts[s], -first[s]))
    for i, s in enumerate(shapes):
        if s is not None and s != target:
            errors[i] = (f"image is {s[0]}x{s[1]} px (height x width) but the manifest's images are {h}x{w}; resize "
                         f"it, or re-run `winnow ingest --image-size {h}x{w}`, which resizes every image of a run")
            arrays[i] = None
    return np.stack([a for a in arrays if a is not None]), errors


def decode_images(images: list[bytes | None], uris: list[str | None], *, mode: str) -> np.ndarray:
    """Decode every image into one ``(n, H, W, C)`` uint8 array (all images must share a size).

    Raises ValueError naming the first row whose image cannot be read or whose size is not the
    most common one (:func:`decode_rows` leaves such rows out instead).
    """
    if not images:
        raise ValueError("manifest has no rows to decode")
    pixels, errors = decode_rows(images, uris, mode=mode)
    bad = next((i for i, e in enumerate(errors) if e is not None), None)
    if bad is not None:
        raise ValueError(f"manifest row {bad}: {errors[bad]}; mark it with an 'error' to leave it out")
    return pixels


def to_tensor(img: Image.Image) -> torch.Tensor:
    """Default transform: a PIL image as a float32 ``(C, H, W)`` tensor with values in [0, 1]."""
    return torch.from_numpy(image_to_array(img).copy()).permute(2, 0, 1).float().div_(255.0)


class ManifestDataset(Dataset):
    """A torch Dataset over a winnow manifest, yielding ``(x, label, weight)``.

    ``x`` comes from the ``image`` bytes, else the ``uri`` path, or from a feature column
    (``fixed_size_list<float32>``) when ``features`` names one. ``label`` is a 0-d int64 tensor and
    ``weight`` a 0-d float32 tensor (the manifest's ``weight``, 1 when the column is absent).

    Parameters
    ----------
    manifest : pa.Table, str or Path
        The manifest: a table, a Parquet file (e.g. ``export/train.parquet``) or a folder (an
        export folder means its ``train.parquet``; see :func:`read_manifest`). Rows with an
        ``error`` are left out.
    features : str
        Name of a vector column to use as input instead of the image ("" = images).
    transform : callable, optional
        Applied to the PIL image (converted to ``mode``), or to the float32 feature vector.
        Default: :func:`to_tensor` for images (float in [0, 1], CHW), identity for features.
    split : str, optional
        Keep only the rows of this split (``train``, ``trusted`` or ``test``).
    mode : str, optional
        PIL mode images are converted to; default ``"L"`` if the first image is grayscale else
        ``"RGB"``, so that every item has the same number of channels.
    root : str or Path, optional
        Folder that relative ``uri`` values are resolved against.
    """

    def __init__(
        self,
        manifest: ManifestLike,
        *,
        features: str = "",
        transform: Callable[[Any], Any] | None = None,
        split: str | None = None,
        mode: str | None = None,
        root: str | Path | None = None,
    ) -> None:
        table = read_manifest(manifest)
        if split is not None:
            if "split" not in table.column_names:
                raise ValueError(f"split={split!r} was asked for but the manifest has no 'split' column")
            table = table.filter(pc.equal(table.column("split"), split))
        self.table = table
        self.features = features
        self.labels = _labels(table)
        self.weights = manifest_weights(table).astype(np.float32)
        self._vectors: np.ndarray | None = None
        if features:
            if features not in table.column_names:
                raise ValueError(
                    f"features={features!r} is not a column of the manifest; columns: {', '.join(table.column_names)}"
                )
            self._vectors = vectors_from_arrow(table.column(features))
            if len(table) and not np.isfinite(self._vectors).all():
                i = int(np.flatnonzero(~np.isfinite(self._vectors).all(axis=1))[0])
                raise ValueError(f"manifest row {i} (id {_row_id(table, i)!r}) has a null or NaN '{features}'")
            self.transform = transform
            self.mode = None
        else:
            if "image" not in table.column_names and "uri" not in table.column_names:
                raise ValueError("manifest has neither 'image' nor 'uri'; pass features=COLUMN for vectors")
            n = len(table)
            self._images = table.column("image").to_pylist() if "image" in table.column_names else [None] * n
            uris = table.column("uri").to_pylist() if "uri" in table.column_names else [None] * n
            if root is not None:
                uris = [u if u is None or Path(u).is_absolute() else str(Path(root) / u) for u in uris]
            self._uris = uris
            self.transform = transform if transform is not None else to_tensor
            self.mode = mode or (infer_mode(self._images, self._uris) if n else "RGB")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Any, torch.Tensor, torch.Tensor]:
        label = torch.tensor(self.labels[index], dtype=torch.int64)
        weight = torch.tensor(self.weights[index], dtype=torch.float32)
        if self._vectors is not None:
            x: Any = torch.from_numpy(self._vectors[index].copy())
            return (self.transform(x) if self.transform is not None else x), label, weight
        img = open_image(self._images[index], self._uris[index], mode=self.mode)
        return self.transform(img), label, weight

    def arrays(self) -> np.ndarray:
        """All inputs at once, without the transform: ``(n, d)`` float32 features or ``(n, H, W, C)`` uint8 images."""
        if self._vectors is not None:
            return self._vectors
        return decode_images(self._images, self._uris, mode=self.mode)

    def usable_arrays(self) -> tuple[np.ndarray, list[str | None]]:
        """Like :meth:`arrays`, but a row whose image cannot be read or has another size is left out
        of the array, with its reason in the returned errors (see :func:`decode_rows`)."""
        if self._vectors is not None:
            return self._vectors, [None] * len(self._vectors)
        return decode_rows(self._images, self._uris, mode=self.mode or "RGB")


# torch.multinomial (behind WeightedRandomSampler) refuses more categories than this.
MULTINOMIAL_MAX_CATEGORIES = 2**24


class InverseCDFSampler(Sampler[int]):
    """Draws row indices with replacement in proportion to ``weights``, by inverse CDF (a uniform
    draw per sample located in the cumulative weights): what :func:`weighted_sampler` uses above
    :data:`MULTINOMIAL_MAX_CATEGORIES` rows, where torch's multinomial refuses. Zero-weight rows
    own an empty interval and are never drawn."""

    def __init__(self, weights: torch.Tensor, num_samples: int, generator: torch.Generator) -> None:
        self.cdf = torch.cumsum(weights.to(torch.float64), 0)
        self.num_samples = num_samples
        self.generator = generator

    def __iter__(self) -> Iterator[int]:
        u = torch.rand(self.num_samples, generator=self.generator, dtype=torch.float64) * self.cdf[-1]
        yield from torch.searchsorted(self.cdf, u, right=True).clamp_(max=len(self.cdf) - 1).tolist()

    def __len__(self) -> int:
        return self.num_samples


def weighted_sampler(
    manifest: ManifestLike | ManifestDataset, *, num_samples: int | None = None, seed: int = 0
) -> Sampler[int]:
    """A seeded sampler that draws manifest rows with probability proportional to ``weight``.

    Parameters
    ----------
    manifest : pa.Table, path or ManifestDataset
        Rows line up with the dataset's indices when given ``ds.table`` (or ``ds``). A table with
        ``error`` rows gives them probability 0 (its rows are not filtered, so indices still match).
    num_samples : int, optional
        Draws per epoch (with replacement); default the number of rows.
    seed : int
        Seed of the sampler's own generator: same seed, same sequence of epochs.

    Returns
    -------
    WeightedRandomSampler (an :class:`InverseCDFSampler` above 2**24 rows)
        Yields row indices in ``[0, n)``.
    """
    if isinstance(manifest, ManifestDataset):
        weights = manifest.weights.astype(np.float64)
    else:
        weights = manifest_weights(read_manifest(manifest, drop_errors=False))
    if not (weights > 0).any():
        raise ValueError("every manifest weight is zero (or the manifest is empty); nothing to sample")
    n = len(weights) if num_samples is None else int(num_samples)
    if n < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    generator = torch.Generator().manual_seed(seed)
    if len(weights) > MULTINOMIAL_MAX_CATEGORIES:
        return InverseCDFSampler(torch.from_numpy(weights), n, generator)
    return WeightedRandomSampler(torch.from_numpy(weights), n, replacement=True, generator=generator)


def weighted_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Cross-entropy weighted per example and normalised by the total weight.

    Parameters
    ----------
    logits : torch.Tensor
        ``(n, num_classes)`` unnormalised scores.
    labels : torch.Tensor
        ``(n,)`` int64 class indices.
    weights : torch.Tensor
        ``(n,)`` non-negative weights (e.g. the manifest's ``weight``).

    Returns
    -------
    torch.Tensor
        Scalar ``sum_i w_i * CE_i / sum_i w_i``; equal to the plain mean CE when all weights are
        equal, and 0 (still differentiable) when all weights are 0.
    """
    if logits.ndim != 2 or labels.shape != logits.shape[:1] or weights.shape != logits.shape[:1]:
        raise ValueError(
            f"expected logits (n, C), labels (n,), weights (n,); got {tuple(logits.shape)}, "
            f"{tuple(labels.shape)}, {tuple(weights.shape)}"
        )
    weights = weights.to(logits.dtype)
    per_example = F.cross_entropy(logits, labels, reduction="none")
    # Normalising by the weight total keeps the loss scale (and so the learning rate) independent
    # of how many zero weights a batch happens to hold.
    return (weights * per_example).sum() / weights.sum().clamp_min(torch.finfo(logits.dtype).tiny)
