"""Every backbone kind on CPU with tiny inputs: torchvision (+ local weights), TorchScript
(also converted from torch.export, as the refusal of .pt2 files says), CIFAR ResNet-20/32, small
CNN, MLP, and the feature pass-through."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from tests.embed.conftest import make_manifest
from tests.embed.tiny import TinyEmbedder
from winnow.models.registry import build_classifier, features_and_logits, get_spec
from winnow.stages.common.images import image_to_array, open_image
from winnow.stages.embed import EmbedParams, run_embed

FAST = dict(folds=2, head_iters=5, num_workers=0, warmup=0)


def _pixels(manifest, mode="RGB") -> torch.Tensor:
    arrs = [image_to_array(open_image(b, mode=mode)) for b in manifest.column("image").to_pylist()]
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).float() / 255


def test_torchvision_resnet18_from_local_weights_matches_manual_forward(tmp_path):
    torch.manual_seed(0)
    ref = torchvision.models.resnet18(weights=None)  # 1000 classes, like an ImageNet checkpoint
    path = tmp_path / "resnet18.pt"
    torch.save(ref.state_dict(), path)
    manifest = make_manifest(6, size=32, channels=3)
    res = run_embed(
        manifest, EmbedParams(model="resnet18", weights=str(path), image_size=32, batch_size=4, **FAST), num_classes=3
    )
    ref.fc = nn.Identity()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = ref.eval()((_pixels(manifest) - mean) / std).numpy()
    assert res.embedding.shape == (6, 512)
    np.testing.assert_allclose(res.embedding, expected, rtol=1e-4, atol=1e-5)
    assert res.valid.all() and res.probs.shape == (6, 3)


def test_torchvision_without_weights_is_a_clear_error_and_never_downloads():
    manifest = make_manifest(6, size=32, channels=3)
    for warmup in (-1, 0):  # default (auto) and explicit no warm-up
        with pytest.raises(ValueError, match="needs --weights PATH.*never downloads"):
            run_embed(manifest, EmbedParams(model="resnet18", **{**FAST, "warmup": warmup}), num_classes=3)
    with pytest.raises(ValueError, match="file not found"):
        run_embed(manifest, EmbedParams(model="resnet18", weights="/nonexistent.pt", **FAST), num_classes=3)


def test_torchvision_weights_of_another_model_are_rejected(tmp_path):
    path = tmp_path / "w.pt"
    torch.save(build_classifier("resnet20", 10, in_channels=3).state_dict(), path)
    with pytest.raises(ValueError, match="--weights"):
        build_classifier("resnet18", 10, in_channels=3, weights=str(path))


def test_build_classifier_torchvision_grayscale_and_heads():
    m = build_classifier("resnet18", 7, in_channels=1)
    x = torch.randn(2, 1, 32, 32)
    feats, logits = features_and_logits(m, x)
    assert feats.shape == (2, 512) and logits.shape == (2, 7)
    torch.testing.assert_close(m(x), logits)
    assert get_spec("vit_b_16").input_size == 224


@pytest.mark.parametrize("name,params", [("resnet20", 0.27e6), ("resnet32", 0.46e6)])
def test_cifar_resnets_have_the_papers_sizes_and_embed(name, params):
    m = build_classifier(name, 10, in_channels=3)
    n_params = sum(p.numel() for p in m.parameters())
    assert abs(n_params - params) / params < 0.03  # He et al. 2016, Table 6
    manifest = make_manifest(5, size=32, channels=3)
    res = run_embed(manifest, EmbedParams(model=name, weights="none", **FAST), num_classes=3)
    assert res.embedding.shape == (5, 64) and np.isfinite(res.embedding).all()


def test_small_cnn_and_mlp_on_8_and_28_px():
    for size in (8, 28):
        manifest = make_manifest(6, size=size)
        cnn = run_embed(manifest, EmbedParams(model="small_cnn", weights="none", **FAST), num_classes=3)
        mlp = run_embed(manifest, EmbedParams(model="mlp", weights="none", **FAST), num_classes=3)
        assert cnn.embedding.shape == (6, 128) and mlp.embedding.shape == (6, 256)
        assert np.isfinite(cnn.embedding).all() and np.isfinite(mlp.embedding).all()


def test_registry_weights_file_round_trip(tmp_path):
    torch.manual_seed(1)
    net = build_classifier("small_cnn", 3, in_channels=1)
    path = tmp_path / "cnn.pt"
    torch.save(net.state_dict(), path)
    manifest = make_manifest(4)
    res = run_embed(manifest, EmbedParams(model="small_cnn", weights=str(path), **FAST), num_classes=3)
    with torch.no_grad():
        expected = net.eval().forward_features((_pixels(manifest, "L") - 0.5) / 0.25).numpy()
    np.testing.assert_allclose(res.embedding, expected, rtol=1e-4, atol=1e-5)


def test_torchscript_file(tmp_path):
    torch.manual_seed(0)
    tiny = TinyEmbedder().eval()
    path = tmp_path / "tiny.ts"
    torch.jit.script(tiny).save(str(path))
    manifest = make_manifest(7)
    res = run_embed(manifest, EmbedParams(model_file=str(path), batch_size=3, **FAST), num_classes=3)
    with torch.no_grad():
        expected = tiny(_pixels(manifest, "L"))[0].numpy()
    np.testing.assert_allclose(res.embedding, expected, rtol=1e-5, atol=1e-6)


def test_torch_export_program_converted_to_torchscript_as_the_refusal_says(tmp_path):
    """winnow refuses .pt2 files (tests/reliability/test_untrusted_files.py); the conversion its
    message gives, tracing the exported program's module into TorchScript, embeds the same."""
    torch.manual_seed(0)
    tiny = TinyEmbedder().eval()
    program = torch.export.export(tiny, (torch.randn(4, 1, 8, 8),))
    path = tmp_path / "tiny.ts"
    torch.jit.save(torch.jit.trace(program.module(), (torch.randn(4, 1, 8, 8),)), str(path))
    manifest = make_manifest(7)  # batches of 4 + 3: the traced module takes any batch size
    res = run_embed(manifest, EmbedParams(model_file=str(path), batch_size=4, **FAST), num_classes=3)
    with torch.no_grad():
        expected = tiny(_pixels(manifest, "L"))[0].numpy()
    np.testing.assert_allclose(res.embedding, expected, rtol=1e-5, atol=1e-6)


def test_features_pass_through_without_network():
    manifest = make_manifest(12, errors={3: "unknown label"})
    feats = np.random.default_rng(0).normal(size=(12, 5)).astype(np.float32)
    feats[7] = np.inf
    res = run_embed(manifest, EmbedParams(model="features", folds=2, head_iters=5), num_classes=3, features=feats)
    ok = np.ones(12, bool)
    ok[[3, 7]] = False
    np.testing.assert_array_equal(res.valid, ok)
    np.testing.assert_array_equal(res.embedding[ok], feats[ok])
    assert np.isnan(res.embedding[3]).all() and np.isnan(res.probs[7]).all()
    assert res.errors[3] is None and res.errors[7] == "embedding is NaN/Inf"
    assert res.metrics["model"] == "features" and res.model_state is None
    with pytest.raises(ValueError, match="feature table"):
        run_embed(manifest, EmbedParams(model="features"), num_classes=3)


def test_warmed_up_torchvision_state_reloads_as_weights(tmp_path):
    manifest = make_manifest(8, size=32, channels=3)
    p = EmbedParams(model="resnet18", weights="none", image_size=32, warmup_batch_size=4, **{**FAST, "warmup": 1})
    first = run_embed(manifest, p, num_classes=3)
    assert first.metrics["warmup_epochs"] == 1 and first.model_state is not None
    path = tmp_path / "warm.pt"
    torch.save(first.model_state, path)  # what the adapter stores in the stage folder
    again = run_embed(manifest, EmbedParams(**{**p.__dict__, "weights": str(path), "warmup": 0}), num_classes=3)
    np.testing.assert_allclose(again.embedding, first.embedding, rtol=1e-5, atol=1e-6)
    net = build_classifier("resnet18", 3, in_channels=3, weights=str(path))
    assert net.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 3)
