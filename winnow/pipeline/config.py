"""Parameters from dataclasses: CLI options and TOML config keys come from one definition."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path
from typing import Any

import click

from winnow.stages.common.params import check_options, range_error

_TYPES: dict[Any, type] = {int: int, float: float, str: str, bool: bool, "int": int, "float": float, "str": str, "bool": bool}


def field_type(f: dataclasses.Field) -> type:
    """The python type of a params field (annotations may be strings such as ``'float | None'``)."""
    typ = f.type
    if isinstance(typ, str):
        typ = typ.split("|")[0].strip()
    return _TYPES.get(typ, str)


class _Ranged:
    """A click number range whose failure message is the params' own (:func:`range_error`), so the
    CLI, a TOML config and a direct ``Params(...)`` call say the same; ``--help`` shows the range."""

    field: dataclasses.Field

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        rv = self.base.convert(value, param, ctx)  # type: ignore[attr-defined]
        message = range_error(self.field, rv)
        if message:
            self.fail(message, param, ctx)  # type: ignore[attr-defined]
        return rv

    def _describe_range(self) -> str:
        text = click.FloatRange._describe_range(self)  # type: ignore[arg-type]
        also = self.field.metadata.get("also")
        return text if also is None else f"{text} or {also}"


class _IntRanged(_Ranged, click.IntRange):
    base = click.INT


class _FloatRanged(_Ranged, click.FloatRange):
    base = click.FLOAT


def _click_type(f: dataclasses.Field) -> Any:
    m = f.metadata
    if m.get("choices"):
        return click.Choice(m["choices"])
    typ = field_type(f)
    if typ in (int, float) and (m.get("min") is not None or m.get("max") is not None):
        ranged = (_IntRanged if typ is int else _FloatRanged)(min=m["min"], max=m["max"], min_open=m["min_open"],
                                                            max_open=m["max_open"])
        ranged.field = f
        return ranged
    return typ


def click_options(params_cls: type) -> list[click.Option]:
    """One click option per field of ``params_cls`` (except fields marked ``cli=False``)."""
    opts = []
    for f in dataclasses.fields(params_cls):
        if not f.metadata.get("cli", True):
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc,operator]
        help_text = f.metadata.get("help", "")
        if field_type(f) is bool:
            opts.append(click.Option([f"{flag}/--no-{flag[2:]}", f.name], default=default, show_default=True, help=help_text))
        else:
            opts.append(click.Option([flag, f.name], type=_click_type(f), default=default, show_default=True, help=help_text))
    return opts


def build_params(params_cls: type, values: dict[str, Any], *, where: str) -> Any:
    """Instantiate ``params_cls`` from ``values``; unknown keys and bad choices raise ValueError
    naming ``where`` (the command or the TOML table) and the valid keys."""
    names = {f.name: f for f in dataclasses.fields(params_cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"{where}: unknown option(s) {unknown}; valid: {', '.join(sorted(names))}")
    coerced: dict[str, Any] = {}
    for key, value in values.items():
        target = field_type(names[key])
        if value is None:
            coerced[key] = None
            continue
        if target is str and not isinstance(value, str):  # str() would turn ["digits"] into "['digits']"
            example = value[0] if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str) else "..."
            raise ValueError(f"{where}: option {key!r} must be of type str (one quoted string), got {value!r}; "
                             f"write {key} = {json.dumps(example)}")
        if (target in (int, float) and isinstance(value, bool) or target is bool and not isinstance(value, bool)
                or target is int and isinstance(value, float) and not value.is_integer()):  # 2.9 is not 2
            raise ValueError(f"{where}: option {key!r} must be of type {target.__name__}, got {value!r}")
        try:
            coerced[key] = target(value) if target in (int, float, str) else value
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: option {key!r} must be of type {target.__name__}, got {value!r}") from exc
    try:
        params = params_cls(**coerced)
        check_options(params)
        if callable(getattr(params, "validate", None)):  # range checks a stage defers to run time (embed, weight)
            params.validate()
    except ValueError as exc:  # a value out of range: the message names the option, add where it was set
        raise ValueError(f"{where}: {exc}") from exc
    return params


def load_config(path: Path) -> dict[str, Any]:
    """Read a pipeline TOML file: top-level run keys plus one table per stage."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as exc:
        raise ValueError(f"config file {path} does not exist; give the path of a TOML file "
                         "(examples/pipeline.toml shows one)") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config file {path} is not valid TOML: {exc}; fix the syntax there") from exc
