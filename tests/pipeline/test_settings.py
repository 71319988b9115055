"""The run-level options, declared once (winnow.pipeline.settings.RunSettings): the same options on
every stage command, ``winnow demo`` and ``winnow run``, the same keys in a TOML config and in the
Python API, and the demo's description made from its config."""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import winnow
from winnow.pipeline.beam import BEAM_STAGES
from winnow.pipeline.cli import main
from winnow.pipeline.demo import DEMO_CONFIG, DEMO_DESCRIPTION, DEMO_RUN_DIR, describe
from winnow.pipeline.settings import FIELDS, RUN_KEYS, RunSettings, key


def _options(command: str) -> dict[str, click.Option]:
    return {p.name: p for p in main.commands[command].params if isinstance(p, click.Option) and p.name}


@pytest.mark.parametrize("command", ["ingest", "embed", "select", "weight", "export", "train", "evaluate", "report",
                                     "demo", "run"])
def test_every_command_takes_the_settings_from_the_one_definition(command: str):
    opts = _options(command)
    for name, f in FIELDS.items():
        if f.metadata["beam"] and command not in (*BEAM_STAGES, "run"):
            assert name not in opts
            continue
        assert opts[name].help is not None and opts[name].help.endswith(f.metadata["help"]), (command, name)
        if command == "run":  # an override: unset unless given, so that the config's value stands
            assert opts[name].default in (None, False) or opts[name].multiple
        elif name == "run_dir":
            assert opts[name].default == (Path(DEMO_RUN_DIR) if command == "demo" else f.default)
        elif not opts[name].multiple:
            assert opts[name].default == f.default, (command, name)
    assert opts["threads"].envvar == "WINNOW_THREADS"
    assert "--beam-option" in (opts["beam_options"].opts if "beam_options" in opts else ["--beam-option"])


def test_toml_keys_and_their_messages():
    assert RUN_KEYS == {key(f) for f in FIELDS.values()} | {"stages"}
    assert "beam_option" in RUN_KEYS and "beam_options" not in RUN_KEYS  # the TOML key kept from before
    got = RunSettings.from_values({"run_dir": "r", "seed": 3, "beam_option": "runner=DirectRunner", "stages": []})
    assert got == RunSettings(run_dir=Path("r"), seed=3, beam_options=("runner=DirectRunner",))
    for toml, message in [({"device": "gpu"}, 'device = \'gpu\'; use "auto", "cpu" or "cuda"'),
                          ({"threads": -1}, "threads = -1; use a whole number >= 0 (0 = the libraries' default)"),
                          ({"executor": "spark"}, 'use "local" or "beam"'),
                          ({"run_dir": 3}, "run_dir = 3; use a string")]:
        with pytest.raises(ValueError, match="^config: ") as exc:
            RunSettings.from_values(toml)
        assert message in str(exc.value)
    with pytest.raises(ValueError, match="--seed must be >= 0"):
        RunSettings(seed=-1)


def test_run_flags_override_the_config(tmp_path: Path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'run_dir = "{tmp_path / "a"}"\nseed = 3\nthreads = 1\nstages = ["ingest"]\n'
                   "[ingest]\ntrusted_per_class = 3\n")
    res = CliRunner().invoke(main, ["run", str(cfg), "--seed", "5", "--run-dir", str(tmp_path / "b"), "-q"],
                             env={"WINNOW_THREADS": None})
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "a").exists()
    assert json.loads((tmp_path / "b" / "ingest" / "stage.json").read_text())["seed"] == 5
    res = CliRunner().invoke(main, ["run", str(cfg), "--seed", "-1"])
    assert res.exit_code == 2 and "-1 is not in the range x>=0" in res.output


def test_the_demo_is_described_from_its_config():
    assert DEMO_DESCRIPTION == "digits, 40% uniform label noise, 10 trusted images per class"
    other = {**DEMO_CONFIG, "ingest": {**DEMO_CONFIG["ingest"], "inject_noise": "pair:0.2", "trusted_per_class": 5}}
    assert describe(other) == "digits, 20% pair label noise, 5 trusted images per class"
    assert DEMO_DESCRIPTION in " ".join(CliRunner().invoke(main, ["demo", "--help"]).output.split())
    assert DEMO_DESCRIPTION in " ".join((winnow.demo.__doc__ or "").split())
    assert inspect.signature(winnow.demo).parameters["run_dir"].default == DEMO_RUN_DIR


def test_the_api_takes_the_same_settings():
    sig = inspect.signature(winnow.embed)
    for name, f in FIELDS.items():
        if name == "run_dir":
            continue
        assert sig.parameters[name].default == (None if f.metadata["envvar"] else f.default), name
    assert dataclasses.fields(RunSettings)[0].name == "run_dir"
    with pytest.raises(ValueError, match="winnow.embed: device = 'gpu'"):
        winnow.embed(Path("nowhere"), device="gpu")  # refused before the run directory is made
    assert not Path("nowhere").exists()
