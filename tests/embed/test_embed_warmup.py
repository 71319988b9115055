"""Warm-up augmentation (against pad-and-slice), decode workers and uri rows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from tests.embed.conftest import make_manifest
from winnow.stages.embed import EmbedParams, run_embed
from winnow.stages.embed.warmup import augment_batch


def test_augment_batch_is_a_seeded_pad_and_crop_plus_flip():
    x = torch.randn(6, 3, 8, 8)
    np.testing.assert_array_equal(augment_batch(x, pad=0, flip=False, generator=torch.Generator()), x)
    out = augment_batch(x, pad=2, flip=True, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    off = torch.randint(0, 5, (6, 2), generator=g)
    flips = torch.rand(6, generator=g) < 0.5
    xp = F.pad(x, (2, 2, 2, 2))
    for i in range(6):
        ref = xp[i, :, off[i, 0] : off[i, 0] + 8, off[i, 1] : off[i, 1] + 8]
        torch.testing.assert_close(out[i], ref.flip(2) if flips[i] else ref, rtol=0, atol=0)


def test_decode_workers_and_uri_rows_give_the_same_embeddings(tmp_path):
    manifest = make_manifest(18, size=8, channels=3)
    uris = []
    for i, data in enumerate(manifest.column("image").to_pylist()):
        path = tmp_path / f"{i}.png"
        path.write_bytes(data)
        uris.append(str(path))
    by_uri = manifest.set_column(1, "uri", pa.array(uris)).set_column(2, "image", pa.array([None] * 18, pa.binary()))
    p = EmbedParams(model="resnet20", weights="none", warmup=0, folds=2, head_iters=5, batch_size=4, shard_size=8)
    a = run_embed(manifest, EmbedParams(**{**p.__dict__, "num_workers": 0}), num_classes=3)
    b = run_embed(by_uri, EmbedParams(**{**p.__dict__, "num_workers": 1}), num_classes=3)
    np.testing.assert_array_equal(a.embedding, b.embedding)
    np.testing.assert_array_equal(a.probs, b.probs)
