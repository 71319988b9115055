"""Batch decoding names the row it cannot use."""

from __future__ import annotations

import numpy as np
import pytest

from winnow.stages.common.images import ImageError, decode_batch, encode_png


def test_decode_batch_names_the_bad_row():
    good = encode_png(np.zeros((4, 4), dtype=np.uint8))
    out = decode_batch([good, good], [None, None], ids=["a", "b"])
    assert out.shape == (2, 1, 4, 4) and out.dtype == np.float32
    with pytest.raises(ImageError, match="row 'b': cannot decode image"):
        decode_batch([good, b"junk"], [None, None], ids=["a", "b"])
    with pytest.raises(ValueError, match=r"row 'b': image shape \(5, 5, 1\)"):
        decode_batch([good, encode_png(np.zeros((5, 5), dtype=np.uint8))], [None, None], ids=["a", "b"])
