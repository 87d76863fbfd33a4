"""The route table, and what every route shares: the app's ``Context`` and the request checks.

One module per API family (``ollama``, ``openai``, ``batch``, ``rerank``, ``system``); each has a
``register(add)`` that adds its handlers through ``add(method, path, handler)``. A work route asks ``Context`` to admit it (``admit``: ready, request rate),
reads its body with ``read_json``, resolves the model, checks the inputs, has them admitted
(``admit_inputs``: input rate, memory guard), calls the backend through ``Context`` (which sets
the deadline) and answers with ``respond``. The API key was checked before any route ran (``gateway/app.py`` wraps
every handler; ``gateway/admission.py`` says why the checks come in this order). Routes raise
``gateway.errors`` types; only that wrapper turns them into responses.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import Awaitable, Callable, Sequence, TypeVar

import msgspec
from aiohttp import web

from appliance.config import Config
from gateway import errors
from gateway.admission import Admission
from gateway.backend import Backend, EmbedOutcome, Input, ModelCard, RerankOutcome, Timings
from gateway.schemas import decode

T = TypeVar("T")
R = TypeVar("R")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
AddRoute = Callable[[str, str, Handler], None]  # (method, path, handler)

# 503s while models load or the appliance drains: a client should come back soon, or go elsewhere.
NOT_READY_RETRY_S = 5.0
# The backend enforces the deadline itself; this is the backstop so that a bug there can never
# leave a client hanging.
DEADLINE_GRACE_S = 1.0
JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Context:
    """Everything a route needs from the app, built once in ``build_app``."""

    config: Config
    backend: Backend
    started: float  # wall-clock time the app was built: model "created" dates
    admission: Admission = dataclasses.field(default_factory=Admission)  # default: open, unlimited

    def admit(self, request: web.Request) -> None:
        """A work request at the door, before its body is read: 503 while loading or draining
        (charging no rate token), then one request off the principal's rate (429)."""
        self.check_ready()
        self.admission.admit_request(request)

    def admit_inputs(self, request: web.Request, count: int) -> None:
        """Once the body is parsed and checked: ``count`` inputs off the principal's rate (429, or
        422 when no minute could hold them), then the memory guard (503)."""
        self.admission.admit_inputs(request, count)

    def check_ready(self) -> None:
        if self.backend.is_draining():
            raise errors.Draining("the appliance is shutting down", retry_after=NOT_READY_RETRY_S)
        if not self.backend.is_ready():
            raise errors.NotReady("models are still loading", retry_after=NOT_READY_RETRY_S)

    def model(self, name: str | None) -> ModelCard:
        """The named model, or the main model when the client left ``model`` out."""
        cards = self.backend.models()
        if not name:
            main = next((c for c in cards if c.main), None)
            if main is None:
                raise errors.NotReady("the main model is not loaded", retry_after=NOT_READY_RETRY_S)
            return main
        # Ollama clients habitually add the default tag.
        plain = name[: -len(":latest")] if name.endswith(":latest") else name
        card = next((c for c in cards if c.name == name or c.name == plain), None)
        if card is None:
            known = ", ".join(c.name for c in cards)
            raise errors.ModelNotFound(f"model {name!r} is not served here (models: {known})")
        return card

    def embedding_model(self, name: str | None) -> ModelCard:
        card = self.model(name)
        if card.dim == 0:
            raise errors.Unsupported(f"model {card.name!r} is a cross-encoder: it can rerank, not embed")
        return card

    async def embed(self, model: str, inputs: Sequence[Input], truncate: bool,
                    use_cache: bool = True, json: bool = False) -> EmbedOutcome:  # fmt: skip
        """``json``: the route answers with JSON numbers, so full hits come with ``json_rows``.
        A request that is all cache hits is answered without a deadline timer: nothing awaits."""
        hit = self.backend.lookup(model, inputs, truncate=truncate, use_cache=use_cache, json=json)
        if hit is not None:
            return hit
        return await self._before_deadline(
            lambda deadline: self.backend.embed(model, inputs, truncate=truncate, deadline=deadline,
                                                use_cache=use_cache)
        )

    async def rerank(self, model: str, query: str, documents: Sequence[str], truncate: bool) -> RerankOutcome:
        return await self._before_deadline(
            lambda deadline: self.backend.rerank(model, query, documents, truncate=truncate, deadline=deadline)
        )

    async def _before_deadline(self, call: Callable[[float], Awaitable[R]]) -> R:
        """Run ``call(deadline)``, deadline = now + request_timeout on the loop's clock."""
        deadline = asyncio.get_running_loop().time() + self.config.request_timeout
        try:
            async with asyncio.timeout_at(deadline + DEADLINE_GRACE_S):
                return await call(deadline)
        except TimeoutError:
            raise errors.DeadlineExceeded(f"no answer within {self.config.request_timeout:g} s") from None


CONTEXT = web.AppKey("context", Context)
REQUEST_ID = web.RequestKey("request_id", str)


# ---- request side ---------------------------------------------------------------------------
async def read_json(request: web.Request, decoder: msgspec.json.Decoder[T]) -> T:
    """The body as a request Struct. A declared length over the limit is refused before reading;
    an undeclared (chunked) one makes aiohttp raise HTTPRequestEntityTooLarge mid-read."""
    limit = request.client_max_size
    if limit and request.content_length is not None and request.content_length > limit:
        raise errors.BodyTooLarge(f"request body of {request.content_length} bytes exceeds the {limit}-byte limit")
    return decode(decoder, await request.read())


def check_inputs(items: Sequence[str | list[int]], config: Config, field: str = "input") -> None:
    """Size limits for one request's texts (or token-id lists): 400 when there is nothing to
    embed, 422 when there is too much. A token-id list is held to the character bound too (a
    token is at least one character), so no input form escapes the limit."""
    if not items or not any(items):
        raise errors.EmptyInput(f"`{field}` is empty: nothing to embed")
    if len(items) > config.max_inputs:
        raise errors.TooManyInputs(f"`{field}` has {len(items)} items; the limit is {config.max_inputs}")
    if max(map(len, items)) > config.max_input_chars:
        index = next(i for i, item in enumerate(items) if len(item) > config.max_input_chars)
        raise errors.InputTooLong(
            f"`{field}[{index}]` has {len(items[index])} characters; the limit is {config.max_input_chars}"
        )


def check_dimensions(dims: int | None, card: ModelCard) -> int | None:
    if dims is not None and dims > card.dim:
        raise errors.InvalidField(f"`dimensions` {dims} exceeds {card.name!r}'s {card.dim} - at `$.dimensions`")
    return dims


# ---- response side --------------------------------------------------------------------------
def respond(body: bytes, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=body, status=status, content_type=JSON, headers=headers)


def outcome_headers(outcome: EmbedOutcome | RerankOutcome, inputs: int | None = None) -> dict[str, str]:
    """``X-Worker-ID`` and ``Server-Timing`` from any outcome; ``X-Cache`` for embeddings."""
    headers = {"X-Worker-ID": outcome.workers or "none", "Server-Timing": server_timing(outcome.timings)}
    if inputs is not None and isinstance(outcome, EmbedOutcome):
        headers["X-Cache"] = cache_state(outcome.cache_hits, inputs)
    return headers


NO_STAGES = Timings()


def server_timing(t: Timings) -> str:
    if t == NO_STAGES:
        return ALL_HITS_TIMING  # every input came from the cache: nothing to format
    return f"queue;dur={t.queue_us / 1000:.3f},tokenize;dur={t.tokenize_us / 1000:.3f},inference;dur={t.compute_us / 1000:.3f}"


ALL_HITS_TIMING = "queue;dur=0.000,tokenize;dur=0.000,inference;dur=0.000"


def cache_state(hits: int, inputs: int) -> str:
    if hits <= 0:
        return "miss"
    return "hit" if hits >= inputs else "partial"


def register(add: AddRoute) -> None:
    """Every route of the HTTP contract (DESIGN.md section 7) that lives in this package."""
    from gateway.routes import batch, ollama, openai, rerank, system

    for family in (system, ollama, openai, batch, rerank):
        family.register(add)
