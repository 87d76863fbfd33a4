"""What the caching tests share (``tests/gateway/test_cached_backend.py`` and
``tests/gateway/test_preload.py``): the models of the in-test backend (``fake_backend.FakeBackend``,
whose fixture ``backend`` stands in for the router), a cache-enabled config, and ``run``.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable

from appliance.config import Config

MAIN, STATIC, CROSS = "mini", "static", "cross"  # the FakeBackend's models (8 and 6 dims)
CONFIG = Config(cache_bytes=1 << 20, cache_max_text_chars=40, request_timeout=2.0, max_inputs=64)


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]
