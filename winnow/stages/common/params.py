"""One definition per option: stage parameters are dataclasses whose fields carry their help.

The pipeline turns every field into a CLI flag (``--field-name``) and a TOML key
(``[stage] field_name = ...``), so an option is declared once, here, beside its help text.

Example::

    @dataclass(frozen=True)
    class SelectParams:
        budget: float = option(0.1, "Fraction (<1) or count (>=1) of each class to keep.")
        method: str = option("facility-location", "Selection algorithm.",
                             choices=("facility-location", "set-cover"))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any


def option(default: Any, help: str, *, choices: Sequence[str] | None = None, cli: bool = True) -> Any:  # noqa: A002
    """A dataclass field with its help text (and allowed values) attached as metadata."""
    meta = {"help": help, "choices": tuple(choices) if choices else None, "cli": cli}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def to_dict(params: Any) -> dict[str, Any]:
    """Parameters as a plain JSON-able dict (for stage.json and cache keys)."""
    return dataclasses.asdict(params)


def validate_choices(params: Any) -> None:
    """Raise ValueError naming the option when a value is not among its declared choices."""
    for f in dataclasses.fields(params):
        choices = f.metadata.get("choices")
        value = getattr(params, f.name)
        if choices and value not in choices:
            raise ValueError(
                f"option --{f.name.replace('_', '-')}: {value!r} is not one of {', '.join(choices)}"
            )
