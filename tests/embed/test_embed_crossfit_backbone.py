"""--crossfit backbone: a labelled row's probs come from a network that never saw its label."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from tests.embed.conftest import make_manifest
from winnow.stages.common.checkpoint import MemoryCheckpoints
from winnow.stages.embed import EmbedParams, run_embed
from winnow.stages.embed import warmup as warmup_mod

FAST = dict(folds=2, head_iters=10, num_workers=0, warmup=2, warmup_batch_size=8)
N = 30
FOLDS = np.arange(N) % 2  # fixed, so that changing a label cannot move rows between folds
ROW = 4  # in fold 0


def _with_label(manifest: pa.Table, row: int, label: int) -> pa.Table:
    labels = manifest["label"].to_numpy().copy()
    labels[row] = label
    return manifest.set_column(manifest.schema.get_field_index("label"), "label", pa.array(labels, pa.int32()))


def _probs(manifest: pa.Table, crossfit: str, checkpoints: MemoryCheckpoints | None = None) -> np.ndarray:
    params = EmbedParams(crossfit=crossfit, **FAST)
    return run_embed(manifest, params, num_classes=3, fold_ids=FOLDS, checkpoints=checkpoints).probs


def test_a_rows_probs_do_not_depend_on_its_own_label():
    manifest = make_manifest(N)
    flipped = _with_label(manifest, ROW, (manifest["label"][ROW].as_py() + 1) % 3)
    a, b = _probs(manifest, "backbone"), _probs(flipped, "backbone")
    np.testing.assert_array_equal(a[ROW], b[ROW])
    assert not np.array_equal(a, b)  # the label did reach the other fold's network
    # With the head cross-fitted only, the warm-up saw the row's label and its probs move.
    assert not np.array_equal(_probs(manifest, "head")[ROW], _probs(flipped, "head")[ROW])


def test_probs_come_from_the_fold_networks_and_the_rest_from_the_head():
    manifest = make_manifest(N, splits=("train", "train", "test"))
    params = EmbedParams(crossfit="backbone", **FAST)
    res = run_embed(manifest, params, num_classes=3, fold_ids=FOLDS)
    head = run_embed(manifest, EmbedParams(crossfit="head", **FAST), num_classes=3, fold_ids=FOLDS)
    test = np.asarray(manifest["split"].to_pylist()) == "test"
    np.testing.assert_array_equal(res.probs[test], head.probs[test])  # no given label: scored as before
    np.testing.assert_array_equal(res.embedding, head.embedding)  # one embedding space for every row
    assert not np.allclose(res.probs[~test], head.probs[~test])
    np.testing.assert_allclose(res.probs[~test].sum(1), 1.0, rtol=1e-6)
    assert len(res.metrics["fold_backbone_accuracy"]) == 2


def test_a_rerun_loads_the_fold_networks_instead_of_training(monkeypatch: pytest.MonkeyPatch):
    manifest = make_manifest(N)
    store = MemoryCheckpoints()
    first = _probs(manifest, "backbone", store)
    assert {"warmup", "warmup-fold-1-of-2", "warmup-fold-2-of-2"} <= set(store.states)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished warm-up was trained again")

    monkeypatch.setattr(warmup_mod, "augment_batch", no_training)
    np.testing.assert_array_equal(_probs(manifest, "backbone", store), first)


class _Killed(Exception):
    pass


class _KillAtSecondSave(MemoryCheckpoints):
    """Dies when ``key`` is saved the second time (after its first epoch), keeping the first state."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key, self.saves = key, 0

    def save(self, key: str, state: object) -> None:
        if key == self.key:
            self.saves += 1
            if self.saves == 2:
                raise _Killed
        super().save(key, state)


def test_a_fold_warmup_killed_midway_resumes_to_the_same_probs():
    manifest = make_manifest(N)
    whole = _probs(manifest, "backbone")
    store = _KillAtSecondSave("warmup-fold-2-of-2")
    with pytest.raises(_Killed):
        _probs(manifest, "backbone", store)
    assert store.states["warmup-fold-2-of-2"]["epoch"] == 1
    store.key = ""  # the rerun is not killed
    np.testing.assert_array_equal(_probs(manifest, "backbone", store), whole)


@pytest.mark.parametrize(
    ("params", "features"),
    [
        (dict(warmup=0, weights="none"), False),
        (dict(model="features"), True),
    ],
)
def test_without_a_network_trained_here_the_option_is_refused(params: dict, features: bool):
    manifest = make_manifest(12)
    kwargs = {"features": np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)} if features else {}
    with pytest.raises(ValueError, match="--crossfit backbone"):
        run_embed(manifest, EmbedParams(crossfit="backbone", folds=2, num_workers=0, **params), num_classes=3, **kwargs)


def test_every_training_loop_goes_through_map_work_and_gives_the_same_result():
    # The Beam executor passes a map that runs each unit on a worker; a spy map here records
    # what is handed over: the main warm-up, the cross-fit's heads, then the fold warm-ups in one call.
    from winnow.stages.common.mapping import map_in_process

    calls: list[list] = []

    def spy(fn, items, data):
        calls.append(list(items))
        # only the data travels: the function holds small arguments, the data arrays and tables
        assert all(isinstance(v, (np.ndarray, pa.Table)) or hasattr(v, "numpy") for v in data.values())
        return map_in_process(fn, items, data)

    manifest = make_manifest(N)
    params = EmbedParams(crossfit="backbone", **FAST)
    spied = run_embed(manifest, params, num_classes=3, fold_ids=FOLDS, map_work=spy)
    plain = run_embed(manifest, params, num_classes=3, fold_ids=FOLDS)
    assert calls == [[(None, "warmup")], [0, 1], [(0, "warmup-fold-1-of-2"), (1, "warmup-fold-2-of-2")]]
    np.testing.assert_array_equal(spied.probs, plain.probs)
    np.testing.assert_array_equal(spied.embedding, plain.embedding)
