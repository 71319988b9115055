"""run_weight end to end on tiny data: columns, determinism, resume, coreset, full mode, errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from tests.weight.tiny import TinyCNN
from winnow.stages.common.checkpoint import MemoryCheckpoints
from winnow.stages.weight.core import run_weight
from winnow.stages.weight.params import METHODS, WeightParams


def blobs(n=120, m=30, d=6, c=3, noise=0.3, seed=0):
    """Separable Gaussian blobs with a fraction of training labels flipped (always to another class)."""
    g = np.random.default_rng(seed)
    centers = g.normal(0, 3, (c, d))
    y = g.integers(0, c, n)
    ty = np.arange(m) % c
    x = centers[y] + g.normal(0, 1, (n, d))
    tx = centers[ty] + g.normal(0, 1, (m, d))
    flip = g.random(n) < noise
    yn = y.copy()
    yn[flip] = (y[flip] + g.integers(1, c, flip.sum())) % c
    f = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return f(x), torch.tensor(yn), f(tx), torch.tensor(ty), flip


def images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` seeded random 3x6x6 images (for TinyCNN) and their labels in 3 classes."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 6, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


class TorchSaveCheckpoints(MemoryCheckpoints):
    """Stores states as the pipeline does: torch.save, read back with weights_only=True."""

    def save(self, key, state):
        buf = io.BytesIO()
        torch.save(state, buf)
        self.states[key] = buf.getvalue()

    def load(self, key):
        raw = self.states.get(key)
        return None if raw is None else torch.load(io.BytesIO(raw), weights_only=True)


@pytest.mark.parametrize("method", METHODS)
def test_columns_and_determinism(method):
    x, y, tx, ty, _ = blobs()
    p = WeightParams(method=method, rounds=2, epochs=2, batch_size=20, trusted_batch_size=10, bilevel_batches=4)
    a = run_weight(x, y, tx, ty, p, num_classes=3, seed=1)
    b = run_weight(x, y, tx, ty, p, num_classes=3, seed=1)
    cols = a.columns
    assert set(cols) == {"weight", "weight_last", "weight_std", "times_seen", "zero_fraction", "loss_mean",
                         "round_0", "round_1"}
    assert all(v.shape == (120,) for v in cols.values())
    assert cols["times_seen"].dtype == np.int32
    assert np.all(cols["times_seen"] == 4)  # every example once per epoch
    assert np.all(np.isfinite(cols["weight"])) and np.all(np.isfinite(cols["loss_mean"]))
    for k in cols:
        np.testing.assert_array_equal(cols[k], b.columns[k])
    assert len(a.metrics["trusted_accuracy"]) == 4
    assert (a.curve is not None) == (method == "mwn")
    if method == "none":
        assert np.all(cols["weight"] == 1)


def test_l2rw_weights_detect_flipped_labels():
    x, y, tx, ty, flip = blobs(n=300, noise=0.4)
    p = WeightParams(method="l2rw", epochs=4, batch_size=50, trusted_batch_size=30)
    r = run_weight(x, y, tx, ty, p, num_classes=3)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(flip, r.columns["zero_fraction"]) > 0.9  # flipped examples are often zeroed
    assert roc_auc_score(~flip, r.columns["weight"]) > 0.6
    assert r.metrics["trusted_accuracy"][-1] > 0.8


@pytest.mark.parametrize("method", ["mwn", "soseleto"])
def test_resume_after_interruption_gives_the_same_result(method):
    x, y, tx, ty, _ = blobs()
    p = WeightParams(method=method, rounds=2, epochs=2, round_init="restart", batch_size=20)
    full = run_weight(x, y, tx, ty, p, num_classes=3, seed=3)

    store = TorchSaveCheckpoints()

    def stop(epoch, model):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_weight(x, y, tx, ty, p, num_classes=3, seed=3, checkpoints=store, on_epoch_end=stop)
    resumed = run_weight(x, y, tx, ty, p, num_classes=3, seed=3, checkpoints=store)
    for k in full.columns:
        np.testing.assert_array_equal(full.columns[k], resumed.columns[k], err_msg=k)
    for k in full.model_state:
        assert torch.equal(full.model_state[k], resumed.model_state[k])
    # A checkpoint of another configuration is ignored, not misapplied.
    other = run_weight(x, y, tx, ty, WeightParams(method="none", epochs=1), num_classes=3, checkpoints=store)
    assert np.all(other.columns["times_seen"] == 1)
    # ... whatever option differs (found in review: lr, head, labels were not compared).
    for changed in (dict(lr=0.05), dict(head="mlp"), dict(trusted_batch_size=7)):
        q = WeightParams(method=method, rounds=2, epochs=2, round_init="restart", batch_size=20, **changed)
        assert run_weight(x, y, tx, ty, q, num_classes=3, seed=3, checkpoints=store).metrics["resumed_from_epoch"] == 0
    store = TorchSaveCheckpoints()
    with pytest.raises(KeyboardInterrupt):
        run_weight(x, y, tx, ty, p, num_classes=3, seed=3, checkpoints=store, on_epoch_end=stop)
    flipped = (y + 1) % 3
    assert run_weight(x, flipped, tx, ty, p, num_classes=3, seed=3, checkpoints=store).metrics["resumed_from_epoch"] == 0


def test_coreset_subset_and_reselect():
    x, y, tx, ty, _ = blobs()
    calls = []

    def reselect(emb, labels):
        calls.append(emb.shape)
        assert np.allclose(emb.sum(1), 0, atol=1e-5)  # softmax - onehot rows sum to 0
        return np.arange(60, 120), np.ones(60)

    p = WeightParams(method="l2rw", subset="coreset", epochs=4, reselect_every=2, batch_size=20)
    r = run_weight(x, y, tx, ty, p, num_classes=3, coreset=(np.arange(0, 40), np.arange(1, 41.0)),
                   reselect=reselect)
    seen = r.columns["times_seen"]
    assert calls == [(120, 3)]
    assert np.all(seen[:40] == 2) and np.all(seen[40:60] == 0) and np.all(seen[60:] == 2)
    assert np.isnan(r.columns["weight"][45])


def test_full_mode_with_a_small_cnn_and_paper_mode_bilevel():
    x, y = images(40)
    p = WeightParams(method="bilevel", trainable="full", epochs=1, batch_size=20, bilevel_batches=4,
                     bilevel_validation="train")
    r = run_weight(x, y, x[:0], y[:0], p, num_classes=3, model_factory=TinyCNN)
    seen = r.columns["times_seen"]
    assert seen.sum() == 30  # one of 4 mini-batches per step is validation, not trained on
    assert "bn.running_mean" in r.model_state and r.model_state["bn.num_batches_tracked"] == 2
    p = WeightParams(method="mwn", trainable="full", epochs=1, batch_size=20)
    r = run_weight(x, y, x[:6], y[:6], p, num_classes=3, model_factory=TinyCNN)
    assert np.all(r.columns["times_seen"] == 1)


@pytest.mark.parametrize("method", METHODS)
def test_a_one_example_remainder_joins_the_last_batch(method):
    """41 = 2 x 20 + 1: BatchNorm (and Bilevel's validation split) cannot take a batch of one."""
    x, y = images(41)
    p = WeightParams(method=method, trainable="full", epochs=1, batch_size=20, bilevel_batches=4)
    r = run_weight(x, y, x[:6], y[:6], p, num_classes=3, model_factory=TinyCNN)
    assert np.all(r.columns["times_seen"] == 1)
    if method == "bilevel":
        p = WeightParams(method=method, trainable="full", epochs=1, batch_size=20, bilevel_batches=4,
                         bilevel_validation="train")
        r = run_weight(x, y, x[:0], y[:0], p, num_classes=3, model_factory=TinyCNN)
        assert r.columns["times_seen"].sum() == 41 - 5 - 6  # one validation group of each step's 4


def test_errors_name_the_problem():
    x, y, tx, ty, _ = blobs()
    with pytest.raises(ValueError, match="trusted"):
        run_weight(x, y, tx[:0], ty[:0], WeightParams(method="l2rw"), num_classes=3)
    with pytest.raises(ValueError, match="--method"):
        run_weight(x, y, tx, ty, WeightParams(method="bogus"), num_classes=3)
    with pytest.raises(ValueError, match="coreset"):
        run_weight(x, y, tx, ty, WeightParams(subset="coreset"), num_classes=3)
    with pytest.raises(ValueError, match="num_classes"):
        run_weight(x, y, tx, ty, WeightParams(), num_classes=2)
    with pytest.raises(ValueError, match="model_factory"):
        run_weight(x, y, tx, ty, WeightParams(trainable="full"), num_classes=3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", METHODS)
def test_full_mode_on_cuda(method):
    x, y = images(64)
    p = WeightParams(method=method, trainable="full", epochs=2, batch_size=32, bilevel_batches=4)
    r = run_weight(x, y, x[:12], y[:12], p, num_classes=3, device="cuda", model_factory=TinyCNN)
    assert np.all(r.columns["times_seen"] == 2)
    assert all(v.device.type == "cpu" for v in r.model_state.values())
