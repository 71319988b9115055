"""What a resumable stage needs from storage, as a protocol: the stage never sees paths.

The pipeline implements these atomically on disk (see ``winnow.pipeline.rundir``); tests can pass
an in-memory dict.
"""

from __future__ import annotations

from typing import Any, Protocol


class Checkpoints(Protocol):
    """Key -> state store. ``save`` must be atomic: after a crash a key holds old or new state."""

    def load(self, key: str) -> Any | None:
        """Return the state saved under ``key`` or None. Tensors load with weights_only=True."""

    def save(self, key: str, state: Any) -> None:
        """Atomically save ``state`` (a dict of tensors/arrays/numbers) under ``key``."""


class MemoryCheckpoints:
    """In-memory :class:`Checkpoints` for tests and for runs that need no resume."""

    def __init__(self) -> None:
        self.states: dict[str, Any] = {}

    def load(self, key: str) -> Any | None:
        return self.states.get(key)

    def save(self, key: str, state: Any) -> None:
        self.states[key] = state
