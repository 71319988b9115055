"""ManifestDataset (bytes / uri / features), weighted_sampler and weighted_loss."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from winnow.stages.common.arrow import vectors_to_arrow, with_metadata
from winnow.stages.common.images import encode_png
from winnow.stages.train import ManifestDataset, weighted_loss, weighted_sampler


def _images(n: int, *, channels: int = 1, seed: int = 0) -> np.ndarray:
    shape = (n, 6, 5) if channels == 1 else (n, 6, 5, channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _table(images: np.ndarray, **extra: object) -> pa.Table:
    n = len(images)
    cols = {
        "id": [f"r{i}" for i in range(n)],
        "uri": [None] * n,
        "image": [encode_png(im) for im in images],
        "label": pa.array(np.arange(n) % 3, pa.int32()),
        "split": ["train"] * n,
        "weight": pa.array(np.linspace(0.5, 2.0, n), pa.float32()),
    }
    cols.update(extra)
    return with_metadata(pa.table(cols), classes=["a", "b", "c"])


def test_dataset_from_image_bytes_gives_chw_floats_labels_and_weights():
    images = _images(5)
    ds = ManifestDataset(_table(images))
    assert len(ds) == 5 and ds.mode == "L"
    x, y, w = ds[3]
    assert x.shape == (1, 6, 5) and x.dtype == torch.float32
    np.testing.assert_allclose(x[0].numpy(), images[3] / 255.0, rtol=0, atol=1e-7)
    assert y.item() == 0 and y.dtype == torch.int64
    assert w.item() == pytest.approx(np.linspace(0.5, 2.0, 5)[3]) and w.dtype == torch.float32


def test_dataset_rgb_and_transform():
    images = _images(4, channels=3)
    ds = ManifestDataset(_table(images), transform=lambda img: torch.tensor(img.size))
    assert ds.mode == "RGB"
    assert ds[0][0].tolist() == [5, 6]  # PIL size is (width, height)
    np.testing.assert_array_equal(ManifestDataset(_table(images)).arrays(), images)


def test_dataset_from_uri_absolute_and_relative(tmp_path):
    images = _images(3)
    names = []
    for i, im in enumerate(images):
        (tmp_path / f"im{i}.png").write_bytes(encode_png(im))
        names.append(f"im{i}.png")
    absolute = _table(images, image=[None] * 3, uri=[str(tmp_path / n) for n in names])
    relative = _table(images, image=[None] * 3, uri=names)
    for ds in (ManifestDataset(absolute), ManifestDataset(relative, root=tmp_path)):
        np.testing.assert_allclose(ds[2][0][0].numpy(), images[2] / 255.0, atol=1e-7)
    with pytest.raises(ValueError, match="no row of the manifest has a readable image"):
        ManifestDataset(relative)  # relative paths without root do not resolve from here


def test_dataset_from_feature_column_and_from_path(tmp_path):
    vectors = np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32)
    table = _table(_images(6), embedding=vectors_to_arrow(vectors))
    path = tmp_path / "train.parquet"
    pq.write_table(table, path)
    ds = ManifestDataset(path, features="embedding")
    x, y, _ = ds[4]
    np.testing.assert_array_equal(x.numpy(), vectors[4])
    assert y.item() == 1
    with pytest.raises(ValueError, match="'nope' is not a column"):
        ManifestDataset(table, features="nope")


def test_dataset_drops_error_rows_and_filters_split():
    images = _images(6)
    table = _table(images, error=[None, "bad", None, None, "worse", None],
                   split=["train", "train", "test", "train", "train", "trusted"])
    ds = ManifestDataset(table)
    assert ds.table.column("id").to_pylist() == ["r0", "r2", "r3", "r5"]
    np.testing.assert_allclose(ds[1][0][0].numpy(), images[2] / 255.0, atol=1e-7)
    assert ManifestDataset(table, split="train").table.column("id").to_pylist() == ["r0", "r3"]


def test_three_line_usage_with_dataloader():
    ds = ManifestDataset(_table(_images(10)))
    loader = DataLoader(ds, batch_size=4, sampler=weighted_sampler(ds.table))
    batches = list(loader)
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    x, y, w = batches[0]
    assert x.shape == (4, 1, 6, 5) and y.dtype == torch.int64 and w.dtype == torch.float32


def test_sampler_follows_weights_statistically():
    weights = np.array([0.0, 1.0, 2.0, 7.0], dtype=np.float32)
    table = pa.table({"id": list("abcd"), "label": pa.array([0, 1, 0, 1], pa.int32()), "weight": weights})
    draws = np.array(list(weighted_sampler(table, num_samples=100_000, seed=3)))
    freq = np.bincount(draws, minlength=4) / len(draws)
    # 4-sigma band of a binomial proportion with n = 1e5 is < 0.006.
    np.testing.assert_allclose(freq, weights / weights.sum(), atol=0.006)
    assert freq[0] == 0.0
    again = np.array(list(weighted_sampler(table, num_samples=1000, seed=3)))
    np.testing.assert_array_equal(draws[:1000], again)
    other = np.array(list(weighted_sampler(table, num_samples=1000, seed=4)))
    assert (other != again).any()
    assert len(weighted_sampler(table)) == 4


def test_inverse_cdf_sampler_follows_weights_and_never_draws_a_zero_weight_row():
    from winnow.stages.train.dataset import InverseCDFSampler

    weights = torch.tensor([0.0, 1.0, 0.0, 2.0, 7.0, 0.0], dtype=torch.float64)
    draws = np.array(list(InverseCDFSampler(weights, 100_000, torch.Generator().manual_seed(3))))
    freq = np.bincount(draws, minlength=6) / len(draws)
    np.testing.assert_allclose(freq, (weights / weights.sum()).numpy(), atol=0.006)
    assert freq[0] == freq[2] == freq[5] == 0.0
    again = list(InverseCDFSampler(weights, 1000, torch.Generator().manual_seed(3)))
    assert again == draws[:1000].tolist()


def test_sampler_above_torch_multinomials_limit_still_draws():
    """torch.multinomial refuses more than 2**24 categories: `winnow train --weighting sampler`
    failed on a manifest of 16,777,217 rows."""
    from winnow.stages.train.dataset import MULTINOMIAL_MAX_CATEGORIES, InverseCDFSampler

    with pytest.raises(RuntimeError):
        torch.multinomial(torch.ones(MULTINOMIAL_MAX_CATEGORIES + 1), 1)
    n = MULTINOMIAL_MAX_CATEGORIES + 1
    weights = np.zeros(n, dtype=np.float32)
    weights[[5, n - 1]] = [1.0, 3.0]
    table = pa.table({"weight": weights})
    sampler = weighted_sampler(table, num_samples=4000, seed=0)
    assert isinstance(sampler, InverseCDFSampler)
    freq = np.bincount(np.array(list(sampler)), minlength=n)[[5, n - 1]] / 4000
    np.testing.assert_allclose(freq, [0.25, 0.75], atol=0.03)


def test_sampler_gives_error_and_null_rows_no_mass_and_rejects_bad_weights():
    table = pa.table({"id": list("abc"), "label": pa.array([0, 1, 0], pa.int32()),
                      "weight": pa.array([1.0, None, 1.0], pa.float32()), "error": [None, None, "broken"]})
    assert set(weighted_sampler(table, num_samples=500)) == {0}
    with pytest.raises(ValueError, match="every manifest weight is zero"):
        weighted_sampler(table.set_column(2, "weight", pa.array([0.0, 0.0, 0.0], pa.float32())))
    with pytest.raises(ValueError, match="id 'b'"):
        weighted_sampler(table.set_column(2, "weight", pa.array([1.0, -1.0, 0.0], pa.float32())))


def test_weighted_loss_equals_hand_computation():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(7, 4))
    labels = rng.integers(0, 4, 7)
    weights = rng.uniform(0, 3, 7)
    # Hand computation: CE_i = logsumexp(z_i) - z_i[y_i]; loss = sum w_i CE_i / sum w_i.
    ce = np.log(np.exp(logits).sum(1)) - logits[np.arange(7), labels]
    expected = (weights * ce).sum() / weights.sum()
    got = weighted_loss(torch.tensor(logits), torch.tensor(labels), torch.tensor(weights))
    assert got.item() == pytest.approx(expected, rel=1e-12)
    equal = weighted_loss(torch.tensor(logits), torch.tensor(labels), torch.full((7,), 0.3, dtype=torch.float64))
    assert equal.item() == pytest.approx(ce.mean(), rel=1e-12)


def test_weighted_loss_all_zero_is_zero_and_differentiable():
    logits = torch.randn(3, 2, requires_grad=True)
    loss = weighted_loss(logits, torch.tensor([0, 1, 0]), torch.zeros(3))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="expected logits"):
        weighted_loss(torch.randn(3, 2), torch.tensor([0, 1]), torch.zeros(3))


def test_dataset_from_a_run_folder_reads_its_manifest_parquet_only(tmp_path):
    """``ManifestDataset("runs/demo/export")`` failed on stage.json; a folder now means its manifest."""
    images = _images(7)
    table = _table(images)
    export = tmp_path / "export"
    export.mkdir()
    pq.write_table(table, export / "train.parquet")
    pq.write_table(table.slice(0, 2), export / "flags.parquet")  # other rows: must not be read
    (export / "stage.json").write_text("{}")
    (export / "summary.json").write_text("{}")
    ds = ManifestDataset(str(export))
    assert ds.table.column("id").to_pylist() == [f"r{i}" for i in range(7)]
    assert ds.table.schema.metadata == table.schema.metadata  # class names kept
    # a sharded train.parquet folder (as the pipeline writes large ones), and a folder of shards
    shards = export / "sharded"
    (shards / "train.parquet").mkdir(parents=True)
    pq.write_table(table.slice(0, 4), shards / "train.parquet" / "part-00000.parquet")
    pq.write_table(table.slice(4), shards / "train.parquet" / "part-00001.parquet")
    (shards / "stage.json").write_text("{}")
    for folder in (shards, shards / "train.parquet"):
        got = ManifestDataset(folder)
        assert got.table.column("id").to_pylist() == [f"r{i}" for i in range(7)]
        np.testing.assert_allclose(got[5][0][0].numpy(), images[5] / 255.0, atol=1e-7)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "stage.json").write_text("{}")
    with pytest.raises(ValueError, match=r"holds no Parquet file .*train\.parquet"):
        ManifestDataset(empty)
