"""The result cache, coalescing and preloading in the real appliance (subprocess, two workers,
tiny random models), counted from the WORKERS' own statistics: ``GET /stats`` shows each
worker's ``items`` (inputs its models computed) from the Stats message it sends about once a
second, so every count here waits for those to settle rather than trusting the gateway.
"""

from __future__ import annotations

import asyncio
import json
import resource
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import aiohttp
import numpy as np
import pytest

from harness import Appliance, get, post, serving

pytestmark = pytest.mark.slow

MAIN, STATIC = "tiny", "tiny-static"
PRELOAD = [
    {"text": "explain how this works", "model": MAIN, "frequency": 89},
    {"text": "what is the status?", "model": MAIN, "frequency": 150},
    {"text": "status", "model": STATIC, "frequency": 12},
]
STATS_INTERVAL_S = 1.0  # workers' Stats period (appliance.protocol.WorkerSpec.stats_interval_s)
BURST = 1000


def raise_open_file_limit(needed: int) -> None:
    """A thousand connections need a thousand sockets on each side; a common soft limit is 1024.
    Raised before the appliance starts, so its process inherits the limit too."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        ceiling = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory, tiny_transformer: Path,
              tiny_static: Path) -> Iterator[Appliance]:  # fmt: skip
    raise_open_file_limit(BURST * 2 + 256)
    tmp = tmp_path_factory.mktemp("cache")
    preload_file = tmp / "common_queries.json"
    preload_file.write_text(json.dumps(PRELOAD))
    models = [{"name": MAIN, "path": str(tiny_transformer), "main": True},
              {"name": STATIC, "path": str(tiny_static), "kind": "static"}]  # fmt: skip
    settings = {"APPLIANCE_PRELOAD_FILE": str(preload_file), "APPLIANCE_MAX_INPUTS": "64"}
    with serving(tmp, models, workers=2, env=settings) as running:
        yield running


def settled_items(appliance: Appliance, timeout: float = 20.0, counter: str = "items") -> int:
    """Inputs computed by all workers (or another of their ``counter``s, summed), once two reads
    more than a Stats period apart agree."""
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        workers = get(appliance.url + "/stats")[2]["workers"]
        if all(w["pid"] for w in workers):  # every worker has reported at least once
            total = sum(w[counter] for w in workers)
            if total == last:
                return total
            last = total
        time.sleep(STATS_INTERVAL_S * 1.5)
    raise AssertionError(f"worker stats did not settle within {timeout}s")


def cache_counts(appliance: Appliance) -> dict[str, Any]:
    return get(appliance.url + "/cache-stats")[2]


def test_preloaded_texts_are_hits_on_the_first_request(appliance: Appliance) -> None:
    preloaded = ["what is the status?", "explain how this works"]
    status, headers, body = post(appliance.url + "/api/embed", {"model": MAIN, "input": preloaded})
    assert status == 200 and headers["X-Cache"] == "hit" and headers["X-Worker-ID"] == "none"
    assert np.array(body["embeddings"]).shape == (2, 32)
    status, headers, _ = post(appliance.url + "/v1/embeddings", {"model": STATIC, "input": "status"})
    assert status == 200 and headers["X-Cache"] == "hit"
    stats = cache_counts(appliance)
    assert stats["models"][MAIN]["entries"] == 2 and stats["models"][STATIC]["entries"] == 1


async def burst(url: str, body: dict[str, Any], n: int) -> list[tuple[int, str, Any]]:
    """``n`` identical requests at once, each on its own connection."""
    connector = aiohttp.TCPConnector(limit=n)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        async def one() -> tuple[int, str, Any]:
            async with session.post(url, json=body) as response:
                return response.status, response.headers.get("X-Cache", ""), await response.json()

        return await asyncio.gather(*(one() for _ in range(n)))


def test_a_thousand_identical_requests_cost_one_computation(appliance: Appliance) -> None:
    before_items, before = settled_items(appliance), cache_counts(appliance)
    body = {"model": MAIN, "input": "one thousand clients ask the same question"}
    answers = asyncio.run(burst(appliance.url + "/api/embed", body, BURST))
    assert [status for status, _, _ in answers] == [200] * BURST, answers[0]
    vectors = {json.dumps(doc["embeddings"]) for _, _, doc in answers}
    assert len(vectors) == 1  # every client got the very same vector
    assert settled_items(appliance) - before_items == 1  # ONE input computed, by the workers' own count
    after = cache_counts(appliance)
    hits, misses, coalesced = (after[k] - before[k] for k in ("hits", "misses", "coalesced"))
    assert hits + misses == BURST and misses - coalesced == 1  # one leader; the rest joined it or hit
    assert sum(cache == "hit" for _, cache, _ in answers) == hits


def test_a_half_cached_batch_sends_only_the_other_half(appliance: Appliance) -> None:
    texts = [f"batch text number {i}" for i in range(16)]
    singles = [post(appliance.url + "/api/embed", {"model": MAIN, "input": t})[2]["embeddings"][0]
               for t in texts[::2]]  # fmt: skip
    before = settled_items(appliance)
    status, headers, body = post(appliance.url + "/api/embed/batch",
                                 {"model": MAIN, "inputs": [texts[:5], texts[5:12], texts[12:]]})  # fmt: skip
    assert status == 200 and headers["X-Cache"] == "partial"
    assert body["cache_stats"] == {"hits": 8, "misses": 8, "hit_rate": 0.5}
    assert settled_items(appliance) - before == 8
    flat = [v for group in body["batches"] for v in group]
    assert [len(g) for g in body["batches"]] == [5, 7, 4]
    np.testing.assert_allclose(np.array(flat[::2]), np.array(singles), atol=1e-6)  # hits in their places
    computed_alone = post(appliance.url + "/api/embed/batch",
                          {"model": MAIN, "inputs": [texts[1::2]], "use_cache": False})[2]  # fmt: skip
    assert computed_alone["cache_stats"]["hits"] == 0
    np.testing.assert_allclose(np.array(flat[1::2]), np.array(computed_alone["batches"][0]), atol=1e-6)


def test_dimensions_and_usage_on_a_hit_equal_a_miss(appliance: Appliance) -> None:
    body = {"model": MAIN, "input": ["matryoshka cut"], "dimensions": 8}
    _, miss_headers, miss = post(appliance.url + "/v1/embeddings", body)
    _, hit_headers, hit = post(appliance.url + "/v1/embeddings", body)
    assert (miss_headers["X-Cache"], hit_headers["X-Cache"]) == ("miss", "hit")
    assert hit["data"][0]["embedding"] == miss["data"][0]["embedding"] and len(hit["data"][0]["embedding"]) == 8
    assert hit["usage"] == miss["usage"] and hit["usage"]["prompt_tokens"] > 0
    full = post(appliance.url + "/v1/embeddings", {"model": MAIN, "input": ["matryoshka cut"]})
    assert full[1]["X-Cache"] == "hit" and len(full[2]["data"][0]["embedding"]) == 32


def test_no_hit_crosses_models_or_truncate_settings(appliance: Appliance) -> None:
    text = "the same words everywhere"
    assert post(appliance.url + "/api/embed", {"model": MAIN, "input": text})[1]["X-Cache"] == "miss"
    assert post(appliance.url + "/api/embed", {"model": STATIC, "input": text})[1]["X-Cache"] == "miss"
    assert post(appliance.url + "/api/embed", {"model": MAIN, "input": text, "truncate": False})[1]["X-Cache"] == "miss"
    assert post(appliance.url + "/api/embed", {"model": MAIN, "input": text})[1]["X-Cache"] == "hit"


def test_a_bad_preload_file_stops_the_start_with_a_clear_error(launch: Callable[..., Appliance], tmp_path: Path,
                                                              tiny_static: Path) -> None:  # fmt: skip
    bad = tmp_path / "common_queries.json"
    bad.write_text('[{"text": "ok", "frequency": 1}, {"model": "tiny-static"}]')
    started = time.monotonic()
    failing = launch([{"name": STATIC, "path": str(tiny_static), "kind": "static", "main": True}],
                     workers=1, env={"APPLIANCE_PRELOAD_FILE": str(bad)}, wait_ready=False)  # fmt: skip
    code = failing.process.wait(30)
    assert code == 2 and time.monotonic() - started < 30
    assert "missing required field `text` - at `$[1]`" in failing.log() and str(bad) in failing.log()
