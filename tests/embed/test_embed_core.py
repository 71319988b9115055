"""The stage core: error rows, NaN outputs, determinism, shards and resume (also after SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from torch import nn

from tests.embed.conftest import make_manifest
from winnow.stages.common.checkpoint import MemoryCheckpoints
from winnow.stages.embed import EmbedParams, run_embed
from winnow.stages.embed.core import NAN_ERROR

ROOT = Path(__file__).resolve().parents[2]
FAST = dict(folds=2, head_iters=10, num_workers=0)


class _NaNOnBright(nn.Module):
    """Emits NaN features for any image whose mean pixel is above 0.9 (a white image)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x)).mean((2, 3))
        bright = x.mean((1, 2, 3), keepdim=False) > 0.9
        return torch.where(bright[:, None], torch.full_like(h, float("nan")), h)


def test_nan_embedding_marks_the_row_and_stays_out_of_the_folds():
    images = np.random.default_rng(0).integers(0, 200, (20, 8, 8, 1)).astype(np.uint8)
    images[5] = 255
    manifest = make_manifest(20, images=images)
    torch.manual_seed(0)
    res = run_embed(manifest, EmbedParams(**FAST, warmup=0), num_classes=3, model=_NaNOnBright())
    assert res.errors[5] == NAN_ERROR and not res.valid[5]
    assert all(e is None for i, e in enumerate(res.errors) if i != 5)
    for arr in (res.embedding, res.probs, res.grad_embedding):
        assert np.isnan(arr[5]).all() and np.isfinite(np.delete(arr, 5, axis=0)).all()
    assert res.fold[5] == -1 and res.metrics["new_errors"] == 1


def test_ingest_errors_and_undecodable_images_are_carried_not_dropped():
    manifest = make_manifest(12, errors={2: "unknown label"})
    images = manifest.column("image").to_pylist()
    images[4] = b"not an image"
    manifest = manifest.set_column(manifest.schema.get_field_index("image"), "image", [images])
    res = run_embed(manifest, EmbedParams(model="small_cnn", weights="none", warmup=0, **FAST), num_classes=3)
    assert len(res.embedding) == 12
    assert res.errors[2] is None and not res.valid[2]  # ingest's error stays ingest's
    assert res.errors[4].startswith("cannot decode image") and not res.valid[4]
    assert np.isnan(res.embedding[[2, 4]]).all() and res.valid.sum() == 10


def test_same_seed_same_result_and_param_errors():
    manifest = make_manifest(16)
    p = EmbedParams(model="small_cnn", weights="none", warmup=1, warmup_batch_size=4, grad_dim=8, **FAST)
    a, b = run_embed(manifest, p, num_classes=3, seed=1), run_embed(manifest, p, num_classes=3, seed=1)
    for x, y in ((a.embedding, b.embedding), (a.probs, b.probs), (a.grad_embedding, b.grad_embedding)):
        np.testing.assert_array_equal(x, y)
    assert a.grad_embedding.shape == (16, 8) and a.model_state is not None
    with pytest.raises(ValueError, match="--folds"):
        run_embed(manifest, EmbedParams(folds=1), num_classes=3)
    with pytest.raises(ValueError, match="--head"):
        run_embed(manifest, EmbedParams(head="svm"), num_classes=3)


class _Interrupt(Exception):
    pass


class _DiesAfter(MemoryCheckpoints):
    """A store whose process 'dies' right after its n-th successful save."""

    def __init__(self, saves: int) -> None:
        super().__init__()
        self.left = saves

    def save(self, key, state):
        super().save(key, state)
        self.left -= 1
        if self.left == 0:
            raise _Interrupt(key)


def _assert_same(a, b):
    for name in ("embedding", "probs", "grad_embedding", "valid"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.errors == b.errors


def test_interrupted_run_resumes_from_shards_with_the_same_result():
    manifest = make_manifest(40, errors={9: "bad"})
    p = EmbedParams(model="small_cnn", weights="none", warmup=0, shard_size=8, batch_size=3, **FAST)
    clean = run_embed(manifest, p, num_classes=3)
    store = _DiesAfter(2)
    with pytest.raises(_Interrupt):
        run_embed(manifest, p, num_classes=3, checkpoints=store)
    assert sorted(store.states) == ["shard-00000", "shard-00001"]
    resumed = run_embed(manifest, p, num_classes=3, checkpoints=store)
    assert resumed.metrics["shards_loaded"] == 2 and resumed.metrics["shards"] == 5
    _assert_same(clean, resumed)
    # A store from another model is not trusted: everything is recomputed.
    other = run_embed(manifest, EmbedParams(**{**p.__dict__, "model": "mlp"}), num_classes=3, checkpoints=store)
    assert other.metrics["shards_loaded"] == 0


def test_interrupted_warmup_resumes_to_the_same_weights():
    manifest = make_manifest(24)
    p = EmbedParams(model="small_cnn", weights="none", warmup=3, warmup_batch_size=8, shard_size=8, **FAST)
    clean = run_embed(manifest, p, num_classes=3, seed=2)
    store = _DiesAfter(2)  # dies after the 2nd warm-up epoch
    with pytest.raises(_Interrupt):
        run_embed(manifest, p, num_classes=3, seed=2, checkpoints=store)
    assert store.states["warmup"]["epoch"] == 2
    resumed = run_embed(manifest, p, num_classes=3, seed=2, checkpoints=store)
    for k, v in clean.model_state.items():
        torch.testing.assert_close(resumed.model_state[k], v, rtol=0, atol=0)
    _assert_same(clean, resumed)


_KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys, torch
    sys.path[:0] = [{root!r}, {tests!r}]
    from conftest import make_manifest
    from winnow.stages.embed import EmbedParams, run_embed
    torch.set_num_threads(1)

    class DiskStore:  # atomic like the pipeline's: write a temp file, then rename
        def __init__(self, d): self.d, self.saves = d, 0
        def load(self, key):
            p = os.path.join(self.d, key + ".pt")
            return torch.load(p, weights_only=True) if os.path.exists(p) else None
        def save(self, key, state):
            p = os.path.join(self.d, key + ".pt")
            torch.save(state, p + ".tmp"); os.replace(p + ".tmp", p)
            self.saves += 1
            if self.saves == int(sys.argv[2]):
                os.kill(os.getpid(), signal.SIGKILL)

    p = EmbedParams(model="small_cnn", weights="none", warmup=0, shard_size=8, batch_size=3,
                    folds=2, head_iters=10, num_workers=0)
    run_embed(make_manifest(40), p, num_classes=3, checkpoints=DiskStore(sys.argv[1]))
    """
)


@pytest.mark.slow  # a fresh interpreter imports torch: ~10 s on the shared 2-core box
def test_resume_after_sigkill(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(_KILLED_RUN.format(root=str(ROOT), tests=str(Path(__file__).parent)))
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), "3"], capture_output=True, cwd=ROOT)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert sorted(os.listdir(tmp_path)) == ["run.py", "shard-00000.pt", "shard-00001.pt", "shard-00002.pt"]

    class Disk:
        def load(self, key):
            p = tmp_path / f"{key}.pt"
            return torch.load(p, weights_only=True) if p.exists() else None

        def save(self, key, state):
            torch.save(state, tmp_path / f"{key}.pt")

    p = EmbedParams(model="small_cnn", weights="none", warmup=0, shard_size=8, batch_size=3, **FAST)
    resumed = run_embed(make_manifest(40), p, num_classes=3, checkpoints=Disk())
    assert resumed.metrics["shards_loaded"] == 3
    _assert_same(run_embed(make_manifest(40), p, num_classes=3), resumed)


@pytest.mark.slow
def test_digits_warmup_gives_useful_out_of_sample_probs():
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(0)
    labels = d.target.copy()
    flip = rng.random(len(labels)) < 0.2
    labels[flip] = (labels[flip] + rng.integers(1, 10, flip.sum())) % 10
    images = (d.images * 255 / 16).astype(np.uint8)[..., None]
    manifest = make_manifest(len(labels), images=images, labels=labels, splits=("train",) * 9 + ("trusted",))
    res = run_embed(manifest, EmbedParams(warmup=4, folds=3, num_workers=0), num_classes=10)
    assert res.metrics["model"] == "small_cnn"
    p_given = res.probs[np.arange(len(labels)), labels]
    assert (res.probs.argmax(1) == d.target).mean() > 0.8  # recovers the true labels out of sample
    assert np.median(p_given[flip]) < 0.2 < np.median(p_given[~flip])  # noisy labels look unlikely


@pytest.mark.parametrize(
    "option,value,match",
    [
        ("warmup_batch_size", 0, r"--warmup-batch-size must be >= 2 \(BatchNorm"),
        ("warmup_batch_size", 1, r"--warmup-batch-size must be >= 2"),
        ("head_weight_decay", -1.0, r"--head-weight-decay must be a finite number >= 0"),
        ("head_weight_decay", float("nan"), r"--head-weight-decay must be a finite number >= 0"),
        ("warmup_lr", float("nan"), r"--warmup-lr must be a finite number > 0"),
        ("warmup_lr", 0.0, r"--warmup-lr must be a finite number > 0"),
        ("warmup_weight_decay", float("inf"), r"--warmup-weight-decay must be a finite number >= 0"),
        ("image_size", -3, r"--image-size must be >= 0"),
        ("warmup", -5, r"--warmup must be >= -1 \(-1 = auto\)"),
        ("num_workers", -2, r"--num-workers must be >= -1"),
    ],
)
def test_bad_numeric_options_are_named_errors(option, value, match):
    # Before: 0 raised ZeroDivisionError, 1 trained nothing, the rest ran or failed deep inside.
    p = EmbedParams(**{**dict(model="small_cnn", weights="none", warmup=1, **FAST), option: value})
    with pytest.raises(ValueError, match=match):
        run_embed(make_manifest(8), p, num_classes=3)


def test_diverged_warmup_is_named_not_a_folds_error():
    p = EmbedParams(model="small_cnn", weights="none", warmup=1, warmup_lr=1e6, warmup_batch_size=4, **FAST)
    with pytest.raises(ValueError, match=r"warm-up diverged; lower --warmup-lr \(now 1000000.0\)") as err:
        run_embed(make_manifest(16), p, num_classes=3)
    assert "--folds" not in str(err.value)


def test_no_finite_labelled_embedding_says_why():
    manifest = make_manifest(12, splits=("train", "test"))
    feats = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)
    feats[::2] = np.nan  # every train row (the only labelled ones)
    with pytest.raises(ValueError, match="embeddings are NaN/Inf for every labelled row: fix the feature column"):
        run_embed(manifest, EmbedParams(model="features", **FAST), num_classes=3, features=feats)
    with pytest.raises(ValueError, match="no labelled row"):
        run_embed(make_manifest(12, splits=("test",)), EmbedParams(model="features", **FAST), num_classes=3,
                  features=feats)


def _crossfit_with_nan_rows(monkeypatch, rows):
    from winnow.stages.embed import core

    real = core.crossfit

    def fake(*args, **kwargs):
        cf = real(*args, **kwargs)
        cf.probs[rows] = np.nan
        return cf

    monkeypatch.setattr(core, "crossfit", fake)


def test_nan_probs_give_the_row_an_error_not_zeros(monkeypatch):
    from winnow.stages.embed.core import HEAD_ERROR

    manifest = make_manifest(12)
    feats = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)
    _crossfit_with_nan_rows(monkeypatch, [3])
    res = run_embed(manifest, EmbedParams(model="features", **FAST), num_classes=3, features=feats)
    assert res.errors[3] == HEAD_ERROR and not res.valid[3]
    for arr in (res.embedding, res.probs, res.grad_embedding):
        assert np.isnan(arr[3]).all() and np.isfinite(np.delete(arr, 3, axis=0)).all()
    assert res.metrics["head_errors"] == 1 and res.metrics["new_errors"] == 1

    _crossfit_with_nan_rows(monkeypatch, slice(None))
    with pytest.raises(ValueError, match="head diverged on every row"):
        run_embed(manifest, EmbedParams(model="features", **FAST), num_classes=3, features=feats)


def test_feature_table_manifest_with_a_network_suggests_model_features():
    manifest = make_manifest(8)
    manifest = manifest.set_column(manifest.schema.get_field_index("image"), "image",
                                   pa.array([None] * 8, pa.binary()))
    with pytest.raises(ValueError, match=r"^option --model small_cnn: the manifest has no images.*--model features"):
        run_embed(manifest, EmbedParams(model="small_cnn", weights="none", **FAST), num_classes=3)
    # No message of the stage's repeats the "embed:" prefix the CLI adds.
    bad = manifest.set_column(manifest.schema.get_field_index("image"), "image", pa.array([b"x"] * 8))
    with pytest.raises(ValueError, match=r"^none of the first 8 usable manifest rows has a decodable image; row 'r0'"):
        run_embed(bad, EmbedParams(model="small_cnn", weights="none", **FAST), num_classes=3)


def test_shard_plan_batches_the_pending_shards_usable_rows_as_the_local_stage_does():
    from winnow.stages.embed.core import ShardPlan

    ok = np.array([1, 1, 0, 1, 1, 1, 1, 0, 1], bool)
    # shards of 5 rows: [0..4] has ok rows 0,1,3,4 -> batches (0,1,3) (4); [5..8] has 5,6,8 -> (5,6,8)
    plan = ShardPlan([(0, 5), (5, 9)], ["a", "b"], {}, [0, 1])
    assert [(i, r.tolist()) for i, r in plan.rows(ok, 3)] == [(0, [0, 1, 3]), (0, [4]), (1, [5, 6, 8])]
    plan.pending = [1]  # shard 0 finished by an earlier run
    assert [(i, r.tolist()) for i, r in plan.rows(ok, 3)] == [(1, [5, 6, 8])]
