"""One definition of each small network, in winnow.models; saved state_dicts keep their keys."""

from __future__ import annotations

import torch

from winnow.models import small
from winnow.stages.train import models as train_models


def test_the_trainer_uses_winnow_models_definitions():
    assert train_models.SmallCNN is small.StandardizedCNN and train_models.MLP is small.StandardizedMLP


def test_state_dict_keys_of_saved_models_are_unchanged():
    """train/model.pt and embed's warm-up state were saved with these keys: renaming a layer would
    make them unloadable (load_state_dict(strict=True))."""
    cnn = small.StandardizedCNN(1, 3, width=4)
    assert list(cnn.state_dict())[:4] == ["norm.mean", "norm.std", "features.0.0.weight", "features.0.1.weight"]
    assert "features.5.0.weight" in cnn.state_dict() and "head.weight" in cnn.state_dict()
    mlp = small.StandardizedMLP(5, 3, hidden=4)
    assert [k for k in mlp.state_dict() if k.endswith("weight")] == [
        "body.0.weight", "body.1.weight", "body.3.weight", "body.4.weight", "head.weight"]
    backbone = small.SmallCNN(3, width=4)
    assert "features.3.0.weight" in backbone.state_dict() and "norm.mean" not in backbone.state_dict()


def test_every_small_network_has_features_and_a_head():
    x_img, x_vec = torch.rand(2, 1, 8, 8), torch.rand(2, 5)
    for model, x, dim in ((small.SmallCNN(3, width=4), x_img, 16), (small.MLP(3, in_features=64, hidden=6), x_img, 6),
                          (small.StandardizedCNN(1, 3, width=4), x_img, 16),
                          (small.StandardizedMLP(5, 3, hidden=6), x_vec, 6)):
        model.eval()
        feats = model.forward_features(x)
        assert feats.shape == (2, dim) and torch.equal(model.head(feats), model(x))
