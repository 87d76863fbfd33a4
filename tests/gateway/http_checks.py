"""What the HTTP contract tests share (``tests/gateway/test_app.py`` and ``tests/gateway/routes/``):
the limits of ``fake_backend.TEST_CONFIG`` (64 KiB bodies, 16 inputs, 1000 characters, 2 s deadline),
a small valid body for every work route, the check of the JSON error shape, and the readers of
each embedding route's vectors. The backend behind the server is ``fake_backend.FakeBackend``: unit
vectors seeded by a hash of each input, so every number that comes back can be checked exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MAX_BODY, MAX_INPUTS, MAX_CHARS, TIMEOUT_S = 64 * 1024, 16, 1000, 2.0
EMBED_ROUTES = ["/api/embed", "/v1/embeddings", "/api/embed/batch"]
POST_BODIES: dict[str, dict[str, Any]] = {
    "/api/embed": {"model": "mini", "input": ["alpha"]},
    "/v1/embeddings": {"model": "mini", "input": ["alpha"]},
    "/api/embed/batch": {"model": "mini", "inputs": [["alpha"]]},
    "/api/rerank": {"model": "mini", "query": "q", "documents": ["alpha"]},
    "/v1/rerank": {"model": "mini", "query": "q", "documents": ["alpha"]},
    "/v2/rerank": {"model": "mini", "query": "q", "documents": ["alpha"]},
    "/api/embeddings": {"model": "mini", "prompt": "alpha"},
}


def f32(rows: Any) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32)


def error_of(reply: Any, status: int, kind: str) -> str:
    """Assert the JSON error shape; return its message."""
    assert reply.status == status, reply.body
    assert reply.headers["Content-Type"].startswith("application/json")
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "code"}
    assert (error["type"], error["code"]) == (kind, status)
    return str(error["message"])


def embed_body(route: str, texts: list[Any], **extra: Any) -> dict[str, Any]:
    key, value = ("inputs", [texts]) if route.endswith("batch") else ("input", texts)
    return {"model": "mini", key: value, **extra}


def vectors_of(route: str, doc: dict[str, Any]) -> np.ndarray:
    if route == "/api/embed":
        return f32(doc["embeddings"])
    if route == "/v1/embeddings":
        return f32([d["embedding"] for d in doc["data"]])
    return f32([v for group in doc["batches"] for v in group])
