"""Progress for long loops, without making stages depend on the CLI.

In a terminal, a rich progress bar. Without one (a batch job writing to a log file) and with
INFO logging on (``-v``), a log line every ``LOG_EVERY_S`` seconds and one at the end, so a
20-minute warm-up is not silent. Without a terminal and without ``-v`` (``plain_lines``), the
same line every ``LOG_EVERY_S`` seconds printed on stderr, and the closing line only for a loop
that printed one before: a short stage stays quiet, a 4-minute one says how far it is. The CLI
chooses with :func:`set_enabled` (``-q`` switches everything off) and the log level.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from rich.progress import track as _rich_track

T = TypeVar("T")
LOG_EVERY_S = 30.0
log = logging.getLogger(__name__)
_enabled = False
_plain_lines = False
_last_plain = 0.0  # when the last plain line was printed: one clock for every loop of the process


def set_enabled(enabled: bool, *, plain_lines: bool = False) -> None:
    """Turn progress bars on or off for the whole process; ``plain_lines``: without bars and
    below INFO logging, print a throttled line on stderr instead of nothing."""
    global _enabled, _plain_lines, _last_plain
    _enabled, _plain_lines, _last_plain = enabled, plain_lines, time.monotonic()


def _print_line(message: str, *args: object) -> None:
    global _last_plain
    _last_plain = time.monotonic()
    print("winnow: " + message % args, file=sys.stderr, flush=True)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate over ``items`` with a progress bar, progress log lines, or silently (see the module doc)."""
    if _enabled:
        yield from _rich_track(items, description=description, total=total, transient=True)
    elif log.isEnabledFor(logging.INFO):
        yield from _logged(items, description, total)
    elif _plain_lines:
        # One clock across loops: a stage of many short loops (one per epoch) still prints every
        # LOG_EVERY_S seconds, and a loop that printed nothing does not close with a line.
        yield from _logged(items, description, total, emit=_print_line, shared_clock=True)
    else:
        yield from items


def _logged(items: Iterable[T], description: str, total: int | None,
            emit: Callable[..., None] = log.info, shared_clock: bool = False) -> Iterator[T]:
    start = last = time.monotonic()
    done = printed = 0
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - (_last_plain if shared_clock else last) >= LOG_EVERY_S:
            last = now
            elapsed = now - start
            if total:
                left = elapsed / done * (total - done)
                emit("%s: %d/%d (%.0f%%), %.0f s elapsed, ~%.0f s left", description, done, total,
                     100 * done / total, elapsed, left)
            else:
                emit("%s: %d done, %.0f s elapsed", description, done, elapsed)
            printed += 1
    if not shared_clock or printed:
        emit("%s: %d done in %.1f s", description, done, time.monotonic() - start)
