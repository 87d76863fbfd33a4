"""The aiohttp application: routes, the one error mapping, and the headers every answer carries.

``build_app(config, backend, admission)`` is all the wiring needs; ``appliance/serving.py`` adds
the appliance's resources (workers, supervision, guards, preload, watchdog) to the returned app
as cleanup contexts. Every handler is registered wrapped by
``handled``, the ONE place where errors become responses: a ``gateway.errors.ApiError`` becomes
``{"error": {"message", "type", "code"}}`` with its status (and ``Retry-After`` and any headers it
carries); aiohttp's own 404/405/413 get the same shape; anything else is a 500 ``internal_error``
with a log line and no traceback for the client. The API key check (``Admission.authenticate``)
runs first inside it, so its 401s are mapped too; a catch-all route (``unmatched``) sends unknown
paths and wrong methods through the same wrapper. Each route's ``RouteDoc`` is recorded as it is
added (``API_DESCRIPTION``), and ``GET /openapi.json`` describes exactly what was registered.
Every response gets ``X-Request-ID`` (the client's, or a fresh one) and a ``Server-Timing``
``total`` entry; routes that reached the backend add the worker, stage timings and cache state.
A streaming route must set its headers before ``prepare()``: once prepared, they are sent.
The same wrapper records every finished request, streams included, in the app's ``Telemetry``
(``gateway/telemetry.py``) under the path template it was registered with; the ``/metrics``
exporter (``gateway/prometheus.py``) is made here too, one registry per app.

Why a wrapper and not an aiohttp middleware: any middleware makes aiohttp run its own per-app
middleware too, and measured with wrk on this 2-core box a single do-nothing middleware cut a
bare aiohttp app from ~11,000 to ~8,500 requests/s. The cache-hit path is that sensitive.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import secrets
import time
from typing import Mapping

from aiohttp import web

from appliance.config import Config
from gateway import errors, routes
from gateway.admission import Admission
from gateway.backend import Backend
from gateway.encoding import encode
from gateway.jobs.service import Jobs
from gateway.context import CONTEXT, Context, REQUEST_ID
from gateway.openapi import API_DESCRIPTION, ApiDescription
from gateway.prometheus import EXPORTER, Exporter
from gateway.responses import ErrorBody, ErrorDetail
from gateway.route_docs import RouteDoc
from gateway.routes.answers import Handler, JSON
from gateway.telemetry import CLIENT_CLOSED, ERROR_TYPE, SERVED, UNMATCHED, RouteCounters, Telemetry

log = logging.getLogger("appliance.gateway")

# aiohttp raises these itself (no route, wrong method, body over client_max_size).
HTTP_ERROR_TYPES = {
    404: errors.NotFound.type,
    405: "method_not_allowed",
    413: errors.BodyTooLarge.type,
}
MAX_REQUEST_ID = 128
UNMATCHED_PATH = "/{unmatched_path:.*}"


def build_app(config: Config, backend: Backend, admission: Admission | None = None,
              jobs: Jobs | None = None, telemetry: Telemetry | None = None) -> web.Application:  # fmt: skip
    """``admission`` defaults to one built from ``config`` (keys and rate limits, no memory guard);
    that raises ``gateway.admission.KeysFileError`` when ``api_keys_file`` holds no usable key.
    Without ``jobs`` the job routes answer 404. ``telemetry`` defaults to a fresh one on the
    wall clock."""
    admission = admission if admission is not None else Admission.from_config(config)
    telemetry = telemetry if telemetry is not None else Telemetry()
    app = web.Application(client_max_size=config.max_body_bytes)
    app[CONTEXT] = context = Context(config=config, backend=backend, started=time.time(), admission=admission,
                                     jobs=jobs, telemetry=telemetry)  # fmt: skip
    app[EXPORTER] = exporter = Exporter(context)
    app.cleanup_ctx.append(exporter.running)
    app[API_DESCRIPTION] = description = ApiDescription()

    def add(method: str, path: str, handler: Handler, doc: RouteDoc | None = None, /) -> None:
        description.record(method, path, doc)
        wrapped = handled(handler, admission, telemetry, telemetry.route(path))
        if method == "GET":
            app.router.add_get(path, wrapped)  # and HEAD
        else:
            app.router.add_route(method, path, wrapped)

    routes.register(add)
    # last: only what nothing else takes
    app.router.add_route("*", UNMATCHED_PATH, handled(unmatched, admission, telemetry, telemetry.route(UNMATCHED)))
    return app


def handled(handler: Handler, admission: Admission, telemetry: Telemetry, counters: RouteCounters) -> Handler:
    """``handler`` with the key check, the error mapping, the request id and timing stamps, and
    the request recorded in ``counters`` (its route's) once answered."""

    async def handle(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter_ns()
        request_id = request_id_of(request)
        request[REQUEST_ID] = request_id
        try:
            response = await answer(request, handler, admission)
        except asyncio.CancelledError:  # the client left (handler_cancellation): counted as 499
            telemetry.record(counters, request.method, CLIENT_CLOSED, time.perf_counter_ns() - started,
                             request.get(SERVED), None)  # fmt: skip
            raise
        elapsed = time.perf_counter_ns() - started
        if not response.prepared:
            stamp(response, request_id, elapsed)
        status = response.status
        telemetry.record(counters, request.method, status, elapsed, request.get(SERVED),
                         request.get(ERROR_TYPE) if status >= 400 else None)  # fmt: skip
        return response

    return handle


async def unmatched(request: web.Request) -> web.StreamResponse:
    """No route took the request: 405 (with ``Allow``) when the path exists for other methods,
    else 404. Both raised as aiohttp's own exceptions, so they map exactly as before."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        match, methods = await resource.resolve(request)
        if match is None:  # the path is this resource's but the method is not (the catch-all matches)
            allowed |= methods
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


async def answer(request: web.Request, handler: Handler, admission: Admission) -> web.StreamResponse:
    """The handler's response, or the error it (or the key check) raised as a JSON error response."""
    try:
        admission.authenticate(request)
        return await handler(request)
    except errors.ApiError as exc:
        request[ERROR_TYPE] = exc.type
        return error_response(exc.status, exc.type, exc.message, exc.retry_after, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return http_error_response(request, exc)
    except Exception:
        request_id = request[REQUEST_ID]
        request[ERROR_TYPE] = errors.Internal.type
        log.exception("request %s (%s %s) failed", request_id, request.method, request.path)
        return error_response(500, errors.Internal.type, f"internal error (request id {request_id})")


def http_error_response(request: web.Request, exc: web.HTTPException) -> web.Response:
    kind = HTTP_ERROR_TYPES.get(exc.status, errors.BadRequest.type if exc.status < 500 else errors.Internal.type)
    if exc.status == 404:
        message = f"no route {request.method} {request.path}"
    elif exc.status == 405:
        message = f"{request.method} is not allowed on {request.path} (allowed: {exc.headers.get('Allow', '')})"
    elif exc.status == 413:
        message = f"request body exceeds the {request.client_max_size}-byte limit"
    else:
        message = exc.text or exc.reason
    request[ERROR_TYPE] = kind
    response = error_response(exc.status, kind, message)
    if "Allow" in exc.headers:  # a 405 must say which methods are allowed
        response.headers["Allow"] = exc.headers["Allow"]
    return response


def error_response(status: int, kind: str, message: str, retry_after: float | None = None,
                   headers: Mapping[str, str] | None = None) -> web.Response:  # fmt: skip
    body = encode(ErrorBody(ErrorDetail(message=message, type=kind, code=status)))
    response = web.Response(body=body, status=status, content_type=JSON, headers=headers)
    if retry_after is not None:
        # HTTP wants whole seconds; round up so a client never comes back too early.
        response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return response


# Generated ids: a random per-process prefix and a counter, 16 hex digits. Unique is all an id
# must be (it is no secret), and a counter costs no getrandom() system call per request.
_ID_PREFIX = secrets.randbits(32) << 32
_id_counter = itertools.count()


def request_id_of(request: web.Request) -> str:
    """The client's ``X-Request-ID`` when it is sane to echo, else 16 hex digits of our own."""
    sent = request.headers.get("X-Request-ID")
    if sent and len(sent) <= MAX_REQUEST_ID and sent.isascii() and sent.isprintable():
        return sent
    return f"{_ID_PREFIX | (next(_id_counter) & 0xFFFFFFFF):016x}"


def stamp(response: web.StreamResponse, request_id: str, elapsed_ns: int) -> None:
    response.headers["X-Request-ID"] = request_id
    total = f"total;dur={elapsed_ns / 1e6:.3f}"
    stages = response.headers.get("Server-Timing")
    response.headers["Server-Timing"] = f"{stages},{total}" if stages else total
