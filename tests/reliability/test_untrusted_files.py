"""Files from other people: a model file never runs code while winnow loads it, and a manifest
names no file outside its data root unless the user allows it.

The malicious model files are real attacks on the formats torch can read: each payload makes a
marker folder when it runs, and a control calls torch's own loader to show that it does run there.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from models.backbones import load_model_file
from pipeline.cli import main
from tests.conftest import png_bytes


class _Payload:
    """Unpickling this makes the folder ``path``: proof that the loader ran code from the file."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
        return os.mkdir, (self.path,)


def _payload(path: Path) -> bytes:
    return pickle.dumps(_Payload(path), protocol=2)


class _Tiny(nn.Module):
    """(B, 1, 8, 8) images -> (embedding (B, 4), logits (B, 3)), as ``--model-file`` networks give."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.conv(x)).mean((2, 3))
        return h, self.fc(h)


def _rewrite(src: Path, dst: Path, changes: dict[str, bytes]) -> Path:
    """A copy of the zip archive ``src`` with the members named in ``changes`` replaced or added
    (names relative to the archive's root folder, as torch's readers see them)."""
    with zipfile.ZipFile(src) as zin:
        root = zin.namelist()[0].split("/")[0]
        full = {f"{root}/{name}": data for name, data in changes.items()}
        with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
            for name in zin.namelist():
                zout.writestr(name, full.pop(name, None) or zin.read(name))
            for name, data in full.items():
                zout.writestr(name, data)
    return dst


def _read_member(archive: Path, name: str) -> bytes:
    with zipfile.ZipFile(archive) as z:
        return z.read(next(n for n in z.namelist() if n.split("/", 1)[-1] == name))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Clean torch.export archives (static and dynamic batch) and a TorchScript file of one model."""
    folder = tmp_path_factory.mktemp("models")
    model = _Tiny().eval()
    x = torch.randn(2, 1, 8, 8)
    out = {"static": folder / "static.pt2", "dynamic": folder / "dynamic.pt2", "ts": folder / "tiny.ts"}
    torch.export.save(torch.export.export(model, (x,)), str(out["static"]))
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(model, (x,), dynamic_shapes={"x": {0: batch}}), str(out["dynamic"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(model), str(out["ts"]))
    return out


def _malicious_pt2(kind: str, exported: dict[str, Path], tmp_path: Path, marker: Path) -> Path:
    """A torch.export archive whose payload runs where torch 2.14 unpickles or evaluates it."""
    dst = tmp_path / f"{kind}.pt2"
    if kind == "legacy-weights":  # read back with weights_only=False after weights_only=True fails
        return _rewrite(exported["static"], dst, {"data/weights/model.pt": _payload(marker)})
    if kind == "pickled-weight":  # a weight marked use_pickle: torch.load(weights_only=False)
        config = json.loads(_read_member(exported["static"], "data/weights/model_weights_config.json"))
        entry = config["config"]["fc.bias"]
        entry["use_pickle"] = True
        return _rewrite(exported["static"], dst, {
            "data/weights/model_weights_config.json": json.dumps(config).encode(),
            f"data/weights/{entry['path_name']}": _payload(marker),
        })
    if kind == "example-inputs":
        return _rewrite(exported["static"], dst, {"data/sample_inputs/model.pt": _payload(marker)})
    program = json.loads(_read_member(exported["dynamic"], "models/model.json"))
    if kind == "guards-code":  # exec'd into the module's input guard, run on the first batch
        program["guards_code"] = [f"__import__('os').mkdir({str(marker)!r}) or True"]
        text = json.dumps(program)
    else:  # "sympy-expression": a symbolic size, sympify'd (eval) while loading
        text = json.dumps(program)
        text = re.sub(r'"expr_str": "', f'"expr_str": "__import__(\'os\').mkdir({str(marker)!r}) or ', text, count=1)
    return _rewrite(exported["dynamic"], dst, {"models/model.json": text.encode()})


PT2_ATTACKS = ["legacy-weights", "pickled-weight", "example-inputs", "guards-code", "sympy-expression"]


@pytest.mark.parametrize("kind", PT2_ATTACKS)
def test_torch_export_archives_are_refused_without_running_their_payload(kind: str, exported, tmp_path: Path):
    marker = tmp_path / "payload-ran"
    bad = _malicious_pt2(kind, exported, tmp_path, marker)
    with pytest.raises(ValueError) as info:
        load_model_file(str(bad))
    assert not marker.exists(), f"{kind}: the payload ran inside load_model_file"
    message = str(info.value)
    assert str(bad) in message and "torch.export" in message and "TorchScript" in message

    # Control: torch's own loader does run it (while loading, building the module, or on a batch).
    try:
        torch.export.load(str(bad)).module()(torch.randn(2, 1, 8, 8))
    except Exception:  # noqa: BLE001 -- most of these archives fail after the payload has run
        pass
    assert marker.exists(), f"{kind}: the test archive is no attack on torch {torch.__version__}"


def test_a_clean_torch_export_archive_is_refused_too_with_the_conversion_to_torchscript(exported):
    with pytest.raises(ValueError, match=r"torch\.jit\.trace\(torch\.export\.load") as info:
        load_model_file(str(exported["static"]))
    assert str(exported["static"]) in str(info.value)


def test_pickled_modules_are_refused_without_running_their_payload(tmp_path: Path):
    marker = tmp_path / "payload-ran"
    legacy = tmp_path / "model.pth"
    legacy.write_bytes(_payload(marker))  # torch.save's pre-zip format starts with a pickle
    zipped = tmp_path / "zipped.pt"
    torch.save(_Tiny(), zipped)  # torch.save of a whole module: a zip with data.pkl, no code/
    zipped = _rewrite(zipped, tmp_path / "zipped-bad.pt", {"data.pkl": _payload(marker)})
    for path in (legacy, zipped):
        with pytest.raises(ValueError, match="pickled model") as info:
            load_model_file(str(path))
        assert str(path) in str(info.value) and "TorchScript" in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("member", ["data.pkl", "constants.pkl"])
def test_torchscript_archive_with_a_python_global_fails_in_the_cpp_unpickler(member: str, exported, tmp_path: Path):
    """TorchScript's unpickler resolves globals as TorchScript types, never as Python callables."""
    marker = tmp_path / "payload-ran"
    bad = _rewrite(exported["ts"], tmp_path / "bad.ts", {member: _payload(marker)})
    with pytest.raises(ValueError, match="not a TorchScript file that torch can load") as info:
        load_model_file(str(bad))
    assert str(bad) in str(info.value)
    assert not marker.exists()


def test_a_real_torchscript_file_still_loads(exported):
    net = load_model_file(str(exported["ts"]))
    x = torch.randn(5, 1, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        reference = torch.jit.load(str(exported["ts"]))
    for got, want in zip(net(x), reference(x)):
        torch.testing.assert_close(got, want)


def _tiny_run(tmp_path: Path) -> Path:
    """A run directory whose ingest holds 2 classes x 3 tiny images (1 trusted each)."""
    photos = tmp_path / "photos"
    for c, name in enumerate(["a", "b"]):
        (photos / name).mkdir(parents=True)
        for i in range(3):
            (photos / name / f"{i}.png").write_bytes(png_bytes(100 * c + 10 * i))
    run = tmp_path / "run"
    res = CliRunner().invoke(main, ["ingest", str(photos), "--run-dir", str(run), "--trusted-per-class", "1", "-q"])
    assert res.exit_code == 0, res.output
    return run


def test_cli_embed_refuses_a_malicious_model_file_with_exit_code_1(exported, tmp_path: Path):
    run = _tiny_run(tmp_path)
    for kind in ("legacy-weights", "sympy-expression"):
        marker = tmp_path / f"{kind}-ran"
        bad = _malicious_pt2(kind, exported, tmp_path, marker)
        res = CliRunner().invoke(main, ["embed", "--run-dir", str(run), "--model-file", str(bad), "--warmup", "0"])
        assert res.exit_code == 1, res.output
        assert not marker.exists()
        text = " ".join(res.output.split())
        assert str(bad) in text and "TorchScript" in text
        assert not (run / "embed" / "features.parquet").exists()
    res = CliRunner().invoke(main, ["embed", "--run-dir", str(run), "--model-file", str(exported["ts"]), "--warmup", "0",
                                    "--folds", "2", "-q"])
    assert res.exit_code == 0, res.output
    assert (run / "embed" / "features.parquet").exists()
