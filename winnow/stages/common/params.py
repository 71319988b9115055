"""One definition per option: stage parameters are dataclasses whose fields carry their help.

The pipeline turns every field into a CLI flag (``--field-name``) and a TOML key
(``[stage] field_name = ...``), so an option is declared once, here, beside its help text and
its constraint (allowed values, or a numeric range): ``--help`` shows the range, and the CLI,
a TOML config and a direct ``Params(...)`` call all check it with :func:`check_options`, so the
three give the same message.

Example::

    @dataclass(frozen=True)
    class SelectParams:
        k: int = option(10, "Neighbours per point.", min=1)
        epsilon: float = option(0.0, "Stochastic greedy epsilon.", min=0, max=1, max_open=True)
        method: str = option("facility-location", "Selection algorithm.",
                             choices=("facility-location", "set-cover"))
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any


def option(default: Any, help: str, *, choices: Sequence[str] | None = None, cli: bool = True,  # noqa: A002
           min: float | None = None, max: float | None = None,  # noqa: A002
           min_open: bool = False, max_open: bool = False, finite: bool = False,
           also: float | None = None, note: str = "") -> Any:
    """A dataclass field with its help text and constraint attached as metadata.

    ``min``/``max`` (``min_open``/``max_open`` exclude the bound) bound a number; ``finite``
    also refuses infinities (NaN is never in a range); ``also`` is one value accepted outside
    the range (a sentinel such as ``-1`` = auto); ``note`` is added to the message in brackets.
    ``None`` is always accepted for an ``Optional`` field: it means "unset".
    """
    meta = {"help": help, "choices": tuple(choices) if choices else None, "cli": cli, "min": min, "max": max,
            "min_open": min_open, "max_open": max_open, "finite": finite, "also": also, "note": note}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def to_dict(params: Any) -> dict[str, Any]:
    """Parameters as a plain JSON-able dict (for stage.json and cache keys)."""
    return dataclasses.asdict(params)


def flag(name: str) -> str:
    """The CLI flag of a field name: ``knn_k`` -> ``--knn-k``."""
    return "--" + name.replace("_", "-")


def has_range(f: dataclasses.Field) -> bool:
    """Whether the field declares a numeric range."""
    return f.metadata.get("min") is not None or f.metadata.get("max") is not None


def describe_range(f: dataclasses.Field) -> str:
    """The field's range in words: ``>= 1``, ``> 0``, ``in [0, 1)``; with ``finite``, ``a finite number >= 0``."""
    m = f.metadata
    lo, hi = m.get("min"), m.get("max")
    if lo is not None and hi is not None:
        rule = f"in {'(' if m['min_open'] else '['}{lo}, {hi}{')' if m['max_open'] else ']'}"
    elif lo is not None:
        rule = f"{'>' if m['min_open'] else '>='} {lo}"
    else:
        rule = f"{'<' if m['max_open'] else '<='} {hi}"
    if m.get("finite"):
        rule = f"a finite number {rule}"
    if m.get("also") is not None:
        rule += f", or {m['also']}"
    return rule


def range_error(f: dataclasses.Field, value: Any) -> str | None:
    """The message for ``value`` outside the field's range (naming the option), or None if it is in it."""
    m = f.metadata
    if value is None or not has_range(f) or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if m.get("also") is not None and value == m["also"]:
        return None
    lo, hi = m.get("min"), m.get("max")
    ok = not math.isnan(value) and not (m.get("finite") and math.isinf(value))
    if ok and lo is not None:
        ok = value > lo if m["min_open"] else value >= lo
    if ok and hi is not None:
        ok = value < hi if m["max_open"] else value <= hi
    if ok:
        return None
    note = f" ({m['note']})" if m.get("note") else ""
    return f"option {flag(f.name)} must be {describe_range(f)}{note}, got {value!r}"


def choice_error(f: dataclasses.Field, value: Any) -> str | None:
    """The message for ``value`` not among the field's declared choices, or None."""
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        return f"option {flag(f.name)}: {value!r} is not one of {', '.join(choices)}"
    return None


def check_options(params: Any) -> None:
    """Raise ValueError naming the option when a value breaks its declared choices or range."""
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        message = choice_error(f, value) or range_error(f, value)
        if message:
            raise ValueError(message)


def validate_choices(params: Any) -> None:
    """:func:`check_options` (the former name, kept for the stages' callers)."""
    check_options(params)
