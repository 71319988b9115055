"""Model registry: a name -> constructor, default input transform, and (features, logits) access.

Names: ``small_cnn``, ``mlp``, ``resnet20``, ``resnet32`` (winnow's small networks) and every
torchvision classification model (``resnet18``, ``resnet50``, ``vit_b_16``, ...). Every model
built here has ``forward_features(x) -> (B, d)``, ``head`` (last ``nn.Linear``) and
``forward(x) -> logits``; :func:`features_and_logits` also handles loaded TorchScript
files, whose output is the embedding or ``(embedding, logits)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from winnow.models.backbones import (
    HOW_TO_GET_WEIGHTS,
    load_state_dict_file,
    torchvision_classifier,
    torchvision_names,
)
from winnow.models.cifar_resnet import resnet20, resnet32
from winnow.models.small import MLP, SmallCNN

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

# (num_classes, in_channels, input_size) -> module
Builder = Callable[[int, int, int | None], nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """What the embed stage needs to know about a model besides its weights.

    Attributes
    ----------
    name : str
    build : Builder
        ``build(num_classes, in_channels, input_size)``, randomly initialised.
    input_size : int or None
        Square side the images are resized (shorter side) and centre-cropped to; None keeps
        the images' own size.
    channels : int or None
        3 (images converted to RGB), 1 (grayscale), or None (the images' own: 1 or 3).
    mean, std : tuple of float
        Per-channel normalisation of pixel values in [0, 1] (one value = all channels).
    pretrained_expected : bool
        True for architectures whose random initialisation is useless without warmup
        (torchvision's); the embed stage then requires ``--weights`` or ``--warmup``.
    """

    name: str
    build: Builder
    input_size: int | None
    channels: int | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pretrained_expected: bool = False


def _mlp(num_classes: int, in_channels: int, input_size: int | None) -> nn.Module:
    if input_size is None:
        raise ValueError("model 'mlp' needs a fixed input size: pass --image-size (e.g. 8 or 28)")
    return MLP(num_classes, in_features=in_channels * input_size * input_size)


_SMALL: dict[str, ModelSpec] = {
    "small_cnn": ModelSpec(
        "small_cnn", lambda k, c, s: SmallCNN(k, in_channels=c), None, None, (0.5,), (0.25,)
    ),
    "mlp": ModelSpec("mlp", _mlp, None, None, (0.5,), (0.25,)),
    "resnet20": ModelSpec("resnet20", lambda k, c, s: resnet20(k, in_channels=c), None, 3, CIFAR_MEAN, CIFAR_STD),
    "resnet32": ModelSpec("resnet32", lambda k, c, s: resnet32(k, in_channels=c), None, 3, CIFAR_MEAN, CIFAR_STD),
}

# torchvision models whose input size is fixed by the architecture (positional embeddings).
_FIXED_SIZE = {"inception_v3": 299}


def model_names() -> list[str]:
    """All names :func:`get_spec` accepts."""
    return sorted(_SMALL) + torchvision_names()


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name``; ValueError listing the choices when unknown."""
    if name in _SMALL:
        return _SMALL[name]
    if name in torchvision_names():
        return ModelSpec(
            name,
            lambda k, c, s: torchvision_classifier(name, k, in_channels=c),
            _FIXED_SIZE.get(name, 224),
            3,
            IMAGENET_MEAN,
            IMAGENET_STD,
            pretrained_expected=True,
        )
    raise ValueError(
        f"--model {name!r} is unknown; use one of {', '.join(sorted(_SMALL))}, any torchvision "
        "classification model (resnet18, resnet50, vit_b_16, ...), 'features', or --model-file PATH"
    )


def build_model(
    name: str, num_classes: int, *, in_channels: int, input_size: int | None = None, weights: str | None = None
) -> nn.Module:
    """Build model ``name`` with ``num_classes`` logits, random init or from a local state_dict file.

    Parameters
    ----------
    name : str
        A name from :func:`model_names`.
    num_classes : int
        Number of logits of the head.
    in_channels : int
        Input channels (1 grayscale, 3 RGB).
    input_size : int or None
        Image side (needed by ``mlp`` only).
    weights : str or None
        Path to a ``state_dict`` (read with ``weights_only=True``); None/"none" = random init.
        For torchvision models, a checkpoint with another class count (ImageNet's 1000) keeps
        its body and gets a fresh ``num_classes`` head.
    """
    spec = get_spec(name)
    if spec.pretrained_expected:
        return torchvision_classifier(name, num_classes, in_channels=in_channels, weights=weights)
    model = spec.build(num_classes, in_channels, input_size)
    if weights not in (None, "", "none"):
        state = load_state_dict_file(weights)
        if state.get("head.weight") is not None and state["head.weight"].shape[0] != num_classes:
            state = {k: v for k, v in state.items() if not k.startswith("head.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or [k for k in missing if not k.startswith("head.")]:
            raise ValueError(
                f"--weights {weights}: does not match model {name!r} "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
    return model


def build_classifier(
    name: str, num_classes: int, *, in_channels: int, weights: str | None = None, input_size: int | None = None
) -> nn.Module:
    """A classifier ``x (B, C, H, W) -> logits (B, num_classes)`` for training (weight stage).

    Same models and weights rules as :func:`build_model`; the module also has
    ``forward_features`` and ``head``.
    """
    return build_model(name, num_classes, in_channels=in_channels, input_size=input_size, weights=weights)


def requires_weights_message(name: str) -> str:
    """The error text when a pretrained-style model gets neither --weights nor --warmup."""
    return f"--model {name} needs --weights PATH. " + HOW_TO_GET_WEIGHTS.format(name=name)


def features_and_logits(
    model: nn.Module, x: torch.Tensor, *, logits: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Penultimate features ``(B, d)`` and logits ``(B, C)`` (None when unavailable or not asked).

    Registry models use ``forward_features``/``head``; a loaded TorchScript model returns the
    embedding, or a tuple whose first item is the embedding and second the logits. Any other
    module is run whole and its output taken as the embedding.
    """
    if hasattr(model, "forward_features") and isinstance(getattr(model, "head", None), nn.Module):
        feats = model.forward_features(x)
        return feats, (model.head(feats) if logits else None)
    out = model(x)
    if isinstance(out, (tuple, list)):
        return out[0], (out[1] if logits and len(out) > 1 else None)
    return out, None
