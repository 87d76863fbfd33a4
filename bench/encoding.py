"""`python -m bench encoding`: how fast can the gateway turn float32 vectors into a JSON body?

Response encoding runs once per request on the gateway's single event loop, so its cost caps
throughput for cache hits and small models. Every candidate builds the same two bodies (the
Ollama shape, one 2-D ``embeddings`` array, and the OpenAI shape, one object per row) from the
same L2-normalised float32 vectors, for 1 x 384 and 32 x 384. A candidate is *correct* when every
number parses back to the exact float32 and is printed with no more significant digits than the
shortest float32 repr (``0.0123``, not ``0.012299999594688416``). Incorrect ones are measured
only as a reference point. Base64 (raw little-endian float32) bodies are measured too.

All candidates run in one process, interleaved round by round (the machine is shared and noisy:
only same-run ratios mean anything). Last line: one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import statistics
import time
from typing import Any, Callable, Sequence

import msgspec
import numpy as np
import orjson

from gateway import encoding

DIM = 384
SIZES = (1, 32)
MODEL = "all-MiniLM-L6-v2"
NUMBER = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")

Candidate = Callable[[np.ndarray], bytes]


# ---- float candidates: (ollama body, openai body) builders ----------------------------------
def orjson_numpy_ollama(v: np.ndarray) -> bytes:
    return orjson.dumps(
        {"model": MODEL, "embeddings": v, "total_duration": 1, "load_duration": 0, "prompt_eval_count": 7},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def orjson_numpy_openai(v: np.ndarray) -> bytes:
    data = [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(v)]
    body = {"object": "list", "data": data, "model": MODEL, "usage": {"prompt_tokens": 7, "total_tokens": 7}}
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


class _Ollama(msgspec.Struct):
    model: str
    embeddings: Any
    total_duration: int
    load_duration: int
    prompt_eval_count: int


class _Item(msgspec.Struct):
    object: str
    index: int
    embedding: Any


class _Usage(msgspec.Struct):
    prompt_tokens: int
    total_tokens: int


class _OpenAI(msgspec.Struct):
    object: str
    data: list[_Item]
    model: str
    usage: _Usage


_encoder = msgspec.json.Encoder()


def _ollama(embeddings: Any) -> bytes:
    return _encoder.encode(_Ollama(MODEL, embeddings, 1, 0, 7))


def _openai(rows: Sequence[Any]) -> bytes:
    data = [_Item("embedding", i, row) for i, row in enumerate(rows)]
    return _encoder.encode(_OpenAI("list", data, MODEL, _Usage(7, 7)))


def msgspec_raw_ollama(v: np.ndarray) -> bytes:
    """msgspec envelope, the whole matrix spliced in as one orjson-encoded Raw."""
    return _ollama(msgspec.Raw(orjson.dumps(v, option=orjson.OPT_SERIALIZE_NUMPY)))


def msgspec_raw_openai(v: np.ndarray) -> bytes:
    return _openai([msgspec.Raw(orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY)) for row in v])


def msgspec_str_ollama(v: np.ndarray) -> bytes:
    """Round each float32 to the double nearest its shortest decimal (via numpy's str), then msgspec."""
    return _ollama(v.astype(str).astype(np.float64).tolist())


def msgspec_str_openai(v: np.ndarray) -> bytes:
    return _openai(v.astype(str).astype(np.float64).tolist())


def handwritten_ollama(v: np.ndarray) -> bytes:
    """numpy's shortest float32 strings joined by hand into the envelope."""
    rows = b",".join(b"[" + ",".join(row).encode() + b"]" for row in v.astype(str))
    head = b'{"model":"' + MODEL.encode() + b'","embeddings":['
    return head + rows + b'],"total_duration":1,"load_duration":0,"prompt_eval_count":7}'


def gateway_ollama(v: np.ndarray) -> bytes:
    """What the gateway ships (``gateway.encoding``)."""
    return _ollama(encoding.matrix_json(v))


def gateway_openai(v: np.ndarray) -> bytes:
    return _openai(encoding.rows_json(v))


# References only: they print doubles, so they fail the correctness check.
def msgspec_f64_ollama(v: np.ndarray) -> bytes:
    return _ollama(v.tolist())


def msgspec_f64_openai(v: np.ndarray) -> bytes:
    return _openai(v.tolist())


def stdlib_json_ollama(v: np.ndarray) -> bytes:
    return json.dumps({"model": MODEL, "embeddings": v.tolist(), "total_duration": 1}).encode()


FLOAT_CANDIDATES: dict[str, dict[str, Candidate]] = {
    "orjson_numpy": {"ollama": orjson_numpy_ollama, "openai": orjson_numpy_openai},
    "msgspec_raw_orjson": {"ollama": msgspec_raw_ollama, "openai": msgspec_raw_openai},
    "msgspec_str_roundtrip": {"ollama": msgspec_str_ollama, "openai": msgspec_str_openai},
    "handwritten_numpy_str": {"ollama": handwritten_ollama},
    "gateway": {"ollama": gateway_ollama, "openai": gateway_openai},
    "msgspec_f64_REFERENCE": {"ollama": msgspec_f64_ollama, "openai": msgspec_f64_openai},
    "stdlib_json_REFERENCE": {"ollama": stdlib_json_ollama},
}


# ---- base64 candidates (OpenAI shape) -------------------------------------------------------
class _B64Item(msgspec.Struct):
    object: str
    index: int
    embedding: bytes  # msgspec writes bytes as base64 in C


def msgspec_bytes_openai(v: np.ndarray) -> bytes:
    data = [_B64Item("embedding", i, row.tobytes()) for i, row in enumerate(v.astype("<f4", copy=False))]
    return _encoder.encode(_OpenAI("list", data, MODEL, _Usage(7, 7)))  # type: ignore[arg-type]


def stdlib_b64_orjson_openai(v: np.ndarray) -> bytes:
    rows = [base64.b64encode(row.tobytes()).decode() for row in v.astype("<f4", copy=False)]
    data = [{"object": "embedding", "index": i, "embedding": r} for i, r in enumerate(rows)]
    body = {"object": "list", "data": data, "model": MODEL, "usage": {"prompt_tokens": 7, "total_tokens": 7}}
    return orjson.dumps(body)


def gateway_b64_openai(v: np.ndarray) -> bytes:
    return _openai(encoding.rows_base64(v))


B64_CANDIDATES: dict[str, Candidate] = {
    "msgspec_bytes": msgspec_bytes_openai,
    "stdlib_b64_orjson": stdlib_b64_orjson_openai,
    "gateway": gateway_b64_openai,
}


# ---- correctness ----------------------------------------------------------------------------
def vectors(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def shortest_digits(x: np.float32) -> int:
    return _significant(np.format_float_scientific(x, unique=True).encode())


def _significant(token: bytes) -> int:
    mantissa = token.lstrip(b"-").split(b"e")[0].split(b"E")[0].replace(b".", b"").lstrip(b"0")
    return max(1, len(mantissa.rstrip(b"0")))


def float_body_correct(body: bytes, v: np.ndarray, shape: str) -> bool:
    doc = json.loads(body)
    rows = doc["embeddings"] if shape == "ollama" else [d["embedding"] for d in doc["data"]]
    if not np.array_equal(np.asarray(rows, dtype=np.float32), v):
        return False
    start = body.index(b"[")  # skip numbers in the envelope before the vectors
    tokens = [t for t in NUMBER.findall(body[start:]) if b"." in t or b"e" in t.lower()]
    flat = v.ravel()
    if len(tokens) < flat.size:
        return False
    return all(_significant(t) <= shortest_digits(x) for t, x in zip(tokens, flat))


def b64_body_correct(body: bytes, v: np.ndarray) -> bool:
    doc = json.loads(body)
    rows = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in doc["data"]]
    return np.array_equal(np.stack(rows), v)


# ---- timing ---------------------------------------------------------------------------------
def per_call_us(fn: Candidate, v: np.ndarray, calls: int) -> float:
    """Mean microseconds per call over ``calls`` back-to-back calls."""
    start = time.perf_counter_ns()
    for _ in range(calls):
        fn(v)
    return (time.perf_counter_ns() - start) / calls / 1000


def calibrate(fn: Candidate, v: np.ndarray, budget_ms: float) -> int:
    """Calls per sample so that every case spends about ``budget_ms`` per round."""
    return max(1, int(budget_ms * 1000 / max(per_call_us(fn, v, 3), 0.1)))


def measure(
    cases: dict[str, Candidate], v: np.ndarray, rounds: int, budget_ms: float
) -> dict[str, tuple[float, float]]:
    """(median, min) per-call microseconds over the rounds. Each round samples every case once, in a rotated order, so
    a noisy neighbour hurts all cases alike."""
    calls = {name: calibrate(fn, v, budget_ms) for name, fn in cases.items()}
    samples: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            samples[name].append(per_call_us(cases[name], v, calls[name]))
    return {name: (round(statistics.median(s), 2), round(min(s), 2)) for name, s in samples.items()}


def figures(timed: dict[str, tuple[float, float]], correct: dict[str, bool]) -> dict[str, dict[str, Any]]:
    return {name: {"us": us, "min_us": low, "correct": correct[name]} for name, (us, low) in timed.items()}


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench encoding", description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--budget-ms", type=float, default=20.0, help="time per case per round")
    return p.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    report: dict[str, Any] = {"dim": DIM, "rounds": args.rounds, "unit": "us_per_body", "float": {}, "base64": {}}
    for n in SIZES:
        v = vectors(n, seed=n)
        for shape in ("ollama", "openai"):
            cases = {name: c[shape] for name, c in FLOAT_CANDIDATES.items() if shape in c}
            correct = {name: float_body_correct(fn(v), v, shape) for name, fn in cases.items()}
            key = f"{shape}_{n}x{DIM}"
            report["float"][key] = figures(measure(cases, v, args.rounds, args.budget_ms), correct)
            print_table(key, report["float"][key])
        correct = {name: b64_body_correct(fn(v), v) for name, fn in B64_CANDIDATES.items()}
        key = f"openai_base64_{n}x{DIM}"
        report["base64"][key] = figures(measure(B64_CANDIDATES, v, args.rounds, args.budget_ms), correct)
        print_table(key, report["base64"][key])
    print(json.dumps(report, separators=(",", ":")))
    return 0


def print_table(title: str, rows: dict[str, dict[str, Any]]) -> None:
    print(f"{title}:")
    for name, row in sorted(rows.items(), key=lambda kv: kv[1]["us"]):
        flag = "" if row["correct"] else "   (incorrect: reference only)"
        print(f"  {name:24s} {row['us']:10.2f} us median {row['min_us']:10.2f} us min{flag}")
