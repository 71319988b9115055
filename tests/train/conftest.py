"""The train tests run on one torch thread: results do not depend on it (tests compare runs made
under the same setting), speed on a shared 2-core machine does (see tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """Every test here runs on one torch thread (see tests/conftest.py)."""
