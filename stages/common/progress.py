"""Progress bars for long loops, without making stages depend on the CLI.

The CLI switches bars off (``-q``, ``--json``, or no terminal) with :func:`set_enabled`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.progress import track as _rich_track

T = TypeVar("T")
_enabled = False


def set_enabled(enabled: bool) -> None:
    """Turn progress bars on or off for the whole process."""
    global _enabled
    _enabled = enabled


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate over ``items``, with a rich progress bar when bars are enabled."""
    if not _enabled:
        yield from items
        return
    yield from _rich_track(items, description=description, total=total, transient=True)
