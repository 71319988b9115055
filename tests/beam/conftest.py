"""The Beam executor's tests need the ``beam`` extra (``pip install 'winnow-curate[beam]'``):
without apache-beam the whole folder is reported as skipped, not failed."""

import pytest

pytest.importorskip("apache_beam", reason="the beam extra is not installed: pip install 'winnow-curate[beam]'")
