"""Mini-batch boundaries shared by the training loops (weight rounds, the reference trainer)."""

from __future__ import annotations


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """``(start, end)`` of each mini-batch over ``n`` shuffled rows; a one-row remainder joins
    the last batch, because BatchNorm (and Deep Bilevel's validation split) needs two rows."""
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < 2:
        starts.pop()
    return list(zip(starts, [*starts[1:], n]))
