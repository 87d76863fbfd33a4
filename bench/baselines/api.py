"""OpenAI's ``POST /v1/embeddings`` as every baseline answers it, and ``GET /health``.

A design supplies one coroutine, ``texts -> rows``; this module reads the body, refuses bad input
with a JSON error (400 ``invalid_request_error``, 404 ``model_not_found``; never a 500), and
writes the answer with orjson straight from the float32 rows, as the appliance's gateway does.
"""

from __future__ import annotations

from typing import Awaitable, Callable

import numpy as np
import orjson
from aiohttp import web

Embed = Callable[[list[str]], Awaitable[np.ndarray]]
MAX_INPUTS = 2048


class BadRequest(Exception):
    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind = status, kind


def texts_of(payload: object, model: str) -> list[str]:
    if not isinstance(payload, dict):
        raise BadRequest(400, "invalid_request_error", "the body must be a JSON object")
    if payload.get("model", model) != model:
        raise BadRequest(404, "model_not_found", f"this server serves {model!r}, not {payload.get('model')!r}")
    value = payload.get("input")
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or len(texts) > MAX_INPUTS \
            or not all(isinstance(t, str) and t for t in texts):  # fmt: skip
        raise BadRequest(400, "invalid_request_error", f"input must be a non-empty string or 1..{MAX_INPUTS} of them")
    return texts


def answer(model: str, rows: np.ndarray) -> web.Response:
    data = [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)]
    body = orjson.dumps({"object": "list", "model": model, "data": data}, option=orjson.OPT_SERIALIZE_NUMPY)
    return web.Response(body=body, content_type="application/json")


def error(problem: BadRequest) -> web.Response:
    return web.json_response({"error": {"message": str(problem), "type": problem.kind}}, status=problem.status)


def application(model: str, embed: Embed) -> web.Application:
    """The app: ``/v1/embeddings`` over ``embed``, and ``/health``."""

    async def embeddings(request: web.Request) -> web.Response:
        try:
            try:
                payload = orjson.loads(await request.read())
            except orjson.JSONDecodeError as exc:
                raise BadRequest(400, "invalid_request_error", f"the body is not JSON: {exc}") from exc
            return answer(model, await embed(texts_of(payload, model)))
        except BadRequest as problem:
            return error(problem)

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(client_max_size=32 * 1024 * 1024)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/health", health)
    return app
