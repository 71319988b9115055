"""The run-level options (run directory, seed, device, threads, force, executor), declared once.

:class:`RunSettings` is their one definition: each field carries its help text, default and
constraint, and becomes an option of every stage command and of ``winnow demo``, an override of
``winnow run`` (:func:`click_options`), a top-level key of a TOML config
(:meth:`RunSettings.from_values`) and a keyword argument of the Python API
(``winnow.select(..., seed=0, threads=1)``). A stage's own options are its params dataclass.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from winnow.stages.common.params import check_options, describe_range, flag, option, range_error


def setting(default: Any, help: str, *, key: str | None = None, cli_flag: str | None = None,  # noqa: A002
            envvar: str | None = None, beam: bool = False, metavar: str | None = None, **constraint: Any) -> Any:
    """A :func:`~winnow.stages.common.params.option` field plus what a run-level option also has:
    its TOML ``key`` and CLI flag when they are not the field's name (kept from before the
    dataclass), the ``envvar`` that sets it, and ``beam`` for the executor's options (only the
    data-parallel stages take them)."""
    meta = {**option(default, help, **constraint).metadata, "key": key, "flag": cli_flag, "envvar": envvar,
            "beam": beam, "metavar": metavar}
    return dataclasses.field(default=default, metadata=meta)


THREADS_HELP = ("CPU threads for torch and FAISS in this process; 0 = torch's default (one per core). "
                "On a busy or shared machine 1 can be several times faster. Part of the cache key of the "
                "stages whose CPU results depend on it (stage.json's thread_dependence says how).")


@dataclass(frozen=True)
class RunSettings:
    """How a run is carried out, as against what each stage computes (its params): where the run
    directory is, the seed, the device and CPU threads, whether to ignore the cache, and which
    executor runs the data-parallel stages."""

    run_dir: Path = setting(Path("runs/default"), "Run directory: one folder per stage.")
    seed: int = setting(0, "Seed for every random choice.", min=0)
    device: str = setting("auto", "Where torch and FAISS run: CUDA when available with auto.",
                          choices=("auto", "cpu", "cuda"))
    threads: int = setting(0, THREADS_HELP, min=0, note="0 = the libraries' default", envvar="WINNOW_THREADS")
    force: bool = setting(False, "Re-run even if the cached result is up to date.")
    executor: str = setting("local", "Run in this process (local) or as an Apache Beam pipeline (beam).",
                            choices=("local", "beam"), beam=True)
    beam_options: tuple[str, ...] = setting(
        (), "Beam pipeline option (repeatable), e.g. runner=FlinkRunner; default: Beam's local FnApiRunner "
            "(no Prism download), 2 worker processes.",
        key="beam_option", cli_flag="--beam-option", metavar="KEY=VALUE", beam=True)

    def __post_init__(self) -> None:
        check_options(self)

    @classmethod
    def from_values(cls, values: Mapping[str, Any], *, where: str = "config", toml: bool = True) -> RunSettings:
        """The settings from a TOML config's top-level keys (``toml``; other keys are ignored) or
        from keyword arguments (field names), each checked: a wrong one is a ValueError
        ``"<where>: seed = -1; use a whole number >= 0"``. Missing ones keep their defaults."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = key(f) if toml else f.name
            if name not in values:
                continue
            value = values[name]
            if f.name == "beam_options" and isinstance(value, str):
                value = [value]
            if not _valid(f, value):
                raise ValueError(f"{where}: {name} = {values[name]!r}; use {want(f)}")
            out[f.name] = Path(value) if f.name == "run_dir" else tuple(value) if isinstance(value, list) else value
        return cls(**out)

    @classmethod
    def pop_from(cls, values: dict[str, Any]) -> RunSettings:
        """The settings among a click callback's ``values`` (removed from them; the rest are the
        stage's own options), the ones the command does not offer at their defaults."""
        given: dict[str, Any] = {}
        for name in [f.name for f in dataclasses.fields(cls) if f.name in values]:
            value = values.pop(name)
            given[name] = tuple(value) if isinstance(value, list | tuple) else value
        return cls(**given)


FIELDS = {f.name: f for f in dataclasses.fields(RunSettings)}


def key(f: dataclasses.Field) -> str:
    """The field's TOML key."""
    return f.metadata["key"] or f.name


# A TOML config's top-level keys: the settings, and the list of stages to run.
RUN_KEYS = frozenset({key(f) for f in FIELDS.values()} | {"stages"})


def _valid(f: dataclasses.Field, value: Any) -> bool:
    if f.type in ("bool", bool):
        return isinstance(value, bool)
    if f.type in ("int", int):
        return isinstance(value, int) and not isinstance(value, bool) and range_error(f, value) is None
    if f.type.startswith("tuple"):
        return isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
    choices = f.metadata["choices"]
    return isinstance(value, str) and (not choices or value in choices)


def want(f: dataclasses.Field) -> str:
    """What the field takes, in words, for a message: ``a whole number >= 0``, ``"local" or "beam"``."""
    m = f.metadata
    if f.type == "bool":
        return "true or false"
    if f.type == "int":
        return f"a whole number {describe_range(f)}" + (f" ({m['note']})" if m["note"] else "")
    if f.type.startswith("tuple"):
        return f'a list of "{m["metavar"]}" strings'
    if m["choices"]:
        quoted = [f'"{c}"' for c in m["choices"]]
        return f"{', '.join(quoted[:-1])} or {quoted[-1]}"
    return "a string"


def env_default(name: str) -> Any:
    """The field's value when a caller leaves it unset (the API's ``threads=None``): its environment
    variable, as the CLI reads it, else its default."""
    f = FIELDS[name]
    text = os.environ.get(f.metadata["envvar"] or "")
    if text is None:
        return f.default
    if not text.isdigit():
        raise ValueError(f"{f.metadata['envvar']}={text!r}: expected {want(f)}")
    return int(text)


def click_options(*, beam: bool = False, overrides: bool = False, run_dir: Path | None = None) -> list[click.Option]:
    """The fields as click options. ``beam``: with the executor's options (the data-parallel
    stages); ``run_dir``: another default run directory (the demo's); ``overrides``: for ``winnow
    run``, each unset by default so that the config's value stands unless the flag is given."""
    opts = []
    for f in FIELDS.values():
        m = f.metadata
        if m["beam"] and not beam:
            continue
        decls = [m["flag"] or flag(f.name), f.name]
        help_text = f"Override the config's {key(f)}. {m['help']}" if overrides else m["help"]
        default = None if overrides else run_dir if f.name == "run_dir" and run_dir is not None else f.default
        common: dict[str, Any] = {"help": help_text, "envvar": m["envvar"], "show_envvar": bool(m["envvar"])}
        if f.type == "bool":
            opts.append(click.Option(decls, is_flag=True, default=False, **common))
        elif f.type.startswith("tuple"):
            opts.append(click.Option(decls, multiple=True, metavar=m["metavar"], **common))
        else:
            typ = click.Path(file_okay=False, path_type=Path) if f.name == "run_dir" else _click_type(f)
            opts.append(click.Option(decls, type=typ, default=default, show_default=not overrides, **common))
    return opts


def _click_type(f: dataclasses.Field) -> Any:
    """click's own choice or range type (its message, ``-1 is not in the range x>=0``, is the one
    scripts and tests know), else the python type."""
    m = f.metadata
    if m["choices"]:
        return click.Choice(m["choices"])
    if f.type == "int":
        return click.IntRange(min=m["min"], max=m["max"], min_open=m["min_open"], max_open=m["max_open"])
    return str


def override(settings: RunSettings, values: dict[str, Any]) -> RunSettings:
    """``settings`` with the options given on ``winnow run``'s command line (popped from
    ``values``): an unset override (None, no ``--beam-option``) keeps the config's value, and
    ``--force`` forces whatever the config says."""
    given = {n: values.pop(n) for n in FIELDS if n in values}
    changed: dict[str, Any] = {n: (tuple(v) if n == "beam_options" else v) for n, v in given.items()
                               if v is not None and v is not False and v != ()}
    return dataclasses.replace(settings, **changed)
