"""One torch thread for these tiny models: on a shared 2-core machine, OpenMP threads that wait on
each other make a 0.2 s run take 10 s. Results do not depend on it (the tests compare runs made
under the same setting)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
