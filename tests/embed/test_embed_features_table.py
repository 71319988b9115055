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
