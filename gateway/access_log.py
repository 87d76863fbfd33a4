"""The access log: one structured line per sampled HTTP request, off unless ``access_log = true``.

aiohttp writes an access line through the ``AbstractAccessLogger`` its runner is given, after
the answer is sent; ``runner_options`` is what the runner is given:

- **off** (the default, or ``access_log_sample = 0``): ``access_log=None``. aiohttp then builds no
  logger at all and checks one attribute per request: nothing is formatted, counted or logged.
- **on**: ``SampledAccessLog``, whose every instance (aiohttp makes one per connection) shares one
  ``Sampler``: deterministic, so ``access_log_sample = 0.5`` logs exactly every second request
  whichever connection it came on, and a test can count the lines.

A line is the event ``http_access`` on the ``gateway.access`` logger with the fields ``method``,
``path`` (no query string: it may carry what the client would not want logged), ``status``,
``duration_ms`` (from the request head to the last byte of the answer handed to the socket),
``request_id`` (the answer's ``X-Request-ID``) and ``remote``.

The sample defaults to 1: an operator turns the log on to find requests, and a sampled log loses
the one being looked for; at a rate where a line per request costs too much, lower it.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from appliance.config import Config

LOGGER = "gateway.access"
# the sample's resolution: 0.000001; integer credits, so a fraction's pattern never drifts
SCALE = 1_000_000


class Sampler:
    """Takes ``fraction`` of the calls, evenly spread: each call adds the fraction to a credit and
    a call that brings the credit to a whole one is taken (0.25: the 4th, 8th, 12th...)."""

    def __init__(self, fraction: float) -> None:
        self.step = round(fraction * SCALE)
        self.credit = 0

    def take(self) -> bool:
        self.credit += self.step
        if self.credit < SCALE:
            return False
        self.credit -= SCALE
        return True


class SampledAccessLog(AbstractAccessLogger):
    """One ``http_access`` line per request the shared ``sampler`` takes."""

    __slots__ = ()
    sampler = Sampler(1.0)  # replaced per appliance by ``sampled_access_log``

    @property
    def enabled(self) -> bool:
        # read once per connection by aiohttp: below INFO it never calls ``log`` at all
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        if not self.sampler.take():
            return
        fields = access_fields(request, response, time)
        self.logger.info("%s %s %d %.1fms", fields["method"], fields["path"], fields["status"],
                         fields["duration_ms"], extra=fields)  # fmt: skip


def access_fields(request: BaseRequest, response: StreamResponse, time: float) -> dict[str, Any]:
    return {"event": "http_access", "method": request.method, "path": request.path, "status": response.status,
            "duration_ms": round(time * 1000, 3), "request_id": response.headers.get("X-Request-ID"),
            "remote": request.remote}  # fmt: skip


def sampled_access_log(fraction: float) -> type[SampledAccessLog]:
    """A ``SampledAccessLog`` class with a sampler of its own: aiohttp takes a class, not an
    instance, and makes one per connection, so the count every connection shares lives here."""
    return type("SampledAccessLog", (SampledAccessLog,), {"__slots__": (), "__module__": __name__, "sampler": Sampler(fraction)})


def runner_options(config: Config) -> dict[str, Any]:
    """The runner's access log arguments for ``config``."""
    if not config.access_log or config.access_log_sample <= 0:
        return {"access_log": None}
    return {"access_log_class": sampled_access_log(config.access_log_sample), "access_log": logging.getLogger(LOGGER)}
