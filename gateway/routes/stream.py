"""``POST /api/embed/stream``: the ``/api/embed/batch`` body in, Server-Sent Events out, so a
client embedding thousands of texts gets vectors as they are computed instead of one answer at
the end, and knows how far along it is.

The body is ``BatchEmbed`` (``gateway/schemas.py``): ``inputs`` (groups of texts), ``model``,
``truncate``, ``use_cache``; indices count over every group in order; ``batch_size`` and
``on_error`` are ignored (a stream always reports a failed input and goes on). Anything wrong
before the stream starts (the body, the model, the limits, 401, 429, 503) is an ordinary JSON
error with its status. Once it has started (200, ``text/event-stream``), every failure is an
event:

    event: result     data: [{"index": i, "embedding": [...]}, ...]   a chunk's vectors
    event: error      data: {"index", "type", "message"}             one input that failed
    event: progress   data: {"done", "failed", "total"}               after each chunk
    event: complete   data: {"total", "failed", "duration_ms"}        always last

and ``: keep-alive`` comment lines every ``HEARTBEAT_S`` while nothing else was sent, so that an
idle proxy does not close a long stream.

The inputs are cut into chunks of ``CHUNK_INPUTS``; up to ``CHUNKS_IN_FLIGHT`` are computed at
once, each a ``Context.embed`` call (through ``batch.Items``, so that an input error fails only
its input), and each is sent as it finishes: events come in COMPLETION order, not input order.
A client that disconnects cancels the handler (``handler_cancellation``), or is noticed at the
next write; either way the chunks not yet started never are, and the running ones are
cancelled, which withdraws only the wait: the result cache's shared computation decides what
happens to the work it already sent (``gateway/cached_backend.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Sequence

import msgspec
from aiohttp import web

from gateway import encoding, errors
from gateway.context import REQUEST_ID, Context
from gateway.responses import StreamComplete, StreamError, StreamItem, StreamProgress
from gateway.route_docs import EVENT_STREAM, WORK_ERRORS, Events, RouteDoc
from gateway.routes.answers import AddRoute
from gateway.routes.batch import Items, read_batch
from gateway.routes.options import OPTIONS_DOC, EmbedChoice, documented
from gateway.schemas import BatchEmbed
from gateway.telemetry import SERVED, Served

CHUNK_INPUTS = 64  # inputs per chunk: one Context.embed call, one result event
CHUNKS_IN_FLIGHT = 3  # enough to keep every worker fed while results stream out
HEARTBEAT_S = 15.0  # under the idle timeouts of common proxies (nginx's default is 60 s)
KEEP_ALIVE = b": keep-alive\n\n"

log = logging.getLogger("appliance.gateway")


def event(name: str, data: msgspec.Struct | list[StreamItem]) -> bytes:
    """One SSE event; the JSON is on one line, as a ``data:`` field needs."""
    return b"event: " + name.encode() + b"\ndata: " + encoding.encode(data) + b"\n\n"


class Stream:
    """One request's stream: its chunks in flight, what has been sent, the response."""

    def __init__(self, ctx: Context, response: web.StreamResponse, model: str, texts: Sequence[str],
                 body: BatchEmbed, choice: EmbedChoice) -> None:  # fmt: skip
        self.ctx = ctx
        self.choice = choice
        self.response = response
        self.model = model
        self.texts = texts
        self.body = body
        self.done = 0
        self.failed = 0
        self.cache_hits = 0
        self.started = time.perf_counter()

    async def run(self) -> None:
        """1) keep up to CHUNKS_IN_FLIGHT chunks running 2) wait for one, beating the heartbeat
        3) send what finished 4) last, ``complete``. Whatever ends it, the rest is cancelled."""
        waiting = list(range(0, len(self.texts), CHUNK_INPUTS))[::-1]  # chunk offsets, next last
        running: set[asyncio.Task[Items]] = set()
        try:
            while waiting or running:
                while waiting and len(running) < CHUNKS_IN_FLIGHT:
                    running.add(asyncio.create_task(self.compute(waiting.pop())))
                finished, running = await asyncio.wait(running, timeout=HEARTBEAT_S,
                                                       return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                if not finished:
                    await self.response.write(KEEP_ALIVE)
                for task in finished:
                    await self.send(task.result())
            await self.response.write(event("complete", self.summary()))
        finally:
            for task in running:
                task.cancel()
            if running:  # cancelled waits end at once; no chunk outlives its request
                await asyncio.wait(running)

    async def compute(self, offset: int) -> Items:
        """One chunk; a request error (429, 503, 504, ...) fails every input it had left."""
        items = Items(self.texts[offset : offset + CHUNK_INPUTS], offset)
        try:
            await items.embed(self.ctx, self.model, self.body.truncate, self.choice, use_cache=self.body.use_cache,
                              json=True)  # fmt: skip
        except errors.ApiError as exc:
            items.fail_rest(exc)
        except Exception:  # a bug: logged, and its inputs fail; the stream still ends with `complete`
            log.exception("stream chunk at input %d failed", offset)
            items.fail_rest(errors.Internal("internal error"))
        return items

    async def send(self, items: Items) -> None:
        """A finished chunk: its vectors, its failures, then the progress, in one write."""
        out = []
        if items.live:
            rows = [StreamItem(items.offset + i, row) for i, row in zip(items.live, items.served_rows())]
            out.append(event("result", rows))
        for index, error in sorted(items.failures.items()):
            out.append(event("error", StreamError(items.offset + index, error.type, error.message)))
        self.done += len(items.live)
        self.failed += len(items.failures)
        self.cache_hits += items.outcome.cache_hits
        out.append(event("progress", StreamProgress(self.done, self.failed, len(self.texts))))
        await self.response.write(b"".join(out))

    def served(self) -> Served:
        """What the stream sent, for the telemetry (no stages: its chunks had their own)."""
        return Served(self.done, self.cache_hits, self.done - self.cache_hits)

    def summary(self) -> StreamComplete:
        duration_ms = round((time.perf_counter() - self.started) * 1000, 3)
        return StreamComplete(total=len(self.texts), failed=self.failed, duration_ms=duration_ms)


async def embed_stream(request: web.Request) -> web.StreamResponse:
    ctx, body, model, texts, choice = await read_batch(request)  # its errors are JSON: nothing is sent yet
    response = await open_stream(request)
    stream = Stream(ctx, response, model, texts, body, choice)
    try:
        await stream.run()
    except ConnectionResetError:  # the client left mid-stream; nothing is left to tell it
        pass
    finally:
        request[SERVED] = stream.served()
    return response


async def open_stream(request: web.Request) -> web.StreamResponse:
    """The 200 and its headers, sent now: ``handled`` cannot stamp a prepared response, so the
    request id goes on here (``gateway/app.py``)."""
    response = web.StreamResponse(headers={
        "Content-Type": EVENT_STREAM,
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",  # nginx: pass each event on, do not buffer the stream
        "X-Request-ID": request[REQUEST_ID],
    })  # fmt: skip
    await response.prepare(request)
    return response


def register(add: AddRoute) -> None:
    add("POST", "/api/embed/stream", embed_stream, RouteDoc(
        "Embed groups of texts as server-sent events, as they are computed", "embeddings", body=documented(BatchEmbed),
        example={"inputs": [["a", "b", "c"]]}, errors=WORK_ERRORS,
        content={EVENT_STREAM: Events({"result": list[StreamItem], "error": StreamError, "progress": StreamProgress,
                                       "complete": StreamComplete})},
        description="Errors before the stream starts are JSON with their status; after the 200, a failed input "
                    "is an `error` event and the stream goes on. Events come in completion order; `complete` "
                    "is always last; `: keep-alive` comments come every 15 s of silence. " + OPTIONS_DOC))
