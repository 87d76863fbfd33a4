"""``Context``: everything a route needs from the app, built once in ``gateway/app.py``.

A work route asks the context to admit it (``admit``: ready, request rate) before reading its
body, resolves its model (``model`` / ``embedding_model``), has its inputs admitted
(``admit_inputs``: input rate, memory guard) and calls the backend through ``embed`` or
``rerank``, which set the request's deadline: without a timer for a backend that enforces it
(the router does, ``gateway.backend.enforces_deadline``), under a backstop timer otherwise. ``gateway/admission.py`` says why the checks come
in this order.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import Awaitable, Sequence, TypeVar

from aiohttp import web

from appliance.config import Config
from appliance.protocol import Input, TruncationDirection, can_embed
from gateway import errors
from gateway.admission import Admission
from gateway.backend import Backend, EmbedOutcome, ModelCard, RerankOutcome, enforces_deadline, isolate_option
from gateway.jobs.service import Jobs
from gateway.telemetry import Telemetry

R = TypeVar("R")

# 503s while models load or the appliance drains: a client should come back soon, or go elsewhere.
NOT_READY_RETRY_S = 5.0
# The backstop for a backend that does not promise to enforce the deadline itself
# (``gateway.backend.enforces_deadline``; the router does), so that it can never leave a client hanging.
DEADLINE_GRACE_S = 1.0


@dataclass(frozen=True, slots=True)
class Context:
    """Everything a route needs from the app, built once in ``build_app``."""

    config: Config
    backend: Backend
    started: float  # wall-clock time the app was built: model "created" dates
    admission: Admission = dataclasses.field(default_factory=Admission)  # default: open, unlimited
    jobs: Jobs | None = None  # bulk jobs (gateway/jobs/); None: the job routes answer 404
    telemetry: Telemetry = dataclasses.field(default_factory=Telemetry)  # every finished request (/stats, /metrics)

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
        if not can_embed(card.kind):
            raise errors.Unsupported(f"model {card.name!r} is a cross-encoder: it can rerank, not embed")
        return card

    async def embed(self, model: str, inputs: Sequence[Input], truncate: bool, *, use_cache: bool = True,
                    json: bool = False, normalize: bool | None = None,
                    truncation_direction: TruncationDirection = "right", isolate: bool = False) -> EmbedOutcome:  # fmt: skip
        """``json``: the route answers with JSON numbers, so full hits come with ``json_rows``.
        A request that is all cache hits is answered without a deadline timer: nothing awaits.
        ``normalize`` (None: the model's default), ``truncation_direction`` and ``isolate``
        (``gateway/items.py``) go to the backend; a prompt is already in front of each text
        (``gateway/prompts.py``)."""
        hit = self.backend.lookup(model, inputs, truncate=truncate, use_cache=use_cache, json=json,
                                  normalize=normalize, truncation_direction=truncation_direction)  # fmt: skip
        if hit is not None:
            return hit
        deadline = self.deadline()
        return await self.bounded(self.backend.embed(model, inputs, truncate=truncate, deadline=deadline,
                                                     use_cache=use_cache, normalize=normalize,
                                                     truncation_direction=truncation_direction,
                                                     **isolate_option(isolate)), deadline)  # fmt: skip

    async def rerank(self, model: str, query: str, documents: Sequence[str], truncate: bool, *,
                     raw_scores: bool = False, truncation_direction: TruncationDirection = "right") -> RerankOutcome:
        """``raw_scores``: a cross-encoder's logits instead of their sigmoid (a bi-encoder's cosine
        is the same either way)."""
        deadline = self.deadline()
        return await self.bounded(self.backend.rerank(model, query, documents, truncate=truncate, deadline=deadline,
                                                      raw_scores=raw_scores, truncation_direction=truncation_direction),
                                  deadline)  # fmt: skip

    def deadline(self) -> float:
        """A request's deadline: now + request_timeout, on the event loop's clock."""
        return asyncio.get_running_loop().time() + self.config.request_timeout

    def bounded(self, call: Awaitable[R], deadline: float) -> Awaitable[R]:
        """``call`` (a backend call given ``deadline``) as it is when the backend enforces the
        deadline itself (no timer, no extra frame), else under the backstop timer."""
        if enforces_deadline(self.backend):
            return call
        return self._backstopped(call, deadline)

    async def _backstopped(self, call: Awaitable[R], deadline: float) -> R:
        try:
            async with asyncio.timeout_at(deadline + DEADLINE_GRACE_S):
                return await call
        except TimeoutError:
            raise errors.DeadlineExceeded(f"no answer within {self.config.request_timeout:g} s") from None


CONTEXT = web.AppKey("context", Context)
REQUEST_ID = web.RequestKey("request_id", str)
