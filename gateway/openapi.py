"""The OpenAPI 3.1 description of the routes an app registered: ``ApiDescription``.

``build_app``'s ``add`` records every route with its ``RouteDoc`` (``gateway/route_docs.py``);
``GET /openapi.json`` serves ``ApiDescription.encoded()``, built on the first request and kept as
bytes for the life of the app. Every schema in it comes from msgspec
(``msgspec.json.schema_components``) over the Structs the routes decode and encode: requests
(``gateway/schemas.py``), answers (``gateway/responses.py``, ``gateway/stats.py``), the error body.
What is the builder's own, so that no route has to repeat it:

- path parameters, read from the aiohttp path (``{job_id}``);
- the bearer key: every operation needs it except those on ``OPEN_PATHS``
  (``gateway/admission.py``, the same set the key check reads), which say ``security: []``; the
  others answer 401;
- a route with a JSON body answers 400 (malformed JSON, nothing to embed), 408 (the body came too
  slowly), 413 (too large) and 422 (a field is wrong, too many or too long inputs);
- ``X-Request-ID`` on every answer (on a 503 it may be missing: the connection cap refuses before
  any handler runs), ``Retry-After`` on 429 and 503.
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
from dataclasses import dataclass
from typing import Any, Iterable

import msgspec
from aiohttp import web

from gateway.admission import is_open
from gateway.responses import ErrorBody
from gateway.route_docs import JSON, SCHEMA_REF, Events, Lines, Param, RouteDoc

DISTRIBUTION = "inference-appliance"
TITLE = "Inference appliance"
SUMMARY = ("Text embeddings and reranking over HTTP (OpenAI, Ollama, TEI and Cohere/Jina dialects), bulk jobs and "
           "streams.")
# What holds for every path and so belongs to no one operation.
DESCRIPTION = (
    "Every error is JSON `{\"error\": {\"message\", \"type\", \"code\"}}`, `type` a stable word a client may "
    "branch on; the TEI routes answer in TEI's own shape, `{\"error\", \"error_type\"}`. A method a path "
    "does not take is a 405 with `Allow`; an unknown path a 404. Every GET also answers HEAD. Past "
    "`max_connections` a new connection gets a 503 with `Retry-After: 1` before any route sees it. `model` "
    "left out of a body means the main model."
)
SECURITY_SCHEME = "apiKey"
BODY_ERRORS = (400, 408, 413, 422)

# Tags in the order the docs page shows them; a tag not named here comes after, undescribed.
TAGS = {
    "embeddings": "Texts in, vectors out: OpenAI, Ollama and the batch API, and the event stream.",
    "rerank": "Documents scored against a query.",
    "jobs": "Bulk work that survives restarts: submit, poll, download, cancel.",
    "models": "The models served here, in OpenAI's and Ollama's list shapes.",
    "operations": "Probes and the operator's views.",
    "docs": "This description and the page that renders it.",
}

HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-ID": {"description": "The client's own X-Request-ID when it sent a sane one, else a fresh id.",
                     "schema": {"type": "string"}},
    "Retry-After": {"description": "Whole seconds to wait before trying again.",
                    "schema": {"type": "string", "pattern": "^[0-9]+$"}},
    "Location": {"description": "Where to poll the job.", "schema": {"type": "string"}},
    "X-Worker-ID": {"description": "The worker(s) that computed the answer, comma-separated; `none` when the cache "
                                   "answered everything.", "schema": {"type": "string"}},
    "X-Cache": {"description": "Whether the result cache answered all, some or none of the inputs.",
                "schema": {"enum": ["hit", "partial", "miss"]}},
    "Server-Timing": {"description": "queue, tokenize, inference and total durations in milliseconds.",
                      "schema": {"type": "string"}},
    "X-Job-Status": {"description": "The job's status when the download started.", "schema": {"type": "string"}},
    "X-Failed-Count": {"description": "Rows of NaN: inputs that failed or were never computed.",
                       "schema": {"type": "string", "pattern": "^[0-9]+$"}},
    "Content-Disposition": {"description": "`attachment; filename=\"JOB_ID.npy\"`.", "schema": {"type": "string"}},
    "WWW-Authenticate": {"description": "`Bearer realm=\"appliance\"` (with `error=\"invalid_token\"` for a wrong key).",
                         "schema": {"type": "string"}},
}  # fmt: skip

# Each error status: what it means here and the stable `type` values its body can carry.
ERRORS: dict[int, tuple[str, tuple[str, ...]]] = {
    400: ("Malformed JSON, or nothing to embed.", ("malformed_json", "empty_input", "invalid_request")),
    401: ("Missing or unknown API key (only when the appliance has `api_keys_file`).", ("unauthorized",)),
    404: ("No such model, job or route (or bulk jobs are off).", ("model_not_found", "not_found")),
    408: ("The request body did not arrive within `body_read_timeout`.", ("invalid_request",)),
    409: ("The job has not finished: its .npy is written once it has.", ("job_not_finished",)),
    413: ("The request body is over `max_body_bytes` (`max_job_body_bytes` for a job).", ("body_too_large",)),
    422: ("A field is wrong, or there are too many or too long inputs.",
          ("invalid_field", "too_many_inputs", "input_too_long", "unsupported")),
    424: ("The model failed on this request's batch (out of memory even after splitting it).", ("overloaded",)),
    429: ("A rate limit is spent, or the queue is full.", ("rate_limited", "queue_full")),
    503: ("Not ready, draining, memory low, overloaded, or no worker can take it.",
          ("not_ready", "draining", "memory_low", "overloaded", "worker_unavailable")),
    504: ("The request's deadline (`request_timeout`) passed.", ("deadline_exceeded",)),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Registered:
    method: str
    path: str
    doc: RouteDoc | None


class ApiDescription:
    """The routes of one app as they were registered, and their OpenAPI document (built once)."""

    def __init__(self, version: str | None = None) -> None:
        self.version = version  # None: the installed package's, looked up when first built
        self.routes: list[Registered] = []
        self._encoded: bytes | None = None

    def record(self, method: str, path: str, doc: RouteDoc | None) -> None:
        self.routes.append(Registered(method, path, doc))
        self._encoded = None  # a route added after a build is not left out

    def undocumented(self) -> list[str]:
        return [f"{r.method} {r.path}" for r in self.routes if r.doc is None]

    def encoded(self) -> bytes:
        if self._encoded is None:
            self._encoded = msgspec.json.encode(self.document())
        return self._encoded

    def document(self) -> dict[str, Any]:
        documented = [r for r in self.routes if r.doc is not None]
        schemas = Schemas(documented)
        paths: dict[str, dict[str, Any]] = {}
        for route in documented:
            paths.setdefault(openapi_path(route.path), {})[route.method.lower()] = operation(route, schemas)
        return {
            "openapi": "3.1.0",
            "info": {"title": TITLE, "version": self.version or package_version(), "summary": SUMMARY,
                     "description": DESCRIPTION},
            "tags": tags_of(documented),
            "paths": paths,
            "components": {
                "schemas": schemas.components,
                "responses": {f"Error{status}": error_response(status) for status in used_errors(documented)},
                "headers": HEADERS,
                "securitySchemes": {SECURITY_SCHEME: {
                    "type": "http", "scheme": "bearer",
                    "description": "An API key from `api_keys_file`, as `Authorization: Bearer KEY`. Without "
                                   "that file the appliance is open and no key is asked for.",
                }},
            },
            "security": [{SECURITY_SCHEME: []}],
        }  # fmt: skip


API_DESCRIPTION = web.AppKey("api_description", ApiDescription)


@functools.cache
def package_version() -> str:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:  # run from a source tree never installed
        return "0.0.0"


class Schemas:
    """Every type the documented routes name, described by msgspec in one pass: ``of(kind)`` is
    the schema for a type (mostly a ``$ref``), ``components`` the named Struct schemas."""

    def __init__(self, routes: Iterable[Registered]) -> None:
        kinds = list(dict.fromkeys([ErrorBody, *(k for r in routes if r.doc for k in types_of(r.doc))]))
        found, self.components = msgspec.json.schema_components(kinds, ref_template=SCHEMA_REF)
        self._by_kind = dict(zip(kinds, found))

    def of(self, kind: Any) -> dict[str, Any]:
        return self._by_kind[kind]


def types_of(doc: RouteDoc) -> Iterable[Any]:
    """The msgspec-describable types a route names: body, answers, line items, events, refs."""
    if doc.body is not None:
        yield doc.body
    for answer in doc.content.values():
        if isinstance(answer, Lines):
            yield answer.item
        elif isinstance(answer, Events):
            yield from answer.data.values()
        elif not isinstance(answer, dict):
            yield answer
    yield from doc.refs
    if doc.error_body is not None:
        yield doc.error_body


def operation(route: Registered, schemas: Schemas) -> dict[str, Any]:
    doc = route.doc
    assert doc is not None
    op: dict[str, Any] = {"operationId": operation_id(route.method, route.path), "summary": doc.summary,
                          "tags": [doc.tag]}  # fmt: skip
    if doc.description:
        op["description"] = doc.description
    parameters = [*path_parameters(route.path), *(parameter(p) for p in doc.params)]
    if parameters:
        op["parameters"] = parameters
    if doc.body is not None:
        media: dict[str, Any] = {"schema": schemas.of(doc.body)}
        if doc.example is not None:
            media["example"] = doc.example
        op["requestBody"] = {"required": True, "content": {JSON: media}}
    if is_open(route.method, route.path):
        op["security"] = []  # carries no data: open even where keys are configured
    op["responses"] = {str(doc.status): success(doc, schemas)}
    for status in errors_of(route):
        op["responses"][str(status)] = error_answer(status, doc, schemas)
    return op


def error_answer(status: int, doc: RouteDoc, schemas: Schemas) -> dict[str, Any]:
    """The shared component for an error in the appliance's shape; written out in the route's own
    ``error_body`` shape when it speaks another dialect (all but the key check's 401)."""
    if doc.error_body is None or status == 401:
        return {"$ref": f"#/components/responses/Error{status}"}
    return {"description": ERRORS[status][0], "headers": error_headers(status),
            "content": {JSON: {"schema": schemas.of(doc.error_body)}}}  # fmt: skip


def success(doc: RouteDoc, schemas: Schemas) -> dict[str, Any]:
    headers = {"X-Request-ID": header_ref("X-Request-ID", required=True)}
    for name in doc.headers:
        headers[name] = header_ref(name, required=name == "Location")
    answer: dict[str, Any] = {"description": doc.summary, "headers": headers}
    if doc.content:
        answer["content"] = {media: media_object(kind, schemas) for media, kind in doc.content.items()}
    return answer


def media_object(kind: Any, schemas: Schemas) -> dict[str, Any]:
    """A success media type. An NDJSON body is text as a whole: the schema of each line goes in
    an ``x-`` extension (OpenAPI 3.1 has no item schema; the docs page reads it there)."""
    if isinstance(kind, Lines):
        return {"schema": {"type": "string"}, "x-item-schema": schemas.of(kind.item)}
    if isinstance(kind, Events):
        return {"schema": {"oneOf": [event_schema(name, schemas.of(t)) for name, t in kind.data.items()]}}
    if isinstance(kind, dict):
        return {"schema": kind}
    return {"schema": schemas.of(kind)}


def event_schema(name: str, data: dict[str, Any]) -> dict[str, Any]:
    """One server-sent event as OpenAPI describes an event stream's ``schema``: an object of the
    event's fields, its ``data`` a JSON text whose own schema is ``contentSchema``."""
    return {
        "type": "object",
        "properties": {
            "event": {"const": name},
            "data": {"type": "string", "contentMediaType": JSON, "contentSchema": data},
        },
        "required": ["event", "data"],
    }


def header_ref(name: str, *, required: bool = False) -> dict[str, Any]:
    # A header may sit next to a $ref only in a Reference Object's summary/description; `required`
    # has to live in the header itself, so a required use copies the component.
    if required:
        return {**HEADERS[name], "required": True}
    return {"$ref": f"#/components/headers/{name}"}


def errors_of(route: Registered) -> list[int]:
    assert route.doc is not None
    found = set(route.doc.errors)
    if route.doc.body is not None:
        found.update(BODY_ERRORS)
    if not is_open(route.method, route.path):
        found.add(401)
    return sorted(found)


def used_errors(routes: Iterable[Registered]) -> list[int]:
    """The statuses some route answers in the appliance's own error shape (a shared component)."""
    return sorted({status for route in routes for status in errors_of(route)
                   if route.doc is not None and (route.doc.error_body is None or status == 401)})  # fmt: skip


def error_headers(status: int) -> dict[str, Any]:
    headers = {"X-Request-ID": header_ref("X-Request-ID", required=status != 503)}
    if status in (424, 429, 503):
        headers["Retry-After"] = header_ref("Retry-After")
    if status == 401:
        headers["WWW-Authenticate"] = header_ref("WWW-Authenticate", required=True)
    return headers


def error_response(status: int) -> dict[str, Any]:
    meaning, types = ERRORS[status]
    headers = error_headers(status)
    description = f"{meaning} `error.type`: {', '.join(f'`{t}`' for t in types)}."
    return {"description": description, "headers": headers,
            "content": {JSON: {"schema": {"$ref": SCHEMA_REF.format(name=ErrorBody.__name__)}}}}  # fmt: skip


_PATH_PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}")


def openapi_path(path: str) -> str:
    """aiohttp's ``{name:regex}`` is OpenAPI's ``{name}``."""
    return _PATH_PARAM.sub(r"{\1}", path)


def path_parameters(path: str) -> list[dict[str, Any]]:
    return [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PATH_PARAM.findall(path)]  # fmt: skip


def parameter(param: Param) -> dict[str, Any]:
    return {"name": param.name, "in": param.where, "required": False, "schema": dict(param.schema),
            "description": param.description}  # fmt: skip


def operation_id(method: str, path: str) -> str:
    words = re.findall(r"[A-Za-z0-9]+", openapi_path(path).replace("{", "by_"))
    return "_".join([method.lower(), *words]) if words else f"{method.lower()}_root"


def tags_of(routes: Iterable[Registered]) -> list[dict[str, str]]:
    used = list(dict.fromkeys(r.doc.tag for r in routes if r.doc is not None))
    ordered = [t for t in TAGS if t in used] + [t for t in used if t not in TAGS]
    return [{"name": t, "description": TAGS[t]} if t in TAGS else {"name": t} for t in ordered]
