"""How a route describes itself for ``GET /openapi.json``: a ``RouteDoc``, the optional fourth
argument of ``add(method, path, handler, doc)`` in each route module's ``register``.

A ``RouteDoc`` names types, not schemas: the request Struct the route decodes and the Structs it
encodes; ``gateway/openapi.py`` turns them into JSON Schema with msgspec, so the description
cannot drift from what the code accepts and answers. What the builder knows on its own is not
repeated here: the path parameters (from the path), the 401 of a route that needs a key, the
400/408/413/422 of a route with a JSON body, ``X-Request-ID`` on every answer.

This module imports nothing from the gateway: route modules and ``gateway/responses.py`` may
both use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

JSON = "application/json"
NDJSON = "application/x-ndjson"
NPY = "application/x-npy"
EVENT_STREAM = "text/event-stream"
HTML = "text/html"
JAVASCRIPT = "text/javascript"
CSS = "text/css"
PROMETHEUS = "text/plain"  # Prometheus's text exposition format (prometheus-client adds its version parameter)

SCHEMA_REF = "#/components/schemas/{name}"
TEXT: dict[str, Any] = {"type": "string"}
BINARY: dict[str, Any] = {"type": "string", "contentMediaType": NPY}
VECTOR: dict[str, Any] = {"type": "array", "items": {"type": "number"}}  # one float32 embedding


def ref(name: str) -> dict[str, str]:
    """A JSON Schema reference to the component schema of the Struct called ``name``."""
    return {"$ref": SCHEMA_REF.format(name=name)}


@dataclass(frozen=True, slots=True)
class Param:
    """A query or header parameter (path parameters come from the path itself)."""

    name: str
    where: Literal["query", "header"]
    schema: Mapping[str, Any]
    description: str


@dataclass(frozen=True, slots=True)
class Lines:
    """A body of one JSON value a line (NDJSON), each of type ``item``."""

    item: Any


@dataclass(frozen=True, slots=True)
class Events:
    """A server-sent event stream: each event name and the type of its ``data`` line."""

    data: Mapping[str, Any]


# What a success answer holds, per media type: a type msgspec can describe (a Struct, a list of
# them), ``Lines``, ``Events``, or a literal JSON Schema (a dict) for bytes that are not JSON.
Content = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class RouteDoc:
    """One operation. ``errors`` are the error statuses the route's own steps can answer with,
    beyond those the builder adds (see the module docstring), described with ``error_body`` when
    set; ``headers`` are success-answer
    headers by name (``gateway/openapi.py`` ``HEADERS``); ``refs`` are Structs a schema written
    by hand (a ``msgspec.Raw`` field's) refers to by name, so that they are among the components.
    """

    summary: str
    tag: str
    description: str = ""
    body: Any = None  # the JSON request Struct, if the route reads one
    example: Any = None  # a request body that succeeds on any appliance (no model named)
    status: int = 200
    content: Content = field(default_factory=dict)
    headers: tuple[str, ...] = ()
    errors: tuple[int, ...] = ()
    params: tuple[Param, ...] = ()
    refs: tuple[Any, ...] = ()
    # The Struct this route's error answers have when it speaks another server's dialect (TEI's
    # ``{error, error_type}``); None: the appliance's own ``ErrorBody``. A 401 keeps ``ErrorBody``:
    # the key is checked before any route runs.
    error_body: Any = None


# A route whose answer is not JSON names its media type with a literal schema, in one line:
#   add("GET", "/metrics", metrics, RouteDoc("Prometheus metrics", "operations", content={PROMETHEUS: TEXT}))


def json_answer(kind: Any) -> Content:
    return {JSON: kind}


# The error statuses a computation can end in, after its body is read: an unknown model (404),
# the rate limits (429), not ready, draining, memory low, a lost worker (503), the deadline (504).
WORK_ERRORS = (404, 429, 503, 504)
EMBED_HEADERS = ("X-Worker-ID", "X-Cache", "Server-Timing")
RERANK_HEADERS = ("X-Worker-ID", "Server-Timing")
