"""The HTTP response shapes (the contract in ``docs/architecture.md``) as msgspec Structs: answers,
model lists, jobs, errors, per-input failures and the embedding stream's events.

Vectors are spliced in as pre-encoded ``msgspec.Raw`` (float32 shortest repr) or as ``bytes``
(msgspec writes those as base64); see ``gateway/encoding.py``. The request shapes, and how a body
becomes one, are ``gateway/schemas.py``.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from gateway.route_docs import VECTOR, ref
from gateway.schemas import Document

# Pre-encoded JSON (``msgspec.Raw``) is any JSON to msgspec's schema generator; these say what it
# holds, for ``GET /openapi.json``.
Vector = Annotated[msgspec.Raw, Meta(extra_json_schema=VECTOR)]  # one embedding
Vectors = Annotated[msgspec.Raw, Meta(extra_json_schema={"type": "array", "items": VECTOR})]
# groups of vectors; with ``on_error: "skip"`` an input that was not served is its ``FailedItem``
Groups = Annotated[msgspec.Raw, Meta(extra_json_schema={
    "type": "array", "items": {"type": "array", "items": {"anyOf": [VECTOR, ref("FailedItem")]}}})]  # fmt: skip


# ---- answers --------------------------------------------------------------------------------
class OllamaEmbedResponse(msgspec.Struct):
    model: str
    embeddings: Vectors
    total_duration: int  # ns
    load_duration: int  # ns; models are loaded before ready, so 0
    prompt_eval_count: int


class OpenAIEmbedding(msgspec.Struct, kw_only=True):
    object: str = "embedding"
    index: int
    embedding: Vector | bytes  # float JSON array, or float32 bytes written as base64


class OpenAIUsage(msgspec.Struct):
    prompt_tokens: int
    total_tokens: int


class OpenAIEmbedResponse(msgspec.Struct, kw_only=True):
    object: str = "list"
    data: list[OpenAIEmbedding]
    model: str
    usage: OpenAIUsage


class CacheStats(msgspec.Struct):
    hits: int
    misses: int
    hit_rate: float


class BatchEmbedResponse(msgspec.Struct):
    model: str
    batches: Groups
    cache_stats: CacheStats


class RerankResult(msgspec.Struct):
    index: int
    score: float
    document: str


class RerankResponse(msgspec.Struct):
    model: str
    results: list[RerankResult]


class CohereResult(msgspec.Struct, omit_defaults=True):
    index: int
    relevance_score: float
    document: Document | None = None


class CohereTokens(msgspec.Struct):
    input_tokens: int
    output_tokens: int = 0


class CohereBilled(msgspec.Struct):
    search_units: int = 1


class CohereMeta(msgspec.Struct):
    tokens: CohereTokens
    billed_units: CohereBilled = msgspec.field(default_factory=CohereBilled)


class CohereRerankResponse(msgspec.Struct):
    id: str
    results: list[CohereResult]
    meta: CohereMeta


class OllamaEmbeddingResponse(msgspec.Struct):
    """``POST /api/embeddings``: one vector (empty for an empty prompt)."""

    embedding: Vector


class CohereApiVersion(msgspec.Struct):
    version: str = "2"


class CohereV2Meta(msgspec.Struct):
    api_version: CohereApiVersion
    billed_units: CohereBilled
    tokens: CohereTokens


class CohereV2RerankResponse(msgspec.Struct):
    """``POST /v2/rerank``: results best first, without the documents (v2 does not return them)."""

    id: str
    results: list[CohereResult]
    meta: CohereV2Meta


class Status(msgspec.Struct):
    status: str


class OpenAIModel(msgspec.Struct, kw_only=True):
    """OpenAI's model object plus what an operator needs to see (extra fields are allowed)."""

    id: str
    object: str = "model"
    created: int
    owned_by: str = "appliance"
    kind: str
    dimensions: int
    max_length: int
    main: bool
    workers: list[int]
    normalize: bool = False  # its vectors are L2-normalised when a request does not say
    prompts: dict[str, str] = msgspec.field(default_factory=dict)  # what `prompt_name` may name
    default_prompt_name: str = ""  # the prompt a request gets when it names none; "" = none


class OpenAIModelList(msgspec.Struct, kw_only=True):
    object: str = "list"
    data: list[OpenAIModel]


class OllamaDetails(msgspec.Struct, kw_only=True):
    format: str = "safetensors"
    family: str
    families: list[str]
    parameter_size: str = ""
    quantization_level: str = ""


class OllamaModel(msgspec.Struct, kw_only=True):
    name: str
    model: str
    modified_at: str  # RFC 3339
    size: int = 0
    digest: str = ""
    details: OllamaDetails
    dimensions: int
    max_length: int
    workers: list[int]


class OllamaTags(msgspec.Struct):
    models: list[OllamaModel]


class JobProgress(msgspec.Struct):
    done: int  # items with a result
    failed: int  # items with an error instead
    total: int


class JobView(msgspec.Struct, kw_only=True):
    """``GET /v1/jobs/{id}``: times are epoch seconds, null until they happen."""

    id: str
    object: str = "job"
    status: Literal["PENDING", "PROCESSING", "SUCCESS", "FAILURE", "CANCELLED"]
    task: Literal["embed", "rerank"]
    model: str
    progress: JobProgress
    created_at: float
    started_at: float | None
    finished_at: float | None
    expires_at: float | None
    error: str | None
    status_url: str
    results_url: str


class JobAccepted(msgspec.Struct, kw_only=True):
    """``202`` to a submit: poll ``status_url``."""

    id: str
    status: str
    status_url: str


class JobList(msgspec.Struct, kw_only=True):
    object: str = "list"
    data: list[JobView]


class JobItem(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One item of a job's results: its index, and its vector, its score, or its error."""

    index: int
    embedding: Vector | None = None
    score: float | None = None
    error: ItemError | None = None


class JobResults(msgspec.Struct, kw_only=True):
    """``GET /v1/jobs/{id}/results`` as paged JSON: the committed items from ``offset``, in index
    order; ``next_offset`` is null once the page reaches the last committed item."""

    object: str = "list"
    status: str
    data: list[JobItem]
    offset: int
    total: int
    next_offset: int | None


class ErrorDetail(msgspec.Struct):
    message: str
    type: str
    code: int


class ErrorBody(msgspec.Struct):
    error: ErrorDetail


# ---- per-input failures and the embedding stream ---------------------------------------------
class ItemError(msgspec.Struct):
    """Why one input was not served: ``type`` is an error type of the table in ``gateway/errors.py``."""

    type: str
    message: str


class FailedItem(msgspec.Struct):
    """In ``batches`` (``on_error: "skip"``), in place of the vector of an input that was not
    served. ``index`` is the input's position in the whole request: every group, in order."""

    index: int
    error: ItemError


class StreamProgress(msgspec.Struct):
    """``event: progress``, after each chunk: inputs served (``done``) and failed so far."""

    done: int
    failed: int
    total: int


class StreamItem(msgspec.Struct):
    """One vector of an ``event: result`` chunk (a JSON array of these)."""

    index: int
    embedding: Vector


class StreamError(msgspec.Struct):
    """``event: error``: one input that failed; the stream goes on."""

    index: int
    type: str
    message: str


class StreamComplete(msgspec.Struct):
    """``event: complete``, always the last event."""

    total: int
    failed: int
    duration_ms: float
