"""``gateway/encoding.py``: float32 vectors print as float32 (shortest round-trip repr), base64 is
raw little-endian float32, regrouping keeps order, and ``dimensions`` cuts and re-normalises."""

from __future__ import annotations

import base64
import json

import msgspec
import numpy as np
import pytest

from gateway import encoding


def random_finite_f32(n: int, seed: int) -> np.ndarray:
    """Uniform over float32 *bit patterns* (every exponent, subnormals too), finite only."""
    bits = np.random.default_rng(seed).integers(0, 2**32, size=n, dtype=np.uint64).astype(np.uint32)
    values = bits.view(np.float32)
    return values[np.isfinite(values)]


def significant_digits(token: str) -> int:
    mantissa = token.lstrip("-").lower().split("e")[0].replace(".", "").strip("0")
    return max(1, len(mantissa))


def test_matrix_json_round_trips_every_float32_with_the_shortest_digits():
    values = random_finite_f32(20_000, seed=7)
    values = values[: len(values) // 100 * 100].reshape(-1, 100)
    text = bytes(encoding.matrix_json(values)).decode()
    np.testing.assert_array_equal(np.asarray(json.loads(text), dtype=np.float32).view(np.uint32), values.view(np.uint32))
    tokens = text.replace("[", "").replace("]", "").split(",")
    shortest = [significant_digits(np.format_float_scientific(x, unique=True)) for x in values.ravel()]
    assert [significant_digits(t) for t in tokens] == shortest


@pytest.mark.parametrize(
    "value, printed",
    [(0.0123, "0.0123"), (1 / 3, "0.33333334"), (-0.5, "-0.5"), (1e-7, "1e-7"), (0.0, "0.0")],
)
def test_familiar_values_print_short(value, printed):
    assert bytes(encoding.matrix_json(np.array([[value]], dtype=np.float32))) == f"[[{printed}]]".encode()


def test_strided_and_float64_input_is_accepted_as_float32():
    base = np.arange(24, dtype=np.float64).reshape(4, 6) / 7
    view = base[:, ::2]  # not C-contiguous, and float64
    assert json.loads(bytes(encoding.matrix_json(view))) == json.loads(bytes(encoding.matrix_json(view.astype(np.float32).copy())))
    assert np.asarray(json.loads(bytes(encoding.matrix_json(view))), dtype=np.float32).tolist() == view.astype(np.float32).tolist()


def test_rows_json_is_the_matrix_row_by_row():
    v = random_finite_f32(400, seed=1)[:300].reshape(3, 100)
    rows = [bytes(r) for r in encoding.rows_json(v)]
    assert b"[" + b",".join(rows) + b"]" == bytes(encoding.matrix_json(v))


def test_rows_base64_is_little_endian_float32_and_msgspec_writes_base64():
    v = np.array([[1.0, -2.5, 3.25], [0.1, 0.2, 0.3]], dtype=">f4")  # big-endian in memory on purpose
    rows = encoding.rows_base64(v)
    assert rows[0] == b"\x00\x00\x80\x3f\x00\x00\x20\xc0\x00\x00\x50\x40"
    assert encoding.encode(rows) == json.dumps([base64.b64encode(r).decode() for r in rows], separators=(",", ":")).encode()
    decoded = [np.frombuffer(base64.b64decode(s), dtype="<f4") for s in json.loads(encoding.encode(rows))]
    np.testing.assert_array_equal(np.stack(decoded), v.astype(np.float32))


def test_groups_json_regroups_consecutive_rows_including_empty_groups():
    v = np.arange(12, dtype=np.float32).reshape(6, 2)
    groups = json.loads(bytes(encoding.groups_json(v, [2, 0, 3, 1])))
    assert groups == [[[0, 1], [2, 3]], [], [[4, 5], [6, 7], [8, 9]], [[10, 11]]]


def test_pre_encoded_rows_splice_to_the_same_json_as_formatting():
    v = random_finite_f32(60, seed=3)[:48].reshape(6, 8)
    encoded = [encoding.vector_json(row.tobytes()) for row in v]
    assert bytes(encoding.matrix_json(v, encoded)) == bytes(encoding.matrix_json(v))
    assert [bytes(r) for r in encoding.rows_json(v, encoded)] == [bytes(r) for r in encoding.rows_json(v)]
    assert bytes(encoding.groups_json(v, [2, 0, 3, 1], encoded)) == bytes(encoding.groups_json(v, [2, 0, 3, 1]))
    assert encoding.full_width(encoded, v, None) is encoded and encoding.full_width(encoded, v, 8) is encoded
    assert encoding.full_width(encoded, v, 4) is None


def test_float32_list_prints_like_float32():
    scores = np.array([1 / 3, 0.8123, -0.25], dtype=np.float32)
    assert encoding.encode(encoding.float32_list(scores)) == b"[0.33333334,0.8123,-0.25]"
    assert np.array_equal(np.asarray(encoding.float32_list(scores), dtype=np.float32), scores)


def test_shorten_cuts_and_renormalises():
    v = np.array([[3.0, 4.0, 12.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    cut = encoding.shorten(v, 2)
    assert cut.dtype == np.float32 and cut.shape == (2, 2)
    np.testing.assert_allclose(cut[0], [0.6, 0.8], rtol=1e-6)
    assert cut[1].tolist() == [0.0, 0.0]  # a zero prefix stays zero, never NaN


def test_shorten_only_cuts_an_unnormalised_answer():
    v = np.array([[3.0, 4.0, 12.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    np.testing.assert_array_equal(encoding.shorten(v, 2, normalized=False), [[3.0, 4.0], [0.0, 0.0]])


@pytest.mark.parametrize("dims", [None, 3, 5])
def test_shorten_at_full_width_is_untouched(dims):
    v = np.array([[3.0, 4.0, 12.0]], dtype=np.float32)
    assert encoding.shorten(v, dims) is v


def test_raw_vectors_splice_into_a_struct():
    class Body(msgspec.Struct):
        model: str
        embeddings: msgspec.Raw

    body = Body("m", encoding.matrix_json(np.array([[0.5, 0.25]], dtype=np.float32)))
    assert encoding.encode(body) == b'{"model":"m","embeddings":[[0.5,0.25]]}'
