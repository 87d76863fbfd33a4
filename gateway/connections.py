"""What one HTTP connection may hold, and for how long: the gateway's guard against slow clients.

aiohttp alone keeps an idle keep-alive connection about an hour, waits for a request body and for
a client to take its answer without any limit, and accepts every connection the listener hands
it. Idle sockets, a body sent a byte a minute or a client that never reads an 8 MB answer would
each hold a socket and its memory for as long as the client likes, before any API key is asked
for. Four bounds, all from ``Config``:

1. **keepalive_timeout**: aiohttp's own timer (``RequestHandler(keepalive_timeout=...)``). It is
   armed when the connection is made and again after each answer, is not pushed back by arriving
   bytes, and closes the connection if no complete request head has come by then: it covers idle
   sockets and request heads sent slowly alike.
2. **body_read_timeout**: the whole body must have come within this many seconds of the request
   head (a deadline, not an idle timer: a byte a second must not keep it alive). Past it the body
   stream fails with ``HTTPRequestTimeout``, so the handler's ``request.read()`` raises and the
   client gets a **408** JSON error (``gateway/app.py``'s ``answer`` maps ``HTTPException``s),
   sent with ``Connection: close``, and the connection closes: the rest of the body is never read,
   so the connection cannot carry another request. The body stream is also ended (``feed_eof``) and
   the protocol told to ``close``, which stops aiohttp from reading and discarding the rest of the
   body for its lingering time. A body that has fully arrived is never cut, however long the
   handler then takes.
3. **write_timeout**: an answer the client takes nothing of for this long is dropped. The
   transport's write buffer limits are set to zero, so asyncio calls ``pause_writing`` whenever
   any byte is left in the process (the kernel's socket buffer is full) and ``resume_writing``
   when the buffer is empty again. ``pause_writing`` arms a timer; when it fires, a buffer that
   has not shrunk since the timer was armed means the client is stalled and the transport is
   **aborted** (which frees the buffered answer at once; ``close`` would wait for it to drain); a
   buffer that has shrunk re-arms it, so a slow but reading client is never cut off.
   Zero watermarks rather than asyncio's 64 KiB: a timer armed only above the high-water mark
   would never see an answer that stalls below it, and such a buffer outlives the connection
   (``close`` waits for it forever while the peer's window stays shut).
4. **max_connections**: connections past the cap are refused at accept: the server writes a
   ``503`` with ``Connection: close`` and closes, without reading. Refusing at once (rather than
   pausing the listener) tells the client now instead of leaving it in the accept queue until it
   gives up, costs one accept and one small write, and keeps the queue moving, so a slot freed by
   the timers above is taken by the next client. The count is of live connections, idle ones
   included: those are the ones the first timer reclaims.

Request heads are bounded by aiohttp's parser defaults (8190-byte lines and fields, 128 headers)
and each connection's read buffer by ``read_bufsize`` (64 KiB), so none of these needs a key.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from appliance.config import Config

log = logging.getLogger("gateway.connections")

_REFUSAL_BODY = b'{"error":{"message":"too many open connections","type":"overloaded","code":503}}'
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_REFUSAL_BODY), _REFUSAL_BODY)
)


class GuardedRunner(web.AppRunner):
    """``web.AppRunner`` whose server makes ``Connection``s: the four bounds of this module."""

    def __init__(self, app: web.Application, config: Config, **kwargs: Any) -> None:
        super().__init__(app, keepalive_timeout=config.keepalive_timeout, **kwargs)
        self._config = config  # BaseRunner has __slots__; this subclass keeps a __dict__

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # runs the app's startup and freezes it
        return Connections(plain, self._config)


class Connections(web.Server):
    """The protocol factory: counts live connections and wraps the request handler in the body
    deadline. Built from the app's own ``Server`` so every aiohttp setting it carries is kept."""

    def __init__(self, plain: web.Server, config: Config) -> None:
        super().__init__(plain.request_handler, request_factory=plain.request_factory,
                         handler_cancellation=plain.handler_cancellation, loop=plain._loop,
                         **plain._kwargs)  # fmt: skip
        self.max_connections = config.max_connections
        self.write_timeout = config.write_timeout
        self.body_read_timeout = config.body_read_timeout
        self.live = 0
        self.refused = 0
        self._handle = self.request_handler
        self.request_handler = self.handle_within_body_deadline

    def __call__(self) -> RequestHandler:
        return Connection(self, loop=self._loop, **self._kwargs)

    def handle_within_body_deadline(self, request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
        if request.content.is_eof():  # no body, or all of it already here: no timer, no frame of ours
            return self._handle(request)
        return self._handle_under_deadline(request)

    async def _handle_under_deadline(self, request: web.BaseRequest) -> web.StreamResponse:
        deadline = BodyDeadline(request, self.body_read_timeout)
        try:
            response = await self._handle(request)
        finally:
            deadline.cancel()
        if deadline.expired:
            response.force_close()  # the unread rest of the body makes the connection unusable
        return response


class BodyDeadline:
    """Fails the body stream of one request if all of it has not come in time."""

    def __init__(self, request: web.BaseRequest, timeout: float) -> None:
        self.request = request
        self.timeout = timeout
        self.expired = False
        self._timer = asyncio.get_running_loop().call_later(timeout, self.expire)

    def cancel(self) -> None:
        self._timer.cancel()

    def expire(self) -> None:
        body = self.request.content
        if body.is_eof():
            return
        self.expired = True
        # order matters: the exception first, so a waiting read() raises instead of returning a
        # partial body; then eof, so aiohttp does not linger reading the rest; then close, so no
        # more bytes are fed into the ended stream
        body.set_exception(web.HTTPRequestTimeout(text=f"request body not received within {self.timeout:g}s"))
        body.feed_eof()
        self.request.protocol.close()


class Connection(RequestHandler):
    """aiohttp's protocol plus the connection cap and the write timeout."""

    __slots__ = ("_counted", "_stall")

    def __init__(self, manager: Connections, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._counted = False
        self._stall: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        manager = self._manager
        assert isinstance(manager, Connections)
        transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass
        if manager.live >= manager.max_connections:
            manager.refused += 1
            self._manager = None  # connection_lost then has nothing to undo
            transport.write(REFUSAL)
            transport.close()
            return
        manager.live += 1
        self._counted = True
        transport.set_write_buffer_limits(high=0, low=0)  # see the module docstring, 3.
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._counted:
            self._counted = False
            manager = self._manager
            assert isinstance(manager, Connections)
            manager.live -= 1
        self._disarm()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        transport = self.transport
        if transport is not None and isinstance(self._manager, Connections):
            self._arm(transport, self._manager.write_timeout)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._disarm()

    def _arm(self, transport: asyncio.Transport, timeout: float) -> None:
        # the timer holds the transport, not self.transport: aiohttp drops that reference when it
        # closes the connection, while the buffer still waits for the client
        self._disarm()
        size = transport.get_write_buffer_size()
        self._stall = self._loop.call_later(timeout, self._check_stall, transport, size, timeout)

    def _disarm(self) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None

    def _check_stall(self, transport: asyncio.Transport, size_then: int, timeout: float) -> None:
        self._stall = None
        size = transport.get_write_buffer_size()
        if 0 < size < size_then:  # the client took some: it is slow, not stalled
            self._arm(transport, timeout)
            return
        if size:
            log.debug("dropping a %d-byte answer its client took nothing of in %gs", size, timeout)
            transport.abort()  # frees the buffer now; connection_lost follows
