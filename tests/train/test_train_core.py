"""The reference trainer: learns an easy problem, honours weights, is deterministic on CPU."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from winnow.models.small import StandardizedMLP as MLP
from winnow.stages.common.arrow import vectors_to_arrow, with_metadata
from winnow.stages.common.images import encode_png
from winnow.stages.train import TrainParams, train_model

FAST = dict(epochs=8, batch_size=64, lr=0.05)


def _blobs(n: int, *, seed: int, k: int = 3, d: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(0, 3, (k, d))
    y = rng.integers(0, k, n)
    return (centres[y] + rng.normal(0, 1, (n, d))).astype(np.float32), y


def _feature_table(x: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None) -> pa.Table:
    cols = {"id": [str(i) for i in range(len(y))], "label": pa.array(y, pa.int32()),
            "split": ["train"] * len(y), "embedding": vectors_to_arrow(x)}
    if weight is not None:
        cols["weight"] = pa.array(weight, pa.float32())
    return with_metadata(pa.table(cols), classes=["a", "b", "c"])


def test_learns_blobs_and_is_deterministic():
    x, y = _blobs(600, seed=0)
    xt, yt = _blobs(300, seed=1)
    params = TrainParams(features="embedding", **FAST)
    a = train_model(_feature_table(x, y), _feature_table(xt, yt), params, num_classes=3, seed=5)
    b = train_model(_feature_table(x, y), _feature_table(xt, yt), params, num_classes=3, seed=5)
    assert a.metrics["model"] == "mlp"
    assert a.metrics["test_accuracy"] > 0.95
    assert set(a.metrics["per_class_accuracy"]) == {"a", "b", "c"}
    assert len(a.metrics["epochs"]) == 8 and a.metrics["epochs"][-1]["train_loss"] < a.metrics["epochs"][0]["train_loss"]
    assert a.metrics["best_test_accuracy"] >= a.metrics["test_accuracy"]
    assert a.model_state.keys() == b.model_state.keys()
    for k in a.model_state:
        assert torch.equal(a.model_state[k], b.model_state[k]), k
    assert [e["train_loss"] for e in a.metrics["epochs"]] == [e["train_loss"] for e in b.metrics["epochs"]]
    c = train_model(_feature_table(x, y), None, params, num_classes=3, seed=6)
    assert any(not torch.equal(a.model_state[k], c.model_state[k]) for k in a.model_state)
    assert "test_accuracy" not in c.metrics


@pytest.mark.parametrize("weighting", ["sampler", "loss"])
def test_weights_remove_systematic_label_noise(weighting):
    # 70% of class 0 is relabelled 1. With weight 0 on those rows, class 0 is learnt; ignoring
    # the weights, the model learns that class 0's region is class 1.
    x, y = _blobs(900, seed=2)
    rng = np.random.default_rng(3)
    flip = (y == 0) & (rng.random(len(y)) < 0.7)
    noisy = np.where(flip, 1, y)
    weight = np.where(flip, 0.0, 1.0)
    xt, yt = _blobs(300, seed=4)
    test = _feature_table(xt, yt)
    curated = train_model(_feature_table(x, noisy, weight), test,
                          TrainParams(features="embedding", weighting=weighting, **FAST), num_classes=3)
    plain = train_model(_feature_table(x, noisy, weight), test,
                        TrainParams(features="embedding", weighting="none", **FAST), num_classes=3)
    assert curated.metrics["per_class_accuracy"]["a"] > 0.9
    assert plain.metrics["per_class_accuracy"]["a"] < 0.5


def _digit_table(idx: np.ndarray, digits: object) -> pa.Table:
    images = (digits.images[idx] * 255 / 16).clip(0, 255).astype(np.uint8)
    return pa.table({"id": [str(i) for i in idx], "image": [encode_png(im) for im in images],
                     "label": pa.array(digits.target[idx], pa.int32()), "split": ["train"] * len(idx),
                     "error": [None] * len(idx)})


def test_cnn_on_digit_images_learns_and_state_round_trips():
    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    train, test = _digit_table(order[:500], digits), _digit_table(order[500:800], digits)
    result = train_model(train, test, TrainParams(epochs=6, batch_size=64, width=16),
                         num_classes=10, seed=0)
    assert result.metrics["model"] == "cnn" and result.metrics["input_shape"] == [1, 8, 8]
    assert result.metrics["test_accuracy"] > 0.85
    buf = io.BytesIO()
    torch.save(result.model_state, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert torch.equal(state["head.weight"], result.model_state["head.weight"])


def test_an_odd_or_unreadable_image_costs_its_row_not_the_run():
    """One 16x16 image among 8x8 ones (and one that does not decode) used to abort training."""
    digits = load_digits()
    idx = np.arange(200)
    train, test = _digit_table(idx, digits), _digit_table(np.arange(200, 260), digits)
    images = train["image"].to_pylist()
    images[5], images[9] = encode_png(np.zeros((16, 16), np.uint8)), b"not an image"
    train = train.set_column(train.schema.get_field_index("image"), "image", pa.array(images, pa.binary()))
    for weighting in ("sampler", "loss"):
        result = train_model(train, test, TrainParams(epochs=1, weighting=weighting), num_classes=10, seed=0)
        m = result.metrics
        assert m["num_train"] == 198 and m["input_shape"] == [1, 8, 8] and m["left_out"] == 2
        assert [r["id"] for r in m["left_out_rows"]] == ["5", "9"]
        assert "16x16" in m["left_out_rows"][0]["error"] and "--image-size 8x8" in m["left_out_rows"][0]["error"]
        assert "cannot decode image" in m["left_out_rows"][1]["error"]
    clean = train_model(_digit_table(idx, digits), test, TrainParams(epochs=1), num_classes=10, seed=0)
    assert clean.metrics["left_out"] == 0 and clean.metrics["left_out_rows"] == []


def test_model_factory_is_used_and_inputs_are_checked():
    x, y = _blobs(200, seed=0)
    built = []

    def factory() -> nn.Module:
        built.append(1)
        return MLP(8, 3, hidden=16)

    r = train_model(_feature_table(x, y), None, TrainParams(features="embedding", epochs=1), num_classes=3,
                    model_factory=factory)
    assert built == [1] and r.metrics["model"] == "custom" and "body.0.weight" in r.model_state
    with pytest.raises(ValueError, match="num_classes is 2"):
        train_model(_feature_table(x, y), None, TrainParams(features="embedding", epochs=1), num_classes=2)
    with pytest.raises(ValueError, match="every manifest weight is zero"):
        train_model(_feature_table(x, y, np.zeros(len(y))), None,
                    TrainParams(features="embedding", epochs=1, weighting="loss"), num_classes=3)
    with pytest.raises(ValueError, match="needs at least 2"):
        train_model(_feature_table(x[:1], y[:1]), None, TrainParams(features="embedding", epochs=1), num_classes=3)



@pytest.mark.parametrize(
    ("options", "message"),
    [({"weighting": "sometimes"}, "--weighting"), ({"epochs": 0}, "--epochs"),
     ({"batch_size": 1}, "--batch-size must be >= 2")],
)
def test_bad_options_name_the_option(options: dict, message: str):
    with pytest.raises(ValueError, match=message):
        TrainParams(**options)


def test_every_row_is_trained_on_each_epoch_even_a_one_row_remainder(monkeypatch):
    """65 = 64 + 1 rows: the remainder joins the last batch instead of being skipped."""
    import winnow.stages.train.core as core

    x, y = _blobs(65, seed=0)
    sizes = []
    real = core.F.cross_entropy

    def counting(logits, labels, *args, **kwargs):
        sizes.append(len(labels))
        return real(logits, labels, *args, **kwargs)

    monkeypatch.setattr(core.F, "cross_entropy", counting)
    train_model(_feature_table(x, y), None, TrainParams(features="embedding", epochs=2, batch_size=64),
                num_classes=3)
    assert sizes == [65, 65]


def test_augment_crops_and_flips_without_changing_content():
    from winnow.stages.train.core import _augment

    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5) + 1
    out = _augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    for i in range(2):
        # Every non-padding value of the output comes from the same image, in the same channel.
        for c in range(3):
            values = out[i, c][out[i, c] > 0]
            assert set(values.tolist()) <= set(x[i, c].flatten().tolist())
    again = _augment(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_images_above_32_px_name_followable_options_and_model_cnn_trains_on_them():
    """`winnow train` on 40 px images told the user to pass a Python model_factory; it now names
    CLI options, and the one it names first works (the CNN pools adaptively)."""
    rng = np.random.default_rng(0)
    y = np.arange(24) % 2
    images = np.where(y[:, None, None] == 1, 200, 30).astype(np.uint8) + rng.integers(0, 20, (24, 40, 36), dtype=np.uint8)
    table = with_metadata(pa.table({"id": [str(i) for i in range(24)], "image": [encode_png(im) for im in images],
                                    "label": pa.array(y, pa.int32()), "split": ["train"] * 24}),
                          classes=["dark", "light"])
    with pytest.raises(ValueError, match=r"40x36 px .*--model cnn .*--features embedding.*--image-size 32x32"):
        train_model(table, None, TrainParams(epochs=1, batch_size=8, width=4), num_classes=2)
    result = train_model(table, table, TrainParams(model="cnn", epochs=3, batch_size=8, width=4), num_classes=2)
    assert result.metrics["model"] == "cnn" and result.metrics["input_shape"] == [1, 40, 36]
    assert result.metrics["test_accuracy"] == 1.0


def test_every_weighting_choice_has_one_table_entry():
    from winnow.stages.train.core import WEIGHTINGS
    from winnow.stages.train.params import WEIGHTINGS as CHOICES

    assert set(WEIGHTINGS) == set(CHOICES)
    assert [n for n, w in WEIGHTINGS.items() if w.sampled] == ["sampler"]
    assert [n for n, w in WEIGHTINGS.items() if w.in_loss] == ["loss"]
