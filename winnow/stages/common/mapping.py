"""How a stage runs its independent units of work (embed's warm-ups and cross-fit heads, export's
kNN searches, select's classes on Beam): a :data:`Map` takes ``fn``, the items and the large
inputs, and returns ``[fn(item, **data) for item in items]``.

The stage cores call :func:`map_in_process` unless told otherwise; the Beam executor passes
:func:`winnow.pipeline.beam.workers.map_on_workers`, which runs each call on a worker with
``data`` shipped as files. So ``fn`` is a top-level function, or a ``functools.partial`` of one
with small arguments, and ``data`` holds the arrays and tables.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Map = Callable[[Callable[..., Any], list[Any], Mapping[str, Any]], list[Any]]


def map_in_process(fn: Callable[..., Any], items: list[Any], data: Mapping[str, Any]) -> list[Any]:
    """The default :data:`Map`: one item after the other, in this process."""
    return [fn(item, **data) for item in items]
