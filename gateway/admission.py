"""Admission: the cheap checks at the gateway's door, before any work is queued.

A request meets them in this order; each has its own status and stable error ``type``:

1. **API key** (401 ``unauthorized`` + ``WWW-Authenticate: Bearer``): ``Authorization: Bearer
   <key>`` on every route but ``OPEN_PATHS`` (the liveness and load-balancer probes, the status page). Checked by
   ``Admission.authenticate``, which ``gateway/app.py``'s handler wrapper calls first (a no-op
   when ``api_keys_file`` is not set).
2. **Rate per principal** (429 ``rate_limited`` + ``Retry-After``): the key, or the client address
   when no keys are configured. ``rate_limit_rpm`` is charged before the body is read
   (``admit_request``); ``rate_limit_ipm`` after parsing, per text or document (``admit_inputs``).
   Only work routes are metered: the limits share model capacity between clients, and a monitor
   polling ``/stats`` must neither starve nor be starved by its key's work.
3. Request limits (413/422) stay in the routes (``read_json``, ``check_inputs``).
4. **Memory guard** (503 ``memory_low`` + ``Retry-After``) on work routes while
   ``appliance.guards.MemoryGuard.low``.
5. Outstanding work per worker (429 ``queue_full``) is the router's (``gateway/router.py``).

Draining and loading (503) sit between 1 and 2 (``Context.admit``), so a request refused then
costs no rate token. The input count is known only once the body is parsed, so the input rate is
charged after the request limits of 3. A request the rate check refuses is not charged; one it
admits stays charged when a later check refuses it (a malformed body still cost a request).

One request with more inputs than a whole minute's ``rate_limit_ipm`` gets 422 ``too_many_inputs``,
not 429: waiting can never admit it, and a 429 would send clients (the ``openai`` SDK retries 429
by itself) into retries that cannot succeed; 422 says "split it", and charges nothing.

The keys file holds one key per line, and a line counts only once its newline is written: an
unterminated last line (an editor or ``echo >>`` caught mid-write) is ignored until it is
completed, so a prefix of a key is never accepted as one.

Hot-path cost: a dict lookup and a little arithmetic per check, nothing when a check is off. The
keys file is stat'ed at most once a second (``KEYS_CHECK_INTERVAL_S``) and re-read only when it
changed; the memory guard samples on its own timer. Time comes from an injected monotonic clock.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import Counter, OrderedDict
from typing import Callable

import msgspec
from aiohttp import web

from appliance.config import Config
from appliance.guards import RETRY_AFTER_S, MemoryGuard
from appliance.startup import StartupError
from gateway import errors

log = logging.getLogger("appliance.gateway.admission")

Clock = Callable[[], float]

# Liveness and readiness probes stay open: a load balancer or systemd has no key. So do the status
# page (``/``: static, no data; its script sends a key with its ``/stats`` calls), the API
# description and its docs page (``gateway/routes/docs.py``), which carry no data either.
OPEN_PATHS = frozenset({"/health", "/ready", "/", "/openapi.json", "/docs", "/docs/docs.js", "/docs/docs.css"})
# Open to reads only: ``POST /`` (TEI's embed route) computes, and needs the key like any work route.
OPEN_METHODS = frozenset({"GET", "HEAD"})
KEYS_CHECK_INTERVAL_S = 1.0
# Bounded memory: beyond this many principals the least recently seen bucket is dropped.
MAX_PRINCIPALS = 10_000
# Float rounding in the refill must not refuse a request that is due to the exact instant.
TOKEN_EPSILON = 1e-9
CHALLENGE = 'Bearer realm="appliance"'

PRINCIPAL = web.RequestKey("principal", str)


def is_open(method: str, path: str) -> bool:
    """Whether ``method path`` is served without a key: a read of one of ``OPEN_PATHS``."""
    return method in OPEN_METHODS and path in OPEN_PATHS


class KeysFileError(StartupError):
    """The API keys file cannot serve: unreadable, or no key in it. A startup error (exit 2)."""


# ---- API keys ---------------------------------------------------------------------------------
def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def read_keys(path: str) -> dict[bytes, str]:
    """sha256(key) -> principal id, from one key per line (blank lines and ``#`` lines skipped).
    Only complete lines count: text after the last newline is still being written.

    Keys are held only as digests: a lookup by digest leaks timing about the digest of what a
    client sent, never about a stored key, so it is a constant-time comparison in effect. The
    principal id (a digest prefix) names a key in counters and logs without revealing it."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise KeysFileError(f"api_keys_file {path!r} cannot be read: {exc}") from None
    complete, _, unterminated = text.rpartition("\n")
    if unterminated.strip():  # never logged: it may be most of a key
        log.warning("api_keys_file %s: the last line has no newline yet; it is ignored until it is completed", path)
    digests: dict[bytes, str] = {}
    for line in complete.splitlines():
        key = line.strip()
        if key and not key.startswith("#"):
            hashed = digest(key)
            digests[hashed] = "key:" + hashed.hex()[:12]
    if not digests:
        raise KeysFileError(f"api_keys_file {path!r} holds no key (one key per line, each ended by a newline; "
                            "`#` starts a comment)")  # fmt: skip
    return digests


Signature = tuple[int, int, int, int]


def file_signature(path: str) -> Signature:
    """Changes whenever the file is rewritten in place or replaced (new inode)."""
    st = os.stat(path)
    return st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino


class ApiKeys:
    """The keys of ``api_keys_file``, re-read when the file changes so keys rotate without a restart.

    A rewrite that leaves no readable key (mid-write, deleted, emptied) keeps the previous keys:
    a broken rotation must never turn into open access."""

    def __init__(self, path: str, clock: Clock = time.monotonic) -> None:
        self.path = path
        self.clock = clock
        self.signature: Signature | None = self._signature_or_fail()
        self.digests = read_keys(path)
        self.next_check = clock() + KEYS_CHECK_INTERVAL_S

    def _signature_or_fail(self) -> Signature:
        try:
            return file_signature(self.path)
        except OSError as exc:
            raise KeysFileError(f"api_keys_file {self.path!r} cannot be read: {exc}") from None

    def principal(self, authorization: str | None) -> str:
        """The principal id of a valid ``Bearer`` key; raises ``Unauthorized`` otherwise."""
        self.refresh()
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise errors.Unauthorized("missing API key: send `Authorization: Bearer <key>`",
                                      headers={"WWW-Authenticate": CHALLENGE})  # fmt: skip
        principal = self.digests.get(digest(token))
        if principal is None:
            raise errors.Unauthorized("invalid API key",
                                      headers={"WWW-Authenticate": f'{CHALLENGE}, error="invalid_token"'})  # fmt: skip
        return principal

    def refresh(self) -> None:
        """Re-read the file if it changed; stat it at most once per ``KEYS_CHECK_INTERVAL_S``."""
        now = self.clock()
        if now < self.next_check:
            return
        self.next_check = now + KEYS_CHECK_INTERVAL_S
        try:
            signature = file_signature(self.path)
        except OSError as exc:
            self._lost(f"api_keys_file {self.path!r} cannot be read: {exc}")
            return
        if signature == self.signature:
            return
        self.signature = signature  # a broken version is reported once, not every second
        try:
            self.digests = read_keys(self.path)
        except KeysFileError as exc:
            log.error("keeping the previous %d API key(s): %s", len(self.digests), exc)
            return
        log.info("api_keys_file %s changed: %d key(s) loaded", self.path, len(self.digests))

    def _lost(self, reason: str) -> None:
        if self.signature is not None:  # report once; read it again when it comes back
            self.signature = None
            log.error("keeping the previous %d API key(s): %s", len(self.digests), reason)


# ---- rate -------------------------------------------------------------------------------------
class Bucket:
    __slots__ = ("tokens", "stamp")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class TokenBuckets:
    """One token bucket per principal: capacity ``per_minute``, refilled continuously at
    ``per_minute / 60`` tokens a second, so a client can burst a minute's budget and then runs
    at the steady rate. At most ``max_principals`` buckets: the least recently used is dropped
    (it comes back full, which only the idlest of that many principals can gain from)."""

    def __init__(self, per_minute: int, max_principals: int = MAX_PRINCIPALS) -> None:
        self.capacity = float(per_minute)
        self.max_principals = max_principals
        self.buckets: OrderedDict[str, Bucket] = OrderedDict()

    def take(self, principal: str, cost: int, now: float) -> float:
        """Charge ``cost`` tokens and return 0.0, or charge nothing and return the seconds until
        ``cost`` tokens will be there. (Plain ifs, not min/max: this runs on every request.)"""
        bucket = self.buckets.get(principal)
        if bucket is None:
            bucket = self._add(principal, now)
        else:
            self.buckets.move_to_end(principal)
        # per-minute figures times seconds / 60, not a per-second rate: 2 / (10 / 60) is 12.000000000000002
        tokens = bucket.tokens + (now - bucket.stamp) * self.capacity / 60.0
        if tokens > self.capacity:
            tokens = self.capacity
        bucket.stamp = now
        if tokens + TOKEN_EPSILON >= cost:
            bucket.tokens = tokens - cost if tokens > cost else 0.0
            return 0.0
        bucket.tokens = tokens
        return (cost - tokens) * 60.0 / self.capacity

    def _add(self, principal: str, now: float) -> Bucket:
        bucket = self.buckets[principal] = Bucket(self.capacity, now)
        if len(self.buckets) > self.max_principals:
            self.buckets.popitem(last=False)
        return bucket


# ---- the door ---------------------------------------------------------------------------------
class AdmissionReport(msgspec.Struct):
    """``GET /stats``'s admission section: refusals by error type since start."""

    keys: int = 0  # API keys loaded; 0 = open access
    rate_limit_rpm: int = 0
    rate_limit_ipm: int = 0
    principals: int = 0  # principals with a rate bucket now
    memory_low: bool = False
    memory_available_bytes: int = 0
    refused: dict[str, int] = msgspec.field(default_factory=dict)


class Admission:
    """Keys, rate buckets and the memory guard, checked in the order of the module docstring."""

    def __init__(self, keys: ApiKeys | None = None, rpm: int = 0, ipm: int = 0,
                 guard: MemoryGuard | None = None, clock: Clock = time.monotonic,
                 max_principals: int = MAX_PRINCIPALS) -> None:  # fmt: skip
        self.keys = keys
        self.guard = guard
        self.clock = clock
        self.requests = TokenBuckets(rpm, max_principals) if rpm else None
        self.inputs = TokenBuckets(ipm, max_principals) if ipm else None
        self.refused: Counter[str] = Counter()

    @classmethod
    def from_config(cls, config: Config, guard: MemoryGuard | None = None,
                    clock: Clock = time.monotonic) -> Admission:  # fmt: skip
        """Raises ``KeysFileError`` when ``api_keys_file`` is set but holds no usable key."""
        keys = ApiKeys(config.api_keys_file, clock) if config.api_keys_file else None
        return cls(keys, config.rate_limit_rpm, config.rate_limit_ipm, guard, clock)

    def authenticate(self, request: web.Request) -> None:
        """Check 1, on every route but ``OPEN_PATHS`` (unknown paths too: 401 reveals no route)."""
        if self.keys is not None and not is_open(request.method, request.path):
            try:
                request[PRINCIPAL] = self.keys.principal(request.headers.get("Authorization"))
            except errors.Unauthorized:
                self.refused[errors.Unauthorized.type] += 1
                raise

    def admit_request(self, request: web.Request) -> None:
        """Check 2a, before the body is read: one request off the principal's minute."""
        if self.requests is not None:
            self._take(self.requests, self.principal(request), 1, "requests")

    def admit_inputs(self, request: web.Request, count: int) -> None:
        """Checks 2b and 4, once the body is parsed and its limits checked: ``count`` inputs off
        the principal's minute (422 if a minute could never hold them), then the memory guard."""
        if self.inputs is not None:
            if count > self.inputs.capacity:
                self.refused[errors.TooManyInputs.type] += 1
                raise errors.TooManyInputs(
                    f"{count} inputs exceed the whole per-minute budget of {int(self.inputs.capacity)} inputs "
                    "(rate_limit_ipm): this request can never be admitted; split it"
                )
            self._take(self.inputs, self.principal(request), count, "inputs")
        self.check_memory()

    def principal(self, request: web.Request) -> str:
        """Whose rate this request spends: the key ``authenticate`` found (work routes are never
        open), else the client address. Behind a reverse proxy every client shares the proxy's
        address: configure keys (forwarded headers are not trusted)."""
        if self.keys is not None:
            return request[PRINCIPAL]
        return request.remote or "local"

    def check_memory(self) -> None:
        guard = self.guard
        if guard is not None and guard.low:
            guard.refusals += 1
            self.refused[errors.MemoryLow.type] += 1
            raise errors.MemoryLow(guard.message(), retry_after=RETRY_AFTER_S)

    def _take(self, buckets: TokenBuckets, principal: str, cost: int, unit: str) -> None:
        wait = buckets.take(principal, cost, self.clock())
        if wait > 0.0:
            self.refused[errors.RateLimited.type] += 1
            who = "API key" if principal.startswith("key:") else f"client {principal}"
            raise errors.RateLimited(
                f"rate limit of {int(buckets.capacity)} {unit} per minute reached for this {who}; "
                f"room for {cost} more in {wait:.1f} s",
                retry_after=wait,
            )

    def report(self) -> AdmissionReport:
        guard = self.guard
        return AdmissionReport(
            keys=len(self.keys.digests) if self.keys is not None else 0,
            rate_limit_rpm=int(self.requests.capacity) if self.requests is not None else 0,
            rate_limit_ipm=int(self.inputs.capacity) if self.inputs is not None else 0,
            principals=max((len(b.buckets) for b in (self.requests, self.inputs) if b is not None), default=0),
            memory_low=guard is not None and guard.low,
            memory_available_bytes=guard.available if guard is not None else 0,
            refused=dict(self.refused),
        )  # fmt: skip

