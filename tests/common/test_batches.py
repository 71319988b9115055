"""Mini-batch boundaries: every row once, no batch of one unless there is only one row."""

from __future__ import annotations

from winnow.stages.common.batches import batch_bounds


def test_a_one_row_remainder_joins_the_last_batch():
    assert batch_bounds(40, 20) == [(0, 20), (20, 40)]
    assert batch_bounds(41, 20) == [(0, 20), (20, 41)]
    assert batch_bounds(42, 20) == [(0, 20), (20, 40), (40, 42)]
    assert batch_bounds(1, 20) == [(0, 1)] and batch_bounds(0, 20) == []
