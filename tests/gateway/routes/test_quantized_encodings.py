"""The quantised ``encoding_format``s of ``POST /v1/embeddings`` (``gateway/quantize.py`` through
``gateway/routes/openai.py``) over a real server against the in-test backend
(``fake_backend.FakeBackend``): JSON integer arrays equal to the float answer quantised
independently here, ``dimensions`` cut (and re-normalised) first, and a refusal for an unknown one.
"""

from __future__ import annotations

import numpy as np
import pytest

from http_checks import error_of, f32

TEXTS = ["alpha", "beta", "gamma"]


def by_hand(x: np.ndarray, precision: str) -> np.ndarray:
    """The documented rules, computed here in float64 and plain numpy."""
    q = np.clip(np.round(x.astype(np.float64) * 127), -128, 127)
    bits = np.packbits(x > 0, axis=-1).astype(np.int64)
    return {"int8": q, "uint8": q + 128, "ubinary": bits, "binary": bits - 128}[precision]


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
@pytest.mark.parametrize("dimensions", [None, 5])
def test_integer_encodings_quantise_the_float_answer(server, backend, precision, dimensions):
    extra = {} if dimensions is None else {"dimensions": dimensions}
    floats = f32([d["embedding"] for d in server.post("/v1/embeddings", {"model": "mini", "input": TEXTS, **extra})
                  .json()["data"]])  # fmt: skip
    r = server.post("/v1/embeddings", {"model": "mini", "input": TEXTS, "encoding_format": precision, **extra})
    assert r.status == 200, r.body
    rows = [d["embedding"] for d in r.json()["data"]]
    assert all(isinstance(v, int) for row in rows for v in row)
    width = floats.shape[1] if precision.endswith("int8") else -(-floats.shape[1] // 8)
    assert np.array(rows).shape == (len(TEXTS), width)
    np.testing.assert_array_equal(np.array(rows, dtype=np.int64), by_hand(floats, precision))


def test_an_unknown_encoding_is_refused(server, backend):
    message = error_of(server.post("/v1/embeddings", {"input": "a", "encoding_format": "int4"}), 422, "invalid_field")
    assert "encoding_format" in message
    assert backend.calls == []
