"""review: a person's decisions on flagged rows, recorded append-only and applied to the manifest."""

from winnow.stages.review.apply import Applied, apply_decisions
from winnow.stages.review.corrections import (
    ACTIONS,
    CorrectionsError,
    Decision,
    append_decision,
    in_force,
    read_corrections,
    seen_ids,
)
from winnow.stages.review.order import ORDERS, expected_gain, review_order

__all__ = ["ACTIONS", "ORDERS", "Applied", "CorrectionsError", "Decision", "append_decision", "apply_decisions",
           "expected_gain", "in_force", "read_corrections", "review_order", "seen_ids"]
