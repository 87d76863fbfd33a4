"""Preloaded queries: embed an operator's list of common texts into the result cache before the
appliance reports ready, so their first request is already a hit.

The file (``preload_file``) is a JSON list of
``{"text": str, "model": str, "frequency": number}``; ``model`` may be left out (the main model)
and ``frequency`` too (0). It is read and validated at start, before any worker is spawned, so a
bad file fails the start at once with a message that names the file and the entry
(``read_preload_file`` raises ``PreloadError``). Once the workers are up, ``preload`` embeds the
entries most frequent first, in chunks (one backend call per model per chunk, so the workers
batch them), and stops as soon as the cache is full: preloading never evicts, so the budget goes
to the most frequent texts. An entry naming a model this appliance does not serve (or one that
cannot embed) is a configuration error that fails the start (``PreloadError``, raised once the
workers have said which models they hold); texts too long to cache, empty ones and duplicates
are logged and skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from pathlib import Path
from typing import Callable

import msgspec

from appliance.protocol import can_embed
from appliance.startup import StartupError
from gateway import errors
from gateway.backend import ModelCard
from gateway.cached_backend import CachedBackend

log = logging.getLogger("appliance.preload")

CHUNK = 64  # texts per backend call: big enough to batch well, small enough to stop near "full"


class PreloadError(StartupError):
    """The preload file cannot be used; the message names the file and what is wrong."""


class PreloadQuery(msgspec.Struct, kw_only=True):
    text: str
    model: str | None = None
    frequency: float = 0.0


def read_preload_file(path: str) -> list[PreloadQuery]:
    """The file's entries ([] when no file is configured); raises PreloadError."""
    if not path:
        return []
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise PreloadError(f"preload_file {path!r} cannot be read: {exc.strerror or exc}") from None
    try:
        return msgspec.json.decode(raw, type=list[PreloadQuery])
    except msgspec.ValidationError as exc:  # names the entry, e.g. "at `$[3].text`"
        raise PreloadError(f"preload_file {path!r}: expected a list of {{text, model, frequency}}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise PreloadError(f"preload_file {path!r} is not valid JSON: {exc}") from None


def plan(queries: list[PreloadQuery], cards: list[ModelCard], max_chars: int) -> list[tuple[str, str]]:
    """(model, text) pairs to embed, most frequent first (ties keep file order), without
    duplicates or uncacheable texts (logged); raises PreloadError for a model not served."""
    main = next((card.name for card in cards if card.main), "")
    check_models(queries, cards, main)
    skipped: Counter[str] = Counter()
    seen: set[tuple[str, str]] = set()
    pairs: list[tuple[str, str]] = []
    for query in sorted(queries, key=lambda q: -q.frequency):
        model = query.model or main
        reason = skip_reason(query.text, max_chars)
        if reason is None and (model, query.text) in seen:
            reason = "duplicate"
        if reason is not None:
            skipped[reason] += 1
            continue
        seen.add((model, query.text))
        pairs.append((model, query.text))
    for reason, count in sorted(skipped.items()):
        log.warning("preload: skipped %d entr%s: %s", count, "y" if count == 1 else "ies", reason)
    return pairs


def check_models(queries: list[PreloadQuery], cards: list[ModelCard], main: str) -> None:
    embedding = {card.name for card in cards if can_embed(card.kind)}
    for index, query in enumerate(queries):
        if (query.model or main) not in embedding:
            raise PreloadError(f"preload_file entry {index} names model {query.model!r}, which is not an "
                               f"embedding model served here (embedding models: {', '.join(sorted(embedding))})")


def skip_reason(text: str, max_chars: int) -> str | None:
    if not text:
        return "empty text"
    if len(text) > max_chars:
        return f"text longer than cache_max_text_chars ({max_chars})"
    return None


async def preload(backend: CachedBackend, queries: list[PreloadQuery],
                  stopping: Callable[[], bool] = lambda: False) -> int:  # fmt: skip
    """Embed ``queries`` into ``backend``'s cache, most frequent first, until it is full, all
    are in, or ``stopping()``; the number of texts cached."""
    if not queries:
        return 0
    if not backend.cache.enabled:
        log.warning("preload: the cache is disabled (cache_bytes = 0); %d entries not loaded", len(queries))
        return 0
    cards = backend.models()
    dims = {card.name: card.dim for card in cards}
    pairs = plan(queries, cards, backend.config.cache_max_text_chars)
    stored, full = 0, False
    for start in range(0, len(pairs), CHUNK):
        if full or stopping():
            break
        done, full = await load_chunk(backend, pairs[start : start + CHUNK], dims)
        stored += done
    log.info("preload: %d of %d texts cached (%d bytes)%s", stored, len(pairs), backend.cache.bytes,
             "; the cache is full" if full else "",
             extra={"event": "preload_done", "cached": stored, "texts": len(pairs), "bytes": backend.cache.bytes,
                    "cache_full": full})  # fmt: skip
    return stored


async def load_chunk(backend: CachedBackend, pairs: list[tuple[str, str]], dims: dict[str, int]) -> tuple[int, bool]:
    """One chunk, one backend call per model in it: (texts stored, whether the cache is full)."""
    by_model: dict[str, list[str]] = {}
    for model, text in pairs:
        by_model.setdefault(model, []).append(text)
    stored = 0
    for model, texts in by_model.items():
        room = backend.cache.room(dims[model] * 4)  # float32
        fitting = texts[:room]
        deadline = asyncio.get_running_loop().time() + backend.config.request_timeout
        try:
            done = await backend.warm(model, fitting, deadline=deadline) if fitting else 0
        except errors.ApiError as exc:  # one bad chunk must not stop the start
            log.warning("preload: %d text(s) for %r failed (%s): %s", len(fitting), model, exc.type, exc.message)
            continue
        stored += done
        if done < len(texts):
            return stored, True
    return stored, False
