"""Backbones from outside winnow: torchvision classifiers by name, TorchScript files.

Nothing is ever downloaded: torchvision weights come from a local file (a ``state_dict`` saved
with ``torch.save``) and are read with ``torch.load(weights_only=True)``. No file a user gives is
unpickled, so none can run Python code while it loads (see :func:`load_model_file`).

Every torchvision classifier is wrapped as :class:`TorchvisionClassifier`: its last
``nn.Linear`` becomes ``head`` and everything before it ``body``, so that
``forward_features`` gives the penultimate-layer features for any architecture
(ResNet ``fc``, ViT ``heads.head``, VGG/MobileNet/EfficientNet ``classifier[-1]``, ...).
"""

from __future__ import annotations

import warnings
import zipfile
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
    """Load a TorchScript file (``torch.jit.save``) on CPU; refuse every other format.

    The model's output is either the embedding ``(B, d)``, or a tuple ``(embedding, logits)``.

    TorchScript is the one model format torch reads without running Python: its archive goes
    through torch's C++ unpickler, which rebuilds tensors and TorchScript classes and resolves any
    other global as a TorchScript type from the archive itself (``posix.system`` is an unknown type
    and the load fails), and its code is TorchScript, compiled by torch and limited to torch's
    registered operators. PyTorch still asks to treat TorchScript from an unknown source like a
    program from one (SECURITY.md): it has no Python, but it is code.

    torch.export archives (``.pt2``) are refused, although torch can read them: as of torch 2.14
    ``torch.export.load`` unpickles weights, constants and example inputs with
    ``weights_only=False`` (or retries with it), evaluates symbolic shapes from the file with
    ``sympy.sympify`` (``eval``), ``exec``s its guard code when the module is built, and loads
    AOTInductor shared libraries, so a file can run any code while it loads or on its first
    batch; checking its pickles first would close only the first of these.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--model-file {path}: file not found")
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated upstream but still what many ship
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(p), map_location="cpu")
    except Exception as exc:
        raise ValueError(_refusal(path, _model_file_kind(p), exc)) from exc


TO_TORCHSCRIPT = (
    "torch.jit.save(torch.jit.script(model), 'model.ts') (or torch.jit.trace(model, example_input)) where you "
    "trust the model, then pass --model-file model.ts"
)


def _model_file_kind(path: Path) -> str:
    """'torch.export', 'pickle' (``torch.save`` of a whole module) or 'other', from the file's
    container alone: a zip's member names or the pickle magic bytes; nothing is unpickled."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n.split("/", 1)[-1] for n in archive.namelist()]  # without the archive's root folder
    except (zipfile.BadZipFile, OSError):
        with open(path, "rb") as f:
            head = f.read(2)
        return "pickle" if len(head) == 2 and head[0] == 0x80 and head[1] <= 5 else "other"
    if "archive_format" in names:
        return "torch.export"
    if "data.pkl" in names and not any(n.startswith("code/") for n in names):
        return "pickle"
    return "other"


def _refusal(path: str, kind: str, exc: Exception) -> str:
    """Why ``--model-file path`` was not loaded, and what to give instead."""
    if kind == "torch.export":
        return (
            f"--model-file {path}: a torch.export (.pt2) archive; winnow does not load these, because "
            "torch.export.load can run code stored in the file (pickled objects, Python expressions, compiled "
            "libraries). Convert it to TorchScript where you trust the file: torch.jit.save(torch.jit.trace("
            f"torch.export.load('{path}').module(), example_input), 'model.ts'), then pass --model-file model.ts"
        )
    if kind == "pickle":
        return (
            f"--model-file {path}: a pickled model (torch.save of a whole module), which can run any code when "
            f"unpickled, so winnow does not load it. Save it as TorchScript: {TO_TORCHSCRIPT}; or pass its "
            "state_dict with --model NAME --weights FILE"
        )
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"--model-file {path}: not a TorchScript file that torch can load ({reason}). winnow loads model files "
        f"only as TorchScript, the one model format torch reads without running Python code: {TO_TORCHSCRIPT}"
    )
