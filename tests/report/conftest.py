"""Fixtures of the report tests."""

from __future__ import annotations

import pyarrow as pa
import pytest

from tests.report.report_data import make_curated


@pytest.fixture
def curated() -> pa.Table:
    return make_curated()
