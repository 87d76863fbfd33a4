"""The route table: one module per API family, each with a ``register(add)``.

``ollama``, ``openai``, ``batch``, ``stream``, ``rerank``, ``tei``, ``jobs``, ``system``,
``metrics``, ``docs`` and ``page`` each add their handlers through ``add(method, path, handler, doc)``, ``doc``
a ``RouteDoc`` for ``GET /openapi.json`` (``gateway/route_docs.py``); ``gateway/app.py`` wraps
every handler (the API key check, the one error mapping, request ids, timing and telemetry) as it
registers it. A work route
follows the steps in ``gateway/context.py``; ``checks`` and ``answers`` are the request and
response helpers they share. Routes raise ``gateway.errors`` types; only the wrapper turns them
into responses (``tei``'s handlers answer them in TEI's shape: ``gateway/tei.py`` ``speaks_tei``).

``page`` serves the status page at ``/``: a static file whose script reads ``/stats``.

``ollama_legacy`` serves Ollama's older ``/api/embeddings`` and ``cohere_v2`` Cohere's ``/v2/rerank``.
"""

from __future__ import annotations

from gateway.routes import batch, docs, jobs, metrics, ollama, openai, page, rerank, stream, system, tei
from gateway.routes import cohere_v2, ollama_legacy
from gateway.routes.answers import AddRoute

FAMILIES = (system, ollama, openai, batch, stream, rerank, tei, jobs, metrics, docs, page)
FAMILIES += (ollama_legacy, cohere_v2)


def register(add: AddRoute) -> None:
    """Every route of the HTTP contract."""
    for family in FAMILIES:
        family.register(add)
