"""The CLI's shape, exit codes, JSON output and config handling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from winnow.pipeline.cli import main, plan_from_config

COMMANDS = ["ingest", "embed", "select", "weight", "export", "train", "evaluate", "report", "inspect", "run", "demo"]


def test_help_lists_every_command_with_an_example():
    runner = CliRunner()
    out = runner.invoke(main, ["--help"]).output
    for name in COMMANDS:
        assert name in out
        sub = runner.invoke(main, [name, "--help"])
        assert sub.exit_code == 0 and "Example:" in sub.output and "winnow " in sub.output


def test_ingest_json_and_cache(tmp_path: Path):
    runner = CliRunner()
    args = ["ingest", "digits", "--run-dir", str(tmp_path), "--trusted-per-class", "3", "--json", "-q"]
    first = runner.invoke(main, args)
    assert first.exit_code == 0, first.output
    payload = json.loads(first.stdout)
    assert payload["cached"] is False and payload["metrics"]["rows"] == 1797
    second = json.loads(runner.invoke(main, args).stdout)
    assert second["cached"] is True


def test_bad_usage_exits_2(tmp_path: Path):
    runner = CliRunner()
    res = runner.invoke(main, ["select", "--run-dir", str(tmp_path), "--method", "kmeans"])
    assert res.exit_code == 2 and "kmeans" in res.output
    res = runner.invoke(main, ["ingest", "--trusted-per-class", "many"])
    assert res.exit_code == 2


def test_bad_input_exits_1_and_writes_nothing(tmp_path: Path):
    runner = CliRunner()
    res = runner.invoke(main, ["ingest", str(tmp_path / "missing.parquet"), "--run-dir", str(tmp_path / "r")])
    assert res.exit_code == 1 and "does not exist" in res.output
    assert not (tmp_path / "r" / "ingest").exists()
    res = runner.invoke(main, ["ingest", "digits", "--run-dir", str(tmp_path / "r"), "--inject-noise", "gauss:0.1"])
    assert res.exit_code == 2 and "--inject-noise" in res.output  # a bad option value: usage error


def test_missing_upstream_names_the_command(tmp_path: Path):
    res = CliRunner().invoke(main, ["select", "--run-dir", str(tmp_path)])
    assert res.exit_code == 1
    assert "winnow ingest --run-dir" in res.output


def test_config_plan_and_errors(tmp_path: Path):
    plan = plan_from_config({"stages": ["ingest", "embed"], "ingest": {"source": "digits", "trusted_per_class": 3},
                             "embed": {"folds": 3}})
    assert [s.name for s, _ in plan] == ["ingest", "embed"]
    assert plan[0][1].trusted_per_class == 3 and plan[1][1].folds == 3
    with pytest.raises(ValueError, match=r"config \[embed\]: unknown option\(s\) \['fold'\]"):
        plan_from_config({"stages": ["embed"], "embed": {"fold": 3}})
    with pytest.raises(ValueError, match="unknown key"):
        plan_from_config({"ingst": {}})
    with pytest.raises(ValueError, match="must be of type int"):
        plan_from_config({"stages": ["embed"], "embed": {"folds": "three"}})
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[ingest\n")
    res = CliRunner().invoke(main, ["run", str(cfg)])
    assert res.exit_code == 1 and "not valid TOML" in res.output


@pytest.mark.parametrize(("toml", "message"), [
    ('seed = "abc"', "seed = 'abc'; use a whole number >= 0"),
    ("beam_option = 3", "beam_option = 3; use a list"),
    ('stages = "ingest"', "stages = 'ingest'; use a list"),
    ("force = 1", "force = 1; use true or false"),
    ("[ingest]\ntrusted_per_class = 2.9", "option 'trusted_per_class' must be of type int, got 2.9"),
])
def test_bad_config_values_are_errors_not_tracebacks(tmp_path: Path, toml: str, message: str):
    """Each of these used to raise a Python exception or be silently reinterpreted (found in review)."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'run_dir = "{tmp_path / "run"}"\n{toml}\n')
    res = CliRunner().invoke(main, ["run", str(cfg)])
    assert res.exit_code == 1 and message in res.output, res.output
    assert not (tmp_path / "run").exists()


def test_a_run_dir_that_cannot_be_created_is_an_error(tmp_path: Path):
    (tmp_path / "afile").write_text("")
    res = CliRunner().invoke(main, ["ingest", "--run-dir", str(tmp_path / "afile" / "sub")])
    assert res.exit_code == 1 and "cannot use" in res.output and "as the run directory" in res.output


@pytest.mark.parametrize("args", [["embed"], ["select", "--budget", "0.2"], ["export"], ["inspect"], ["report"]])
def test_a_missing_run_dir_is_named_and_not_created(tmp_path: Path, args: list[str]):
    """Issue 20: a mistyped --run-dir used to create an empty folder (and then fail on a missing stage)."""
    typo = tmp_path / "runs" / "typo"
    res = CliRunner().invoke(main, [*args, "--run-dir", str(typo)])
    assert res.exit_code == 1, res.output
    assert f"no run directory {typo}" in res.output and "winnow ingest --run-dir" in res.output
    assert not (tmp_path / "runs").exists()


def test_a_failing_ingest_removes_the_run_dir_it_created(tmp_path: Path):
    res = CliRunner().invoke(main, ["ingest", str(tmp_path / "missing.parquet"), "--run-dir", str(tmp_path / "a" / "b")])
    assert res.exit_code == 1 and "does not exist" in res.output
    assert not (tmp_path / "a").exists()
    (tmp_path / "kept").mkdir()  # a folder that was there before stays, even empty
    res = CliRunner().invoke(main, ["ingest", str(tmp_path / "missing.parquet"), "--run-dir", str(tmp_path / "kept")])
    assert res.exit_code == 1 and (tmp_path / "kept").is_dir()


def test_changing_an_image_a_manifest_names_reruns_ingest(tmp_path: Path):
    import numpy as np

    from winnow.stages.common.images import encode_png

    rows = []
    for i in range(12):
        (tmp_path / f"{i}.png").write_bytes(encode_png(np.full((4, 4), i * 20, dtype=np.uint8)))
        rows.append(f"{i}.png,{'ab'[i % 2]},{'trusted' if i < 4 else 'train'}")
    (tmp_path / "m.csv").write_text("uri,label,split\n" + "\n".join(rows) + "\n")
    args = ["ingest", str(tmp_path / "m.csv"), "--run-dir", str(tmp_path / "run"), "--json"]
    first = json.loads(CliRunner().invoke(main, args).stdout)
    assert json.loads(CliRunner().invoke(main, args).stdout)["cached"]
    (tmp_path / "7.png").write_bytes(b"no longer an image")
    again = json.loads(CliRunner().invoke(main, args).stdout)
    assert not again["cached"] and again["metrics"]["errors"] == first["metrics"]["errors"] + 1


def test_every_stage_option_is_settable_in_the_config():
    import dataclasses

    from winnow.pipeline.steps import STEPS

    for name, step in STEPS.items():
        values = {f.name: getattr(step.params_cls(), f.name) for f in dataclasses.fields(step.params_cls)}
        plan = plan_from_config({"stages": [name], name: values})
        assert plan[0][1] == step.params_cls(**values)


@pytest.mark.slow
def test_weight_trainable_full_through_the_cli(tmp_path: Path):
    """Full (backbone + head) training on images starts from embed's resolved, warmed-up backbone;
    a row whose image ingest could not read keeps its error and is not decoded again."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.datasets import load_digits

    from winnow.stages.common.images import encode_png

    digits = load_digits()
    images = [encode_png((img * 16).clip(0, 255).astype(np.uint8)) for img in digits.images[:300]]
    images[7] = b"not an image"
    source = tmp_path / "digits.parquet"
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(300)], "label": digits.target[:300].tolist(),
                             "image": images}), source)
    runner = CliRunner()
    run = ["--run-dir", str(tmp_path / "run"), "-q", "--device", "cpu"]
    for args in (["ingest", str(source), "--trusted-per-class", "5", "--inject-noise", "uniform:0.3"],
                 ["embed", "--warmup", "1", "--folds", "2"],
                 ["weight", "--trainable", "full", "--epochs", "1", "--method", "l2rw"]):
        res = runner.invoke(main, args + run)
        assert res.exit_code == 0, res.output
    weights = pq.read_table(tmp_path / "run" / "weight" / "weights.parquet")
    manifest = pq.read_table(tmp_path / "run" / "ingest" / "manifest.parquet")
    bad = np.asarray(manifest["id"].to_pylist()) == "d7"
    assert "cannot decode image" in manifest["error"].to_pylist()[int(np.flatnonzero(bad)[0])]
    train = (np.asarray(manifest["split"].to_pylist()) == "train") & ~bad
    seen = weights["times_seen"].to_numpy(zero_copy_only=False)
    assert np.all(seen[train] == 1) and weights["times_seen"].null_count == int((~train).sum())


def test_threads_apply_during_the_stage_and_are_restored(tmp_path: Path, monkeypatch):
    import faiss
    import torch

    import winnow.pipeline.cli as cli

    seen = []
    real_run_stage = cli.run_stage

    def spy(*args, **kwargs):
        seen.append((torch.get_num_threads(), faiss.omp_get_max_threads()))
        return real_run_stage(*args, **kwargs)

    monkeypatch.setattr(cli, "run_stage", spy)
    before = (torch.get_num_threads(), faiss.omp_get_max_threads())
    runner = CliRunner()
    base = ["ingest", "digits", "--run-dir", str(tmp_path), "--max-rows", "100", "--trusted-per-class", "2", "-q"]
    assert runner.invoke(main, base + ["--threads", "1"]).exit_code == 0
    assert runner.invoke(main, base + ["--force"], env={"WINNOW_THREADS": "1"}).exit_code == 0
    assert runner.invoke(main, base + ["--force", "--threads", "0"]).exit_code == 0
    assert seen == [(1, 1), (1, 1), (before[0], before[0])], "by default FAISS follows torch's count"
    assert (torch.get_num_threads(), faiss.omp_get_max_threads()) == before
    rec = json.loads((tmp_path / "ingest" / "stage.json").read_text())
    assert rec["threads"] is None and rec["thread_dependence"] is None, "ingest's results do not depend on it"
    res = runner.invoke(main, base + ["--threads", "-1"])
    assert res.exit_code == 2 and "--threads" in res.output
    cfg = tmp_path / "bad.toml"
    cfg.write_text('threads = "two"\nstages = ["ingest"]\n[ingest]\nsource = "digits"\n')
    res = runner.invoke(main, ["run", str(cfg), "-q"])
    assert res.exit_code == 1 and "threads" in res.output


def test_the_example_config_is_valid():
    from winnow.pipeline.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[2] / "examples" / "pipeline.toml")
    assert [s.name for s, _ in plan_from_config(cfg)][:2] == ["ingest", "embed"]
    assert cfg["threads"] == 0
