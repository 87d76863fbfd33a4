"""``gateway/preload.py``: filling the cache from the common-queries file before traffic, most
frequent first until the cache is full, refusing entries that name a model that cannot embed
here, and reading the file (clear errors for a bad one, the documented shape accepted).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from appliance.config import Config
from cache_checks import CONFIG, CROSS, MAIN, run
from gateway.cached_backend import CachedBackend
from gateway.preload import PreloadError, PreloadQuery, preload, read_preload_file
from gateway.result_cache import ENTRY_OVERHEAD, item_key

pytestmark = pytest.mark.timeout(60)


def test_preload_most_frequent_first_until_the_cache_is_full(backend: Any, caplog: pytest.LogCaptureFixture) -> None:
    queries = [PreloadQuery(text=f"q{i}", model=MAIN, frequency=i) for i in range(10)]
    queries += [PreloadQuery(text="", frequency=97),
                PreloadQuery(text="q9", frequency=50)]  # fmt: skip  (no model: the main one; a duplicate)

    async def main() -> CachedBackend:
        cb = CachedBackend(Config(cache_bytes=4 * (8 * 4 + ENTRY_OVERHEAD), request_timeout=2.0), backend)
        assert await preload(cb, queries) == 4
        return cb

    with caplog.at_level(logging.INFO, logger="appliance.preload"):
        cb = run(main())
    assert sorted(t for call in backend.calls for t in call.inputs) == ["q6", "q7", "q8", "q9"]
    assert all(item_key(MAIN, True, f"q{i}") in cb.cache for i in (6, 7, 8, 9))
    stats = cb.cache_stats()
    assert (stats.hits, stats.misses, stats.evictions) == (0, 0, 0)  # preloading is not traffic
    text = caplog.text
    assert "empty text" in text and "duplicate" in text
    assert "4 of 10 texts cached" in text and "full" in text


@pytest.mark.parametrize("model", ["nope", CROSS])
def test_preload_naming_a_model_that_cannot_embed_here_is_an_error(backend: Any, model: str) -> None:
    queries = [PreloadQuery(text="fine", frequency=2), PreloadQuery(text="elsewhere", model=model, frequency=1)]

    async def main() -> None:
        with pytest.raises(PreloadError, match=f"entry 1 names model '{model}'"):
            await preload(CachedBackend(CONFIG, backend), queries)

    run(main())
    assert backend.calls == []  # checked before anything is computed


@pytest.mark.parametrize("content, message", [
    (b'[{"text": "a", "model": "m", "frequency": 3}, {"model": "m"}]', "missing required field `text` - at `$[1]`"),
    (b'[{"text": "a", "frequency": "often"}]', "at `$[0].frequency`"),
    (b'{"text": "a"}', "expected a list"),
    (b'[{"text": "a"} // a comment\n]', "not valid JSON"),
])  # fmt: skip
def test_a_bad_preload_file_is_a_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "common.json"
    path.write_bytes(content)
    with pytest.raises(PreloadError, match="common.json") as raised:
        read_preload_file(str(path))
    assert message in str(raised.value)
    with pytest.raises(PreloadError, match="cannot be read"):
        read_preload_file(str(tmp_path / "missing.json"))
    assert read_preload_file("") == []


def test_the_documented_preload_shape_reads(tmp_path: Path) -> None:
    path = tmp_path / "common_queries.json"
    documented = [{"text": "What is the status?", "model": "qwen25-1024d", "frequency": 150},
             {"text": "Explain how this works", "model": "qwen25-1024d", "frequency": 89}]  # fmt: skip
    path.write_text(json.dumps(documented))
    assert [q.text for q in read_preload_file(str(path))] == ["What is the status?", "Explain how this works"]
