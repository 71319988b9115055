"""Backbones from outside winnow: torchvision classifiers by name, TorchScript / torch.export files.

Nothing is ever downloaded: torchvision weights come from a local file (a ``state_dict`` saved
with ``torch.save``) and are read with ``torch.load(weights_only=True)``.

Every torchvision classifier is wrapped as :class:`TorchvisionClassifier`: its last
``nn.Linear`` becomes ``head`` and everything before it ``body``, so that
``forward_features`` gives the penultimate-layer features for any architecture
(ResNet ``fc``, ViT ``heads.head``, VGG/MobileNet/EfficientNet ``classifier[-1]``, ...).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

HOW_TO_GET_WEIGHTS = (
    "winnow never downloads weights. On a machine with network access run e.g. "
    "`python -c \"import torch, torchvision; torch.save(torchvision.models.get_model('{name}', "
    "weights='DEFAULT').state_dict(), '{name}.pt')\"`, copy the file here and pass --weights {name}.pt; "
    "or pass --weights none with --warmup E to train from random initialisation"
)


class TorchvisionClassifier(nn.Module):
    """A torchvision classifier split into ``body`` (up to the penultimate layer) and ``head``."""

    def __init__(self, body: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.body = body
        self.head = head
        self.embedding_dim = head.in_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, d) penultimate features."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, num_classes) logits."""
        return self.head(self.body(x))


def torchvision_names() -> list[str]:
    """Names of torchvision's image-classification models (``resnet18``, ``vit_b_16``, ...)."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def load_state_dict_file(path: str) -> dict[str, torch.Tensor]:
    """Read a ``state_dict`` saved with ``torch.save`` (also unwraps ``{"state_dict": ...}``/``{"model": ...}``).

    A ``module.`` prefix (DataParallel/DDP) is removed.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--weights {path}: file not found")
    try:
        state: Any = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"--weights {path}: not a state_dict readable with torch.load(weights_only=True) ({exc})"
        ) from exc
    for key in ("state_dict", "model", "model_state"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"--weights {path}: expected a dict of tensors (a model's state_dict)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _last_linear(model: nn.Module) -> tuple[nn.Module, str, nn.Linear]:
    """(parent module, attribute name, layer) of the last ``nn.Linear`` registered in ``model``."""
    found = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            found = name, module
    if found is None:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier layer; use --model-file instead")
    name, layer = found
    parent_name, _, attr = name.rpartition(".")
    return model.get_submodule(parent_name) if parent_name else model, attr, layer


def _adapt_first_conv(model: nn.Module, in_channels: int) -> None:
    """Give the first Conv2d ``in_channels`` inputs; pretrained filters are averaged over RGB."""
    for name, conv in model.named_modules():
        if isinstance(conv, nn.Conv2d):
            new = nn.Conv2d(
                in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                conv.dilation, conv.groups, conv.bias is not None,
            )
            with torch.no_grad():
                new.weight.copy_(conv.weight.mean(1, keepdim=True).expand_as(new.weight))
                if conv.bias is not None:
                    new.bias.copy_(conv.bias)
            parent_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)
            return
    raise ValueError(f"{type(model).__name__} has no Conv2d to adapt to {in_channels} input channels")


def torchvision_classifier(
    name: str, num_classes: int, *, in_channels: int = 3, weights: str | None = None
) -> TorchvisionClassifier:
    """Build torchvision model ``name`` with a ``num_classes`` head, from local weights or random init.

    Parameters
    ----------
    name : str
        A name from :func:`torchvision_names`.
    num_classes : int
        Logits of the returned head. If the weights file has another number of classes (e.g. 1000
        for ImageNet), its body is kept and a fresh head is initialised.
    in_channels : int
        3, or another count to replace the first convolution (pretrained filters are averaged).
    weights : str or None
        Path to a ``state_dict`` file of the torchvision model (or of a TorchvisionClassifier
        saved by winnow); None or "none" for random initialisation.
    """
    if name not in torchvision_names():
        raise ValueError(f"--model {name!r} is not a torchvision classification model (see torchvision.models.list_models())")
    state = None if weights in (None, "", "none") else load_state_dict_file(weights)
    if state is not None and any(k.startswith("body.") for k in state):  # saved by winnow
        k = state["head.weight"].shape[0]
        model = torchvision.models.get_model(name, weights=None, num_classes=k)
        parent, attr, layer = _last_linear(model)
        setattr(parent, attr, nn.Identity())
        wrapped = TorchvisionClassifier(model, nn.Linear(layer.in_features, k))
        if in_channels != 3:
            _adapt_first_conv(wrapped.body, in_channels)
        _load_strict(wrapped, state, weights)
        if k != num_classes:
            wrapped.head = nn.Linear(layer.in_features, num_classes)
        return wrapped
    k = num_classes
    if state is not None:
        # Infer the checkpoint's class count from its last linear layer.
        probe = torchvision.models.get_model(name, weights=None)
        last = [n for n, m in probe.named_modules() if isinstance(m, nn.Linear)][-1]
        if f"{last}.weight" not in state:
            raise ValueError(f"--weights {weights}: no {last}.weight; is it a {name} state_dict?")
        k = state[f"{last}.weight"].shape[0]
    model = torchvision.models.get_model(name, weights=None, num_classes=k)
    if state is not None:
        _load_strict(model, state, weights)
    parent, attr, layer = _last_linear(model)
    head = layer if k == num_classes else nn.Linear(layer.in_features, num_classes)
    setattr(parent, attr, nn.Identity())
    if in_channels != 3:
        _adapt_first_conv(model, in_channels)
    return TorchvisionClassifier(model, head)


def _load_strict(model: nn.Module, state: dict[str, torch.Tensor], path: str | None) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"--weights {path}: does not match the model ({str(exc).splitlines()[0]} ...)") from exc


def load_model_file(path: str) -> nn.Module:
    """Load a TorchScript (``torch.jit.save``) or ``torch.export.save`` file, on CPU.

    The model's output is either the embedding ``(B, d)``, or a tuple ``(embedding, logits)``.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--model-file {path}: file not found")
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated upstream but still what many ship
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(p), map_location="cpu")
    except Exception as jit_exc:
        try:
            program = torch.export.load(str(p))
        except Exception as exp_exc:
            raise ValueError(
                f"--model-file {path}: neither a TorchScript file ({jit_exc.__class__.__name__}) "
                f"nor a torch.export file ({exp_exc.__class__.__name__})"
            ) from exp_exc
        module = program.module()
        module.is_exported_program = True  # fixed batch size unless exported with a dynamic dim
        return module
