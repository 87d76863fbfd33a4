"""The three embedding APIs a load can speak, and the check every answer must pass.

| api    | route            | body                       | vectors at            |
|--------|------------------|----------------------------|-----------------------|
| ollama | `/api/embed`     | `{"model", "input"}`       | `embeddings[i]`       |
| openai | `/v1/embeddings` | `{"model", "input"}`       | `data[i].embedding`   |
| tei    | `/embed`         | `{"inputs"}` (no model)    | the body, a list      |

An answer passes when its status is 200, it holds one vector per text sent, and every vector has
the model's dimension (given, or learnt from the model's first good answer and held to after).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

Api = Literal["ollama", "openai", "tei"]
APIS: tuple[Api, ...] = ("ollama", "openai", "tei")
ROUTES: dict[str, str] = {"ollama": "/api/embed", "openai": "/v1/embeddings", "tei": "/embed"}


def route(api: str) -> str:
    if api not in ROUTES:
        raise ValueError(f"unknown api {api!r}: one of {', '.join(APIS)}")
    return ROUTES[api]


def body(api: str, model: str, texts: list[str]) -> bytes:
    one: str | list[str] = texts[0] if len(texts) == 1 else texts
    payload: dict[str, Any] = {"inputs": one} if api == "tei" else {"model": model, "input": one}
    return msgspec.json.encode(payload)


def vectors(api: str, answer: Any) -> list[Any]:
    """The answer's vectors, or ValueError when it has none where the API puts them."""
    try:
        found = answer if api == "tei" else [row["embedding"] for row in answer["data"]] if api == "openai" \
            else answer["embeddings"]  # fmt: skip
    except (KeyError, TypeError) as exc:
        raise ValueError(f"no vectors in the answer ({type(exc).__name__}: {exc})") from exc
    if not isinstance(found, list):
        raise ValueError("the vectors are not a list")
    return found


class Checker:
    """Checks answers; learns each model's dimension from its first good answer unless given."""

    def __init__(self, api: str, dims: dict[str, int] | None = None) -> None:
        self.api = api
        self.dims = dict(dims or {})

    def problem(self, model: str, texts: list[str], status: int, raw: bytes) -> str | None:
        """None when the answer is right, else its failure kind: ``status-N``, ``body``, ``count``, ``dim``."""
        if status != 200:
            return f"status-{status}"
        try:
            found = vectors(self.api, msgspec.json.decode(raw))
        except (msgspec.DecodeError, ValueError):
            return "body"
        if len(found) != len(texts):
            return "count"
        dims = {len(v) if isinstance(v, list) else -1 for v in found}
        expected = self.dims.setdefault(model, next(iter(dims)))
        return None if dims == {expected} and expected > 0 else "dim"
