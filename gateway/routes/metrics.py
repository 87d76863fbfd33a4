"""``GET /metrics``: the appliance in Prometheus's text format (``gateway/prometheus.py``).

The same access rule as ``/stats``: an API key when keys are configured, no rate limit (a
scraper must neither starve nor be starved by its key's work). The jobs' queue is read first,
since the store answers from its own thread and a Collector cannot await; the exposition is
formatted on the exporter's render thread, off the event loop.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gateway import readings
from gateway.context import CONTEXT
from gateway.prometheus import EXPORTER
from gateway.route_docs import PROMETHEUS, TEXT, RouteDoc
from gateway.routes.answers import AddRoute


async def metrics(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    jobs = await ctx.jobs.queue() if ctx.jobs is not None and ctx.jobs.store is not None else None
    body = await request.app[EXPORTER].render(readings.read(ctx), jobs)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def register(add: AddRoute) -> None:
    add("GET", "/metrics", metrics, RouteDoc("Prometheus metrics (text exposition format)", "operations",
                                             content={PROMETHEUS: TEXT}))  # fmt: skip
