"""Progress for long loops, without making stages depend on the CLI.

In a terminal, a rich progress bar. Without one (a batch job writing to a log file) and with
INFO logging on (``-v``), a log line every ``LOG_EVERY_S`` seconds and one at the end, so a
20-minute warm-up is not silent. The CLI chooses with :func:`set_enabled` (``-q``, ``--json``
or no terminal switch the bars off) and the log level.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.progress import track as _rich_track

T = TypeVar("T")
LOG_EVERY_S = 30.0
log = logging.getLogger(__name__)
_enabled = False


def set_enabled(enabled: bool) -> None:
    """Turn progress bars on or off for the whole process."""
    global _enabled
    _enabled = enabled


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate over ``items`` with a progress bar, progress log lines, or silently (see the module doc)."""
    if _enabled:
        yield from _rich_track(items, description=description, total=total, transient=True)
    elif log.isEnabledFor(logging.INFO):
        yield from _logged(items, description, total)
    else:
        yield from items


def _logged(items: Iterable[T], description: str, total: int | None) -> Iterator[T]:
    start = last = time.monotonic()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= LOG_EVERY_S:
            last = now
            elapsed = now - start
            if total:
                left = elapsed / done * (total - done)
                log.info("%s: %d/%d (%.0f%%), %.0f s elapsed, ~%.0f s left", description, done, total,
                         100 * done / total, elapsed, left)
            else:
                log.info("%s: %d done, %.0f s elapsed", description, done, elapsed)
    log.info("%s: %d done in %.1f s", description, done, time.monotonic() - start)
