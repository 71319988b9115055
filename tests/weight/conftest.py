"""Run the weight tests single-threaded: their tensors are tiny, and on a shared 2-core machine two
OpenMP threads spin against other processes (100x slower). The previous setting is restored."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
