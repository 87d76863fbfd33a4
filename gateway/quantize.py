"""Quantised encodings of float32 vectors: ``int8``, ``uint8``, ``binary`` and ``ubinary``.

They are computed from the vectors as served (after the result cache, which holds float32 only,
and after ``dimensions`` cuts them), one vector at a time:

| encoding  | element | values     | length         | rule                                           |
|-----------|---------|------------|----------------|------------------------------------------------|
| `int8`    | int8    | -128..127  | d              | `clip(rint(x * 127), -128, 127)`               |
| `uint8`   | uint8   | 0..255     | d              | the `int8` value + 128                         |
| `ubinary` | uint8   | 0..255     | ceil(d / 8)    | `packbits(x > 0)`: bit 7 of byte 0 is x[0]     |
| `binary`  | int8    | -128..127  | ceil(d / 8)    | the `ubinary` byte - 128                       |

``binary`` and ``ubinary`` are sentence-transformers' ``quantize_embeddings`` exactly (a short
last byte is padded with zero bits, as ``np.packbits`` does).

``int8`` and ``uint8`` use a FIXED scale, 127 per unit, not one calibrated on the batch as
sentence-transformers does by default: a calibrated scale would make a text's answer depend on
the other inputs of its request (and on which of them were cached), so the same text could come
back as different integers. A fixed scale assumes components in [-1, 1], which holds for any
unit-length vector; a model that does not normalise gets components beyond that saturated at
-128 / 127. ``rint`` rounds half to even.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

Quantization = Literal["int8", "uint8", "binary", "ubinary"]
QUANTIZATIONS: tuple[str, ...] = get_args(Quantization)
INT8_SCALE = 127.0  # int8 steps per unit: a unit-length vector's components fit without clipping


def int8(vectors: np.ndarray) -> np.ndarray:
    scaled = np.rint(np.asarray(vectors, dtype=np.float32) * np.float32(INT8_SCALE))
    return np.clip(scaled, -128, 127).astype(np.int8)


def uint8(vectors: np.ndarray) -> np.ndarray:
    # order matters: widen before the shift, or int8 + 128 wraps
    return (int8(vectors).astype(np.int16) + 128).astype(np.uint8)


def ubinary(vectors: np.ndarray) -> np.ndarray:
    return np.packbits(np.asarray(vectors) > 0, axis=-1)


def binary(vectors: np.ndarray) -> np.ndarray:
    return (ubinary(vectors).astype(np.int16) - 128).astype(np.int8)


_ENCODERS = {"int8": int8, "uint8": uint8, "binary": binary, "ubinary": ubinary}


def quantize(vectors: np.ndarray, encoding: Quantization) -> np.ndarray:
    """A (n, d) float array as the (n, d) or (n, ceil(d / 8)) integer array of ``encoding``."""
    return _ENCODERS[encoding](vectors)


def width(dim: int, encoding: Quantization) -> int:
    """How many integers one ``dim``-wide vector becomes."""
    return -(-dim // 8) if encoding.endswith("binary") else dim
