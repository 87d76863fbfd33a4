"""Response encoding: the hot path from float32 vectors to JSON bytes.

Vectors are float32; JSON must print each as the shortest decimal that round-trips *float32*
(``0.0123``), not the double nearest it (``0.012299999594688416``: wrong-looking and ~60% more
bytes). msgspec only prints doubles, so the vectors go through orjson's numpy serialiser (which
formats float32 as float32) and are spliced into the msgspec-encoded envelope as ``msgspec.Raw``.
``python -m bench encoding`` measured this against orjson for the whole body (the same within
noise), msgspec on float32-rounded doubles (~40x slower) and a hand-written join (~35x slower):
that module holds the candidates and the correctness check.

Base64 (the OpenAI SDK's default) is raw little-endian float32; msgspec writes a ``bytes`` field
as base64 in C, faster than ``base64.b64encode`` plus a str field.
"""

from __future__ import annotations

from typing import Any, Sequence

import msgspec
import numpy as np
import orjson

_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_encoder = msgspec.json.Encoder()


def as_f32(vectors: np.ndarray) -> np.ndarray:
    """C-contiguous little-endian float32 (orjson refuses strided views; base64 must be LE)."""
    return np.ascontiguousarray(vectors, dtype="<f4")


def vector_json(vector: bytes) -> bytes:
    """One raw float32 vector as a JSON array (what the result cache keeps for hot entries)."""
    return orjson.dumps(np.frombuffer(vector, dtype=np.float32), option=_NUMPY)


def matrix_json(vectors: np.ndarray, encoded: Sequence[bytes] | None = None) -> msgspec.Raw:
    """A (n, dim) array as one JSON array of arrays. ``encoded``: the rows already as JSON
    (cache hits), spliced instead of formatting the floats again."""
    if encoded is not None:
        return msgspec.Raw(b"[" + b",".join(encoded) + b"]")
    return msgspec.Raw(orjson.dumps(as_f32(vectors), option=_NUMPY))


def rows_json(vectors: np.ndarray, encoded: Sequence[bytes] | None = None) -> list[msgspec.Raw]:
    """One JSON array per row, for shapes that wrap each vector in its own object."""
    if encoded is not None:
        return [msgspec.Raw(row) for row in encoded]
    return [msgspec.Raw(orjson.dumps(row, option=_NUMPY)) for row in as_f32(vectors)]


def rows_base64(vectors: np.ndarray) -> list[bytes]:
    """One raw little-endian float32 buffer per row; msgspec base64-encodes ``bytes``."""
    return [row.tobytes() for row in as_f32(vectors)]


def groups_json(vectors: np.ndarray, sizes: Sequence[int], encoded: Sequence[bytes] | None = None) -> msgspec.Raw:
    """Consecutive rows regrouped as ``[[row, ...], ...]``, ``sizes[i]`` rows in group i (0 ok)."""
    bounds = np.cumsum([0, *sizes])
    if encoded is not None:
        return msgspec.Raw(b"[" + b",".join(b"[" + b",".join(encoded[a:b]) + b"]"
                                            for a, b in zip(bounds[:-1], bounds[1:])) + b"]")  # fmt: skip
    flat = as_f32(vectors)
    groups = [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    return msgspec.Raw(orjson.dumps(groups, option=_NUMPY))


def float32_list(values: np.ndarray) -> list[float]:
    """Python floats that print like the float32 they came from (for scores in objects):
    the double parsed from float32's shortest repr has that same shortest repr."""
    parsed: list[float] = orjson.loads(orjson.dumps(as_f32(values), option=_NUMPY))
    return parsed


def full_width(encoded: Sequence[bytes] | None, vectors: np.ndarray, dims: int | None) -> Sequence[bytes] | None:
    """``encoded`` (full-width JSON rows) when ``dims`` keeps every dimension, else None."""
    return encoded if dims is None or dims >= vectors.shape[1] else None


def shorten(vectors: np.ndarray, dims: int | None, normalized: bool = True) -> np.ndarray:
    """Matryoshka-style ``dimensions``: keep the first ``dims`` and, when the answer is
    ``normalized`` (the request's, else the model's choice), re-normalise, as OpenAI does. An
    unnormalised answer is only cut. Full width (or None) returns the vectors untouched."""
    if dims is None or dims >= vectors.shape[1]:
        return vectors
    cut = np.asarray(vectors[:, :dims], dtype=np.float32)
    if not normalized:
        return cut
    norms = np.linalg.norm(cut, axis=1, keepdims=True)
    out = np.zeros_like(cut)  # a zero row stays zero rather than becoming NaN
    np.divide(cut, norms, out=out, where=norms > 0)
    return out


def encode(body: Any) -> bytes:
    """Any response Struct (with ``msgspec.Raw`` vectors spliced in) to JSON bytes."""
    return _encoder.encode(body)
