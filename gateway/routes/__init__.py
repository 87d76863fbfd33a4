"""The route table: one module per API family, each with a ``register(add)``.

``ollama``, ``openai``, ``batch``, ``stream``, ``rerank``, ``jobs``, ``system`` and ``metrics``
each add their handlers through ``add(method, path, handler)``; ``gateway/app.py`` wraps every
handler (the API key check, the one error mapping, request ids, timing and telemetry) as it
registers it. A work route
follows the steps in ``gateway/context.py``; ``checks`` and ``answers`` are the request and
response helpers they share. Routes raise ``gateway.errors`` types; only the wrapper turns them
into responses.
"""

from __future__ import annotations

from gateway.routes import batch, jobs, metrics, ollama, openai, rerank, stream, system
from gateway.routes.answers import AddRoute

FAMILIES = (system, ollama, openai, batch, stream, rerank, jobs, metrics)


def register(add: AddRoute) -> None:
    """Every route of the HTTP contract."""
    for family in FAMILIES:
        family.register(add)
