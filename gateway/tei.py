"""The TEI (Hugging Face text-embeddings-inference) dialect's shapes: its request bodies, its
answers, and its error body with the table that turns the appliance's request errors into it.

TEI's published OpenAPI description and router are the reference: field names and defaults
(``normalize`` true, ``truncate`` off, ``truncation_direction`` ``Right``, ``add_special_tokens``
and ``skip_special_tokens`` true), ``[[float]]`` for ``/embed``, ``[{index, score, text?}]`` for
``/rerank``, ``SimpleToken`` for ``/tokenize`` and ``Info`` for ``/info``. One extension: an
optional ``model`` naming another served model (TEI serves one; left out, the route's default).

Errors on the TEI routes are ``{"error": str, "error_type": str}`` with TEI's statuses
(``tei_error``): an empty batch 400 ``Empty``, too many or too long inputs 413 ``Validation``,
a wrong field 422 ``Validation``, a tokenizer refusal 422 ``Tokenizer``, a full queue or a rate
limit 429 ``Overloaded``, a failed batch 424 ``Backend``, not ready or draining 503
``Unhealthy``. Routes raise ``gateway.errors`` types as everywhere; ``speaks_tei`` wraps a TEI
handler and is the one place they take this shape. The 401 of the key check keeps the
appliance's shape: it runs before any route.
"""

from __future__ import annotations

import functools
import math
from typing import Annotated, Literal, Union

import msgspec
from aiohttp import web
from msgspec import Meta

from gateway import errors
from gateway.routes.answers import Handler, respond
from gateway.schemas import Dimensions, TokenId
from gateway.telemetry import ERROR_TYPE

_TOKEN_ID = {"type": "integer", "minimum": 0, "exclusiveMaximum": 2**32}
# TEI's ``inputs``: a text, a batch of texts and token-id lists (mixed), one token-id list. msgspec
# decodes one array type per union, so the Struct takes any element mix and the route refuses a
# flat list that mixes ids with anything else; the JSON Schema says what is accepted.
TeiInput = Annotated[str | list[Union[str, TokenId, list[TokenId]]], Meta(extra_json_schema={"allOf": [{"anyOf": [
    {"type": "string"},
    {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "array", "items": _TOKEN_ID}]}},
    {"type": "array", "items": _TOKEN_ID},
]}]})]  # fmt: skip
TokenizeInput = str | list[str]
# ``/decode``'s ``ids``: one token-id list or a batch of them, not a mix
DecodeIds = Annotated[list[Union[TokenId, list[TokenId]]], Meta(extra_json_schema={"allOf": [{"anyOf": [
    {"type": "array", "items": _TOKEN_ID},
    {"type": "array", "items": {"type": "array", "items": _TOKEN_ID}},
]}]})]  # fmt: skip
# TEI takes either spelling
TruncationDirection = Literal["Right", "Left", "right", "left"]
ErrorType = Literal["Unhealthy", "Backend", "Overloaded", "Validation", "Tokenizer", "Empty"]
ModelName = Annotated[str, Meta(description="Extension: another served model (TEI serves one).")]


# ---- requests -------------------------------------------------------------------------------
class TeiEmbed(msgspec.Struct, kw_only=True):
    """``POST /embed`` (and ``POST /``). ``truncate`` left out means ``/info``'s ``auto_truncate``."""

    inputs: TeiInput
    normalize: bool = True
    truncate: bool | None = None
    truncation_direction: TruncationDirection = "Right"
    prompt_name: str | None = None
    dimensions: Dimensions | None = None
    model: ModelName | None = None


class TeiRerank(msgspec.Struct, kw_only=True):
    """``POST /rerank``: the first cross-encoder served, else the main model (cosine)."""

    query: str
    texts: list[str]
    truncate: bool | None = None
    truncation_direction: TruncationDirection = "Right"
    raw_scores: bool = False
    return_text: bool = False
    model: ModelName | None = None


class TeiTokenize(msgspec.Struct, kw_only=True):
    """``POST /tokenize``."""

    inputs: TokenizeInput
    add_special_tokens: bool = True
    prompt_name: str | None = None
    model: ModelName | None = None


class TeiDecode(msgspec.Struct, kw_only=True):
    """``POST /decode``."""

    ids: DecodeIds
    skip_special_tokens: bool = True
    model: ModelName | None = None


# ---- answers --------------------------------------------------------------------------------
class TeiRank(msgspec.Struct, omit_defaults=True):
    index: int
    score: float
    text: str | None = None  # with ``return_text`` only


class TeiToken(msgspec.Struct):
    """TEI's ``SimpleToken``: ``start``/``stop`` are UTF-8 byte offsets, null for a special token."""

    id: int
    text: str
    special: bool
    start: int | None
    stop: int | None


class TeiEmbeddingModel(msgspec.Struct):
    pooling: str


class TeiClassifierModel(msgspec.Struct):
    id2label: dict[str, str]
    label2id: dict[str, int]


class TeiModelType(msgspec.Struct, omit_defaults=True):
    """Exactly one of the two, as TEI's ``ModelType`` serialises."""

    embedding: TeiEmbeddingModel | None = None
    reranker: TeiClassifierModel | None = None


class TeiInfo(msgspec.Struct, kw_only=True):
    """``GET /info``: the main model and the appliance's limits in TEI's terms."""

    model_id: str
    model_sha: str | None = None
    model_dtype: str
    model_type: TeiModelType
    max_concurrent_requests: int
    max_input_length: int
    max_batch_tokens: int
    max_batch_requests: int | None
    max_client_batch_size: int
    auto_truncate: bool
    tokenization_workers: int
    version: str
    sha: str | None = None
    docker_label: str | None = None


class TeiError(msgspec.Struct):
    """Every error answer of a TEI route (TEI's ``ErrorResponse``)."""

    error: str
    error_type: ErrorType


# ---- errors ---------------------------------------------------------------------------------
# Each request error type of ``gateway/errors.py`` as TEI answers it: (status, error_type).
TEI_ERRORS: dict[str, tuple[int, ErrorType]] = {
    errors.EmptyInput.type: (400, "Empty"),
    errors.MalformedJson.type: (400, "Validation"),
    errors.BadRequest.type: (400, "Validation"),
    errors.NotFound.type: (404, "Validation"),
    errors.ModelNotFound.type: (404, "Validation"),
    errors.BodyTooLarge.type: (413, "Validation"),
    errors.TooManyInputs.type: (413, "Validation"),
    errors.InputTooLong.type: (413, "Validation"),
    errors.InvalidField.type: (422, "Validation"),
    errors.Unsupported.type: (422, "Validation"),
    errors.TokenizerFailed.type: (422, "Tokenizer"),
    errors.RateLimited.type: (429, "Overloaded"),
    errors.QueueFull.type: (429, "Overloaded"),
    errors.Overloaded.type: (424, "Backend"),  # out of memory even after splitting: the batch failed
    errors.NotReady.type: (503, "Unhealthy"),
    errors.Draining.type: (503, "Unhealthy"),
    errors.MemoryLow.type: (503, "Unhealthy"),
    errors.WorkerLost.type: (503, "Unhealthy"),
    errors.DeadlineExceeded.type: (504, "Backend"),
}
# aiohttp's own, raised while the body is read: too large, too slow
HTTP_ERRORS: dict[int, tuple[int, ErrorType]] = {413: (413, "Validation"), 408: (408, "Validation")}
TEI_STATUSES = (400, 404, 408, 413, 422, 424, 429, 503, 504)


def tei_error(status: int, error_type: ErrorType, message: str, retry_after: float | None = None) -> web.Response:
    headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after is not None else None
    return respond(msgspec.json.encode(TeiError(message, error_type)), status=status, headers=headers)


def speaks_tei(handler: Handler) -> Handler:
    """``handler`` answering its request errors in TEI's shape. Anything else propagates to the
    app's wrapper (``gateway/app.py``), which logs it as the 500 it is."""

    @functools.wraps(handler)
    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except errors.ApiError as exc:
            request[ERROR_TYPE] = exc.type
            status, kind = TEI_ERRORS.get(exc.type, (exc.status, "Backend" if exc.status >= 500 else "Validation"))
            return tei_error(status, kind, exc.message, exc.retry_after)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            status, kind = HTTP_ERRORS.get(exc.status, (exc.status, "Validation"))
            request[ERROR_TYPE] = errors.BodyTooLarge.type if status == 413 else errors.BadRequest.type
            return tei_error(status, kind, exc.text or exc.reason)

    return handle
