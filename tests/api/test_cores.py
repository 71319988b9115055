"""The pure cores on arrays (winnow.stages.api) and the table converter, as ``import winnow`` gives them."""

from __future__ import annotations

import doctest

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import winnow
import winnow.stages.api as cores
from winnow.stages.select.core import select
from winnow.stages.select.params import SelectParams


def test_docstring_examples_run():
    result = doctest.testmod(cores, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 4 and result.failed == 0


@pytest.mark.parametrize("make", [pd.DataFrame, pl.DataFrame, pa.table], ids=["pandas", "polars", "pyarrow"])
def test_as_arrow_table_takes_pandas_polars_and_pyarrow(make):
    table = winnow.as_arrow_table(make({"id": ["a", "b"], "label": [1, 0]}))
    assert isinstance(table, pa.Table)
    assert table.column_names == ["id", "label"] and table["label"].to_pylist() == [1, 0]
    assert not (table.schema.metadata or {}), "no pandas index metadata travels on"


def test_as_arrow_table_refuses_other_objects_naming_the_argument():
    with pytest.raises(TypeError, match=r"manifest: expected a table .* got builtins\.dict"):
        winnow.as_arrow_table({"id": [1]}, name="manifest")


def test_coreset_is_the_select_core():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 6)).astype(np.float32)
    y = np.repeat([0, 1, 2], 40)
    got = winnow.coreset(x, y, budget=0.25, k=5, workers=1, seed=3)
    want = select(x, y, np.ones(120, bool), SelectParams(budget=0.25, k=5, workers=1), seed=3, device="cpu")
    for name, values in want.columns.items():
        np.testing.assert_array_equal(got.columns[name], values)
    assert got.columns["selected"].sum() == 30
    with pytest.raises(ValueError, match="budget"):
        winnow.coreset(x, y, budget=-0.1)
    with pytest.raises(TypeError):
        winnow.coreset(x, y, 0.1)  # options are keyword-only


def test_find_noisy_labels_flags_flips_and_uses_the_meta_weights():
    rng = np.random.default_rng(0)
    n, c = 300, 3
    truth = np.repeat(np.arange(c), n // c)
    probs = np.full((n, c), 0.1)
    probs[np.arange(n), truth] = 0.8
    given = truth.copy()
    flipped = rng.choice(np.arange(30, n), 40, replace=False)
    given[flipped] = (truth[flipped] + 1) % c
    trusted = np.arange(n) < 30
    weights = np.where(np.isin(np.arange(n), flipped), 0.0, 1.0) + rng.uniform(0, 0.1, n)
    out = winnow.find_noisy_labels(given, probs=probs, trusted=trusted, weights=weights)
    assert out.flag.shape == (n,) and out.flag.dtype == bool
    assert set(np.flatnonzero(out.flag)) == set(flipped)
    np.testing.assert_array_equal(out.suggested_label[~trusted], truth[~trusted])
    assert np.isnan(out.score[trusted]).all() and not out.flag[trusted].any()
    assert "meta_weight" in out.summary["signals"] and "probs" in out.summary["signals"]
    assert repr(out).startswith("NoiseFlags(rows=300, flagged=40")
    with pytest.raises(ValueError, match="give probs"):
        winnow.find_noisy_labels(given)


def test_example_weights_takes_numpy_and_gives_one_weight_per_train_row():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 60)
    x = rng.normal(size=(120, 4)) + 3 * np.eye(2, 4)[y]
    noisy = y.copy()
    noisy[:12] = 1 - noisy[:12]
    result = winnow.example_weights(x[:100], noisy[:100], x[100:], y[100:], epochs=2, batch_size=50)
    w = result.columns["weight"]
    assert w.shape == (100,) and np.isfinite(w).all()
    assert w[:12].mean() < w[12:].mean(), "the flipped rows weigh less"


def test_crossfit_probs_rows_sum_to_one():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    x = rng.normal(size=(60, 3)) + 3 * np.eye(3)[y]
    probs = winnow.crossfit_probs(x, y, folds=3, head_iters=20)
    assert probs.shape == (60, 3) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="labels"):
        winnow.crossfit_probs(x, y[:10])
