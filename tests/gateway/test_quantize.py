"""``gateway/quantize.py``: the four integer encodings against an independent numpy computation
(bit by bit for the binary ones, value by value for the int8 ones) and against
sentence-transformers' ``quantize_embeddings`` for ``binary`` and ``ubinary``; and that a vector's
integers never depend on the other vectors quantised with it.
"""

from __future__ import annotations

import numpy as np
import pytest

from gateway import quantize

SEED = 20261130


def unit_rows(n: int, d: int, seed: int = SEED) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def reference_quantize_embeddings():  # type: ignore[no-untyped-def]
    try:
        from sentence_transformers.util.quantization import quantize_embeddings
    except ImportError:  # sentence-transformers before 5 kept it here
        from sentence_transformers.quantization import quantize_embeddings
    return quantize_embeddings


def bits_of(x: np.ndarray) -> list[list[int]]:
    """Each row's sign bits, most significant first, padded with zeros to whole bytes (by hand)."""
    out = []
    for row in x:
        bits = [1 if v > 0 else 0 for v in row] + [0] * (-len(row) % 8)
        out.append([int("".join(map(str, bits[i:i + 8])), 2) for i in range(0, len(bits), 8)])
    return out


@pytest.mark.parametrize("d", [1, 7, 8, 9, 32, 384, 385])
def test_ubinary_and_binary_pack_sign_bits_by_hand(d: int) -> None:
    x = unit_rows(5, d)
    x[0, 0] = 0.0  # zero is not positive: bit 0
    expected = np.array(bits_of(x), dtype=np.int64)
    ub = quantize.quantize(x, "ubinary")
    b = quantize.quantize(x, "binary")
    assert ub.dtype == np.uint8 and b.dtype == np.int8
    assert ub.shape == b.shape == (5, quantize.width(d, "ubinary")) == (5, -(-d // 8))
    np.testing.assert_array_equal(ub.astype(np.int64), expected)
    np.testing.assert_array_equal(b.astype(np.int64), expected - 128)


@pytest.mark.parametrize("precision", ["binary", "ubinary"])
@pytest.mark.parametrize("d", [8, 13, 384])
def test_binary_matches_sentence_transformers(precision: quantize.Quantization, d: int) -> None:
    x = unit_rows(9, d)
    reference = reference_quantize_embeddings()(x, precision=precision)
    ours = quantize.quantize(x, precision)
    assert ours.dtype == reference.dtype
    np.testing.assert_array_equal(ours, reference)


def test_int8_and_uint8_use_the_fixed_scale() -> None:
    x = np.array([[1.0, -1.0, 0.0, 0.5, -0.5, 0.25, 1 / 254, -3 / 254, 2.0, -2.0]], dtype=np.float32)
    # 127 per unit, half to even (0.5 -> 63.5 -> 64; 1/254 -> 0.5 -> 0; -3/254 -> -1.5 -> -2), clipped
    expected = [127, -127, 0, 64, -64, 32, 0, -2, 127, -128]
    np.testing.assert_array_equal(quantize.quantize(x, "int8"), np.array([expected], dtype=np.int8))
    np.testing.assert_array_equal(quantize.quantize(x, "uint8"), np.array([expected], dtype=np.int64) + 128)
    assert quantize.quantize(x, "uint8").dtype == np.uint8


@pytest.mark.parametrize("d", [5, 384])
def test_int8_against_numpy_in_float64(d: int) -> None:
    x = unit_rows(16, d)
    expected = np.clip(np.round(x.astype(np.float64) * 127), -128, 127)
    np.testing.assert_array_equal(quantize.quantize(x, "int8").astype(np.float64), expected)
    np.testing.assert_array_equal(quantize.quantize(x, "uint8").astype(np.float64), expected + 128)
    assert quantize.width(d, "int8") == d


@pytest.mark.parametrize("precision", quantize.QUANTIZATIONS)
def test_a_vector_does_not_depend_on_the_others(precision: quantize.Quantization) -> None:
    x = unit_rows(12, 48)
    together = quantize.quantize(x, precision)
    for i in range(len(x)):
        np.testing.assert_array_equal(quantize.quantize(x[i:i + 1], precision), together[i:i + 1])
    spread = np.concatenate([x[:3] * 0.01, x[3:]])  # a calibrated scale would move every row
    np.testing.assert_array_equal(quantize.quantize(spread, precision)[3:], together[3:])
