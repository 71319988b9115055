"""features.parquet as the embed adapter writes it: errors carried, NaN never hidden as zeros."""

from __future__ import annotations

import dataclasses

import numpy as np

from tests.embed.conftest import make_manifest
from winnow.pipeline.steps import features_table
from winnow.stages.common.arrow import vectors_from_arrow, with_metadata
from winnow.stages.embed import EmbedParams, run_embed

PARAMS = EmbedParams(model="features", folds=2, head_iters=5)


def _manifest(n, **kwargs):
    return with_metadata(make_manifest(n, **kwargs), classes=["0", "1", "2"])


def _result(manifest):
    feats = np.random.default_rng(0).normal(size=(manifest.num_rows, 4)).astype(np.float32)
    return run_embed(manifest, PARAMS, num_classes=3, features=feats)


def test_ingest_errors_are_carried_into_features_error():
    manifest = _manifest(10, errors={2: "unknown label 'cat'"})
    res = _result(manifest)
    assert res.errors[2] is None  # the core reports only its new errors ...
    table = features_table(manifest, res, PARAMS)
    errors = table["error"].to_pylist()
    assert errors[2] == "unknown label 'cat'"  # ... the table keeps ingest's
    assert [e for i, e in enumerate(errors) if i != 2] == [None] * 9
    assert np.isnan(vectors_from_arrow(table["probs"])[2]).all()


def test_nan_probs_on_a_valid_row_are_written_as_nan_not_zeros():
    manifest = _manifest(10)
    res = _result(manifest)
    probs = res.probs.copy()
    probs[4] = np.nan
    table = features_table(manifest, dataclasses.replace(res, probs=probs), PARAMS)
    written = vectors_from_arrow(table["probs"])
    assert np.isnan(written[4]).all()
    np.testing.assert_array_equal(np.delete(written, 4, axis=0), np.delete(res.probs, 4, axis=0))


def test_streamed_features_file_equals_the_table(tmp_path):
    """write_features (the local adapter, issue 17) writes row groups of ``batch_rows`` from the
    lazy gradient embedding: the file holds the same columns and metadata as features_table of
    the eager result, across row-group boundaries and a last partial batch."""
    import pyarrow.parquet as pq

    from winnow.pipeline.io.embed import write_features

    manifest = _manifest(10, errors={2: "unknown label 'cat'"})
    feats = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    eager = run_embed(manifest, PARAMS, num_classes=3, features=feats)
    lazy = run_embed(manifest, PARAMS, num_classes=3, features=feats, lazy_grad=True)
    assert not isinstance(lazy.grad_embedding, np.ndarray)
    np.testing.assert_array_equal(np.asarray(lazy.grad_embedding), eager.grad_embedding)
    write_features(tmp_path / "f.parquet", manifest, lazy, PARAMS, batch_rows=4)
    assert pq.ParquetFile(tmp_path / "f.parquet").num_row_groups == 3
    pq.write_table(features_table(manifest, eager, PARAMS), tmp_path / "whole.parquet")
    got, want = pq.read_table(tmp_path / "f.parquet"), pq.read_table(tmp_path / "whole.parquet")
    assert got.schema.equals(want.schema, check_metadata=True)
    for name in ("id", "error"):
        assert got[name].equals(want[name]), name
    for name in ("embedding", "probs", "grad_embedding"):  # NaN rows: equal as arrays, not by Arrow's equals
        np.testing.assert_array_equal(vectors_from_arrow(got[name]), vectors_from_arrow(want[name]))
    assert np.isnan(vectors_from_arrow(got["grad_embedding"])[2]).all()


def test_handing_over_the_features_gives_the_same_result():
    """copy_features=False (the local adapter) embeds in the caller's array: same values."""
    manifest = _manifest(10, errors={3: "unreadable"})
    feats = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    copied = run_embed(manifest, PARAMS, num_classes=3, features=feats)
    owned = feats.copy()
    handed = run_embed(manifest, PARAMS, num_classes=3, features=owned, copy_features=False)
    assert np.shares_memory(handed.embedding, owned)
    for name in ("embedding", "probs", "grad_embedding"):
        np.testing.assert_array_equal(getattr(handed, name), getattr(copied, name))
