"""Files from other people: a model file never runs code while winnow loads it, and a manifest
names no file outside its data root unless the user allows it.

The malicious model files are real attacks on the formats torch can read: each payload makes a
marker folder when it runs, and a control calls torch's own loader to show that it does run there.
"""

from __future__ import annotations

import io
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

from tests.conftest import png_bytes
from tests.embed.tiny import TinyEmbedder
from winnow.models.backbones import load_model_file
from winnow.pipeline.cli import main


class _Payload:
    """Unpickling this makes the folder ``path``: proof that the loader ran code from the file."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
        return os.mkdir, (self.path,)


def _payload(path: Path) -> bytes:
    return pickle.dumps(_Payload(path), protocol=2)


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
    model = TinyEmbedder().eval()
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
    torch.save(TinyEmbedder(), zipped)  # torch.save of a whole module: a zip with data.pkl, no code/
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


# ---------------------------------------------------------------------------------------------
# Paths a manifest or an image folder names stay under the data root.


def _layout(tmp_path: Path) -> tuple[Path, Path]:
    """``data/`` (a manifest's folder: 2 classes x 3 images, and ``img/link.png``, a symbolic link
    to ``outside/x.png``) and ``outside/`` (``x.png``, a real image)."""
    data, outside = tmp_path / "data", tmp_path / "outside"
    (data / "img").mkdir(parents=True)
    outside.mkdir()
    for i in range(6):
        (data / "img" / f"{i}.png").write_bytes(png_bytes(30 * i))
    (outside / "x.png").write_bytes(png_bytes(200))
    (data / "img" / "link.png").symlink_to(outside / "x.png")
    return data, outside


ESCAPES = {  # id -> uri as written in the manifest
    "relative": "../outside/x.png",
    "relative-missing": "../outside/missing.png",
    "absolute": "{outside}/x.png",
    "absolute-missing": "{outside}/missing.png",
    "symlink": "img/link.png",
    "deep": "img/../../../../../../../../../../etc/passwd",
}


def _manifest(data: Path, outside: Path, kind: str = "csv") -> Path:
    """Six good rows, then one row per :data:`ESCAPES` entry, and (Parquet) a Hugging Face image
    struct whose ``path`` escapes: every row must stay in the manifest."""
    ids = [f"good{i}" for i in range(6)] + list(ESCAPES)
    uris = [f"img/{i}.png" for i in range(6)] + [u.format(outside=outside) for u in ESCAPES.values()]
    labels = ["cat", "dog"] * 3 + ["cat"] * len(ESCAPES)
    if kind == "csv":
        path = data / "m.csv"
        path.write_text("id,uri,label\n" + "".join(f"{i},{u},{y}\n" for i, u, y in zip(ids, uris, labels)))
        return path
    import pyarrow as pa
    import pyarrow.parquet as pq

    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    images = [None] * len(ids) + [{"bytes": None, "path": "../outside/x.png"}]
    path = data / "m.parquet"
    pq.write_table(pa.table({"id": ids + ["hf-path"], "uri": pa.array(uris + [None], pa.string()),
                             "image": pa.array(images, struct), "label": labels + ["dog"]}), path)
    return path


def _ingest(source: Path, **options: object):
    from winnow.stages.ingest import IngestParams, ingest

    return ingest(IngestParams(source=str(source), trusted_per_class=1, **options), seed=0).manifest


def _errors(manifest) -> dict[str, str | None]:
    return dict(zip(manifest["id"].to_pylist(), manifest["error"].to_pylist()))


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_manifest_paths_outside_the_data_root_are_row_errors_and_every_row_is_kept(kind: str, tmp_path: Path):
    data, outside = _layout(tmp_path)
    source = _manifest(data, outside, kind)
    m = _ingest(source)
    escaped = [*ESCAPES, "hf-path"] if kind == "parquet" else list(ESCAPES)
    assert m["id"].to_pylist() == [f"good{i}" for i in range(6)] + escaped, "no row is dropped"
    errors, uris = _errors(m), dict(zip(m["id"].to_pylist(), m["uri"].to_pylist()))
    assert all(errors[f"good{i}"] is None for i in range(6))
    root = os.path.realpath(data)
    for rid in escaped:
        assert errors[rid].startswith(f"row {rid!r}: ") and f"outside the data root {root}" in errors[rid]
        assert "--data-root DIR" in errors[rid] and "--allow-any-path" in errors[rid]
        assert uris[rid] is None, "the manifest keeps no path outside the root for later stages to open"
    if kind == "parquet":  # a struct's path is read only without bytes, and then contained alike
        assert "image path '../outside/x.png'" in errors["hf-path"]


def test_the_error_is_the_same_whether_the_file_outside_exists_or_not(tmp_path: Path):
    data, outside = _layout(tmp_path)
    source = _manifest(data, outside)
    (outside / "missing.png").write_bytes(png_bytes(9))  # now every file outside exists
    present = _ingest(source)
    for f in outside.iterdir():
        f.unlink()  # now none does (img/link.png dangles)
    absent = _ingest(source)
    assert _errors(present) == _errors(absent)
    assert present["uri"].to_pylist() == absent["uri"].to_pylist()


def test_allow_any_path_and_data_root_let_the_paths_through(tmp_path: Path):
    data, outside = _layout(tmp_path)
    source = _manifest(data, outside)
    x = os.path.realpath(outside / "x.png")
    for options in ({"allow_any_path": True}, {"data_root": str(tmp_path)}):
        m = _ingest(source, **options)
        errors, uris = _errors(m), dict(zip(m["id"].to_pylist(), m["uri"].to_pylist()))
        for rid in ("relative", "absolute", "symlink"):
            assert errors[rid] is None and uris[rid] == x, options
        assert "not found" in errors["relative-missing"] and "not found" in errors["absolute-missing"]
    # /etc is outside tmp_path: still refused with --data-root, read (and not an image) with --allow-any-path
    assert "outside the data root" in _errors(_ingest(source, data_root=str(tmp_path)))["deep"]
    assert "outside the data root" not in (_errors(_ingest(source, allow_any_path=True))["deep"] or "")


def test_a_data_root_that_is_not_a_folder_is_refused(tmp_path: Path):
    from winnow.stages.ingest import IngestError

    data, outside = _layout(tmp_path)
    with pytest.raises(IngestError, match=r"--data-root .*nowhere: not a folder"):
        _ingest(_manifest(data, outside), data_root=str(tmp_path / "nowhere"))


def _photos(tmp_path: Path) -> tuple[Path, Path]:
    photos, outside = tmp_path / "photos", tmp_path / "outside"
    for c, name in enumerate(["cat", "dog"]):
        (photos / name).mkdir(parents=True)
        for i in range(3):
            (photos / name / f"{i}.png").write_bytes(png_bytes(50 * c + 10 * i))
    outside.mkdir(exist_ok=True)
    (outside / "x.png").write_bytes(png_bytes(200))
    return photos, outside


def test_image_folder_symlink_to_a_file_outside_is_a_row_error(tmp_path: Path):
    photos, outside = _photos(tmp_path)
    (photos / "dog" / "evil.png").symlink_to(outside / "x.png")
    (photos / "dog" / "dangling.png").symlink_to(outside / "gone.png")
    m = _ingest(photos)
    errors = _errors(m)
    assert m.num_rows == 8 and sum(e is None for e in errors.values()) == 6
    for rid in ("dog/evil.png", "dog/dangling.png"):
        assert errors[rid].startswith(f"row {rid!r}: ") and "outside the data root" in errors[rid]
    # the same text, but for the name, whether the link's target exists or not
    assert errors["dog/evil.png"].replace("evil", "X") == errors["dog/dangling.png"].replace("dangling", "X")
    allowed = _errors(_ingest(photos, allow_any_path=True))
    assert allowed["dog/evil.png"] is None and "dog/dangling.png" not in allowed  # as before: dangling links are no files


def test_image_folder_class_folder_linked_outside_is_refused_naming_it(tmp_path: Path):
    from winnow.stages.ingest import IngestError

    photos, outside = _photos(tmp_path)
    (photos / "eel").symlink_to(outside, target_is_directory=True)
    with pytest.raises(IngestError, match=r"'eel' is a symbolic link that resolves outside the data root.*--allow-any-path"):
        _ingest(photos)
    assert _ingest(photos, allow_any_path=True)["id"].to_pylist()[-1] == "eel/x.png"


def test_the_cache_fingerprint_never_stats_a_file_outside_the_root(tmp_path: Path, monkeypatch):
    from winnow.pipeline.runner import source_digest

    data, outside = _layout(tmp_path)
    source = str(_manifest(data, outside))
    photos, _ = _photos(tmp_path)
    (photos / "dog" / "evil.png").symlink_to(outside / "x.png")
    stat, seen = os.stat, []

    def recording_stat(path, *args, **kwargs):
        seen.append(os.fspath(path))
        return stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", recording_stat)
    before = source_digest(source, str(photos))
    assert seen and not [p for p in seen if p.startswith(str(outside))]
    monkeypatch.setattr(os, "stat", stat)
    (outside / "x.png").write_bytes(png_bytes(100, size=9))  # another size and time
    assert source_digest(source, str(photos)) == before
    assert source_digest(source, str(photos), allow_any_path=True) != before
    (data / "img" / "0.png").write_bytes(png_bytes(1, size=9))
    assert source_digest(source, str(photos)) != before, "an image under the root still counts"


def test_beam_ingest_of_a_manifest_with_escapes_equals_local(tmp_path: Path):
    pytest.importorskip("apache_beam", reason="the beam extra is not installed")
    from winnow.pipeline.beam.ingest import beam_validator
    from winnow.pipeline.beam.options import pipeline_options
    from winnow.stages.ingest import IngestParams, ingest

    data, outside = _layout(tmp_path)
    source = _manifest(data, outside, "parquet")
    for options in ({}, {"allow_any_path": True}):
        params = IngestParams(source=str(source), trusted_per_class=1, **options)
        local = ingest(params, seed=0)
        beam = ingest(params, seed=0, validate=beam_validator(
            params, pipeline_options(("direct_running_mode=in_memory", "direct_num_workers=1")), tmp_path))
        assert beam.manifest.equals(local.manifest), options


def test_cli_and_config_take_data_root_and_allow_any_path(tmp_path: Path):
    from winnow.pipeline.config import build_params
    from winnow.stages.ingest import IngestParams

    data, outside = _layout(tmp_path)
    source = _manifest(data, outside)
    run = tmp_path / "run"
    res = CliRunner().invoke(main, ["ingest", str(source), "--run-dir", str(run), "--trusted-per-class", "1", "-q"])
    assert res.exit_code == 0, res.output
    import pyarrow.parquet as pq

    m = pq.read_table(run / "ingest" / "manifest.parquet")
    assert m.num_rows == 6 + len(ESCAPES) and "outside the data root" in _errors(m)["absolute"]
    res = CliRunner().invoke(main, ["ingest", str(source), "--run-dir", str(run), "--trusted-per-class", "1", "-q",
                                    "--data-root", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert _errors(pq.read_table(run / "ingest" / "manifest.parquet"))["absolute"] is None
    params = build_params(IngestParams, {"source": str(source), "data_root": str(tmp_path), "allow_any_path": True},
                          where="[ingest]")
    assert params.data_root == str(tmp_path) and params.allow_any_path is True


def test_an_eps_image_is_never_handed_to_ghostscript(tmp_path: Path, monkeypatch):
    """PIL renders EPS (PostScript, a language) with the Ghostscript program; winnow never asks it to."""
    from PIL import EpsImagePlugin, Image

    from winnow.stages.common.images import ImageError, open_image

    marker = tmp_path / "ghostscript-ran"

    def fake_ghostscript(*args: object, **kwargs: object) -> None:
        marker.mkdir()
        raise OSError("not really Ghostscript")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", fake_ghostscript)
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", "gs", raising=False)
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n%%EndComments\nshowpage\n%%EOF\n"
    (tmp_path / "looks.png").write_bytes(eps)
    for image, uri in ((eps, None), (None, str(tmp_path / "looks.png"))):
        with pytest.raises(ImageError, match="cannot decode image"):
            open_image(image, uri)
    assert not marker.exists()
    with pytest.raises(OSError):  # control: PIL left to itself renders it
        Image.open(io.BytesIO(eps)).load()
    assert marker.exists()
