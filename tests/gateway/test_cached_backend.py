"""``gateway/cached_backend.py``: the caching backend that puts the result cache and coalescing in
front of the router. The inner backend is the contract tests' ``FakeBackend`` (fixture
``backend``, here wrapped to take the router's ``priority`` too): deterministic vectors per
(model, input), and a record of every call, so "what reached the workers" is exact. The routes
are exercised over real HTTP (aiohttp's test server) with the real wrapper in front.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Sequence

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from appliance.config import Config
from appliance.protocol import BACKGROUND, INTERACTIVE, Input
from cache_checks import CONFIG, MAIN, STATIC, run
from gateway import encoding, errors
from gateway.app import build_app
from gateway.backend import EmbedOutcome
from gateway.cached_backend import CachedBackend
from gateway.result_cache import ENTRY_OVERHEAD, ResultCache, item_key

pytestmark = pytest.mark.timeout(60)


async def embed(cb: CachedBackend, inputs: Sequence[Input], *, model: str = MAIN, truncate: bool = True,
                use_cache: bool = True, priority: int = INTERACTIVE) -> EmbedOutcome:  # fmt: skip
    deadline = asyncio.get_running_loop().time() + 2.0
    return await cb.embed(model, inputs, truncate=truncate, deadline=deadline, use_cache=use_cache, priority=priority)


def computed(backend: Any) -> list[Any]:
    """Every input the inner backend was asked to embed, in order."""
    return [item for call in backend.calls if call.kind == "embed" for item in call.inputs]


# ---- the caching backend ----------------------------------------------------------------------
def test_a_half_cached_batch_sends_only_the_other_half(backend: Any) -> None:
    async def main() -> None:
        cb = CachedBackend(CONFIG, backend)
        texts = [f"text {i}" for i in range(10)]
        await embed(cb, texts[::2])  # cache the even ones
        backend.calls.clear()
        outcome = await embed(cb, texts)
        assert computed(backend) == texts[1::2]
        assert outcome.cache_hits == 5
        np.testing.assert_array_equal(outcome.vectors, backend.vectors_for(MAIN, texts))
        assert outcome.tokens == [len(t) + 2 for t in texts]  # usage stays right on hits
        assert outcome.workers == "0"

    run(main())


def test_an_all_hit_answer_names_no_worker_and_no_time(backend: Any) -> None:
    async def main() -> None:
        cb = CachedBackend(CONFIG, backend)
        await embed(cb, ["a", "b"])
        backend.calls.clear()
        outcome = await embed(cb, ["b", "a", "b"])
        assert backend.calls == [] and outcome.cache_hits == 3
        assert outcome.workers == "" and outcome.timings.compute_us == 0
        np.testing.assert_array_equal(outcome.vectors, backend.vectors_for(MAIN, ["b", "a", "b"]))

    run(main())


def test_lookup_serves_only_all_hit_requests_and_counts_nothing_otherwise(backend: Any) -> None:
    async def main() -> None:
        cb = CachedBackend(CONFIG, backend)
        await embed(cb, ["a", "b"])
        before = (cb.cache.counters(MAIN).hits, cb.cache.counters(MAIN).misses, list(cb.cache._entries))
        assert cb.lookup(MAIN, ["a", "new"], truncate=True) is None
        assert cb.lookup(MAIN, ["a"], truncate=False) is None  # another truncate setting
        assert cb.lookup(MAIN, ["a"], truncate=True, use_cache=False) is None
        assert cb.lookup(MAIN, ["x" * 41], truncate=True) is None  # over cache_max_text_chars
        assert (cb.cache.counters(MAIN).hits, cb.cache.counters(MAIN).misses, list(cb.cache._entries)) == before
        hit = cb.lookup(MAIN, ["b", "a"], truncate=True)
        assert hit is not None and hit.cache_hits == 2 and hit.json_rows is None and hit.workers == ""
        np.testing.assert_array_equal(hit.vectors, backend.vectors_for(MAIN, ["b", "a"]))
        assert cb.cache.counters(MAIN).hits == before[0] + 2
        assert list(cb.cache._entries)[-2:] == [item_key(MAIN, True, "b"), item_key(MAIN, True, "a")]

    run(main())


def test_json_rows_are_encoded_once_and_charged_to_the_byte_bound(backend: Any) -> None:
    async def main() -> None:
        vector_size = 8 * 4 + ENTRY_OVERHEAD
        cb = CachedBackend(Config(cache_bytes=3 * vector_size + 10, cache_max_text_chars=40), backend)
        await embed(cb, ["a", "b", "c"])
        assert cb.cache.bytes == 3 * vector_size
        hit = cb.lookup(MAIN, ["c"], truncate=True, json=True)
        assert hit is not None and hit.json_rows is not None
        assert hit.json_rows[0] == bytes(encoding.matrix_json(hit.vectors))[1:-1]  # the same digits
        grown = len(hit.json_rows[0])
        # the JSON form pushed the budget over: the least recently used entry made room
        assert cb.cache.bytes == 2 * vector_size + grown <= cb.cache.capacity
        assert len(cb.cache) == 2 and cb.cache.counters(MAIN).evictions == 1
        again = cb.lookup(MAIN, ["c"], truncate=True, json=True)
        assert again is not None and again.json_rows is not None and again.json_rows[0] is hit.json_rows[0]
        assert cb.cache.bytes == 2 * vector_size + grown  # charged once

    run(main())


def test_no_hit_crosses_models_or_truncate_settings(backend: Any) -> None:
    async def main() -> None:
        cb = CachedBackend(CONFIG, backend)
        await embed(cb, ["shared text"])
        backend.calls.clear()
        other_model = await embed(cb, ["shared text"], model=STATIC)
        other_truncate = await embed(cb, ["shared text"], truncate=False)
        assert other_model.cache_hits == other_truncate.cache_hits == 0
        assert [(c.model, c.truncate) for c in backend.calls] == [(STATIC, True), (MAIN, False)]
        assert other_model.vectors.shape == (1, 6)
        np.testing.assert_array_equal(other_model.vectors[0], backend.vectors_for(STATIC, ["shared text"])[0])

    run(main())


def test_use_cache_false_neither_reads_nor_writes(backend: Any) -> None:
    async def main() -> None:
        cb = CachedBackend(CONFIG, backend)
        await embed(cb, ["cached"])
        bypass = await embed(cb, ["cached", "fresh"], use_cache=False)
        assert bypass.cache_hits == 0 and computed(backend) == ["cached", "cached", "fresh"]
        assert item_key(MAIN, True, "fresh") not in cb.cache
        assert cb.cache_stats().bypassed == 2

    run(main())


def test_long_texts_are_not_cached_and_duplicates_are_computed_once(backend: Any) -> None:
    async def main() -> None:
        cb = CachedBackend(CONFIG, backend)
        long = "x" * (CONFIG.cache_max_text_chars + 1)
        outcome = await embed(cb, [long, "dup", long, "dup", "dup"])
        assert computed(backend) == [long, "dup"]  # one computation per distinct input
        np.testing.assert_array_equal(outcome.vectors, backend.vectors_for(MAIN, [long, "dup", long, "dup", "dup"]))
        assert item_key(MAIN, True, long) not in cb.cache and item_key(MAIN, True, "dup") in cb.cache
        again = await embed(cb, [long])
        assert again.cache_hits == 0 and computed(backend).count(long) == 2
        stats = cb.cache_stats()
        assert (stats.coalesced, stats.bypassed, stats.entries) == (3, 3, 1)

    run(main())


def test_concurrent_requests_share_one_computation_and_its_failure(backend: Any) -> None:
    async def main() -> None:
        cb = CachedBackend(CONFIG, backend)
        backend.delay_s = 0.05
        outcomes = await asyncio.gather(*(embed(cb, ["same", f"own {i % 2}"]) for i in range(20)))
        assert sorted(computed(backend)) == ["own 0", "own 1", "same"]
        assert all(np.array_equal(o.vectors[0], outcomes[0].vectors[0]) for o in outcomes)
        backend.calls.clear()
        backend.fail = errors.WorkerLost("worker 0 died", retry_after=1.0)
        failures = await asyncio.gather(*(embed(cb, ["boom"]) for _ in range(5)), return_exceptions=True)
        assert len(backend.calls) == 1 and all(f is failures[0] for f in failures)
        assert isinstance(failures[0], errors.WorkerLost) and "worker 0 died" in failures[0].message
        assert item_key(MAIN, True, "boom") not in cb.cache and len(cb.inflight) == 0

    run(main())


def test_a_cancelled_request_still_fills_the_cache_for_the_next(backend: Any) -> None:
    async def main() -> None:
        cb = CachedBackend(CONFIG, backend)
        backend.delay_s = 0.05
        leader = asyncio.create_task(embed(cb, ["slow"]))
        await asyncio.sleep(0.01)
        follower = asyncio.create_task(embed(cb, ["slow"]))
        await asyncio.sleep(0.01)
        leader.cancel()
        outcome = await follower
        assert outcome.cache_hits == 0 and len(backend.calls) == 1
        assert (await embed(cb, ["slow"])).cache_hits == 1

    run(main())


def test_a_waiter_past_its_deadline_gets_504_and_the_work_nobody_wants_is_withdrawn(backend: Any) -> None:
    async def main() -> None:
        cb = CachedBackend(CONFIG, backend)
        backend.delay_s = 0.3
        loop = asyncio.get_running_loop()
        with pytest.raises(errors.DeadlineExceeded):
            await cb.embed(MAIN, ["late"], truncate=True, deadline=loop.time() + 0.05)
        await asyncio.sleep(0.4)
        assert item_key(MAIN, True, "late") not in cb.cache and len(cb.inflight) == 0

    run(main())


def test_the_last_client_to_leave_withdraws_the_computation(backend: Any) -> None:
    async def main() -> None:
        cb = CachedBackend(CONFIG, backend)
        backend.delay_s = 0.2
        alone = asyncio.create_task(embed(cb, ["abandoned"]))
        await asyncio.sleep(0.05)
        alone.cancel()  # the only client disconnects: the backend call is cancelled with it
        await asyncio.gather(alone, return_exceptions=True)
        await asyncio.sleep(0.3)
        assert item_key(MAIN, True, "abandoned") not in cb.cache and len(cb.inflight) == 0
        assert (await embed(cb, ["abandoned"])).cache_hits == 0 and len(backend.calls) == 2  # computed afresh

    run(main())


class PickyBackend:
    """The fake, plus one input error: any input containing "TOO LONG" fails its whole call, as a
    worker refuses a record with an over-long input when ``truncate`` is false."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def embed(self, model: str, inputs: Sequence[Input], *, truncate: bool, deadline: float,
                    use_cache: bool = True, priority: int = INTERACTIVE, **options: Any) -> EmbedOutcome:  # fmt: skip
        bad = [i for i, item in enumerate(inputs) if "TOO LONG" in item]
        if bad:
            self.inner.calls.append(None)
            await asyncio.sleep(0.05)
            raise errors.InputTooLong(f"input exceeds the model's 128 tokens (input {bad[0]})")
        return await self.inner.embed(model, inputs, truncate=truncate, deadline=deadline, priority=priority)


def test_an_input_error_stays_with_the_request_that_sent_the_input(backend: Any) -> None:
    async def main() -> None:
        cb = CachedBackend(CONFIG, PickyBackend(backend))  # type: ignore[arg-type]
        await embed(cb, ["cached"], truncate=False)
        bad = asyncio.create_task(embed(cb, ["shared", "TOO LONG"], truncate=False))
        await asyncio.sleep(0.01)
        good = await embed(cb, ["shared"], truncate=False)  # joined the failing computation
        np.testing.assert_array_equal(good.vectors, backend.vectors_for(MAIN, ["shared"]))
        with pytest.raises(errors.InputTooLong, match=r"\(input 1\)"):
            await bad
        with pytest.raises(errors.InputTooLong, match=r"\(input 2\)"):  # index into the request, not the misses
            await embed(cb, ["cached", "x", "TOO LONG"], truncate=False)

    run(main())


def test_cache_stats_totals_and_per_model(backend: Any) -> None:
    async def main() -> None:
        cb = CachedBackend(CONFIG, backend)
        await embed(cb, ["a", "b"])
        await embed(cb, ["a", "c"])
        await embed(cb, ["a"], model=STATIC)
        stats = cb.cache_stats()
        assert (stats.hits, stats.misses, stats.entries, stats.enabled) == (1, 4, 4, True)
        assert stats.hit_rate == pytest.approx(0.2) and stats.capacity_bytes == CONFIG.cache_bytes
        assert stats.bytes == 3 * (8 * 4 + ENTRY_OVERHEAD) + (6 * 4 + ENTRY_OVERHEAD)
        assert (stats.models[MAIN].hits, stats.models[MAIN].misses, stats.models[STATIC].misses) == (1, 3, 1)

    run(main())


def test_a_disabled_cache_still_coalesces(backend: Any) -> None:
    async def main() -> None:
        cb = CachedBackend(Config(cache_bytes=0, request_timeout=2.0), backend)
        backend.delay_s = 0.05
        outcomes = await asyncio.gather(*(embed(cb, ["same"]) for _ in range(10)))
        assert len(backend.calls) == 1 and all(o.cache_hits == 0 for o in outcomes)
        assert len(cb.cache) == 0 and cb.cache_stats().enabled is False

    run(main())


# ---- priority ---------------------------------------------------------------------------------
def test_background_requests_carry_their_priority_and_share_the_cache(backend: Any) -> None:
    async def main() -> None:
        cb = CachedBackend(CONFIG, backend)
        await embed(cb, ["job text", "other"], priority=BACKGROUND)
        deadline = asyncio.get_running_loop().time() + 2.0
        await cb.rerank(MAIN, "q", ["d"], truncate=True, deadline=deadline, priority=BACKGROUND)
        assert backend.priorities == [BACKGROUND, BACKGROUND]
        hit = cb.lookup(MAIN, ["job text"], truncate=True)  # a job's results serve interactive traffic
        assert hit is not None and hit.cache_hits == 1
        again = await embed(cb, ["other", "new"], priority=BACKGROUND)  # and jobs read the cache too
        assert again.cache_hits == 1 and computed(backend)[-1:] == ["new"]

    run(main())


def test_an_interactive_request_never_joins_a_background_computation(backend: Any) -> None:
    """It would wait at background priority; it computes its own copy, interactively, instead."""

    async def main() -> None:
        cb = CachedBackend(CONFIG, backend)
        backend.delay_s = 0.1
        job = asyncio.create_task(embed(cb, ["shared", "job only"], priority=BACKGROUND))
        await asyncio.sleep(0.01)
        query = await embed(cb, ["shared"])
        assert computed(backend) == ["shared", "job only", "shared"]
        assert backend.priorities == [BACKGROUND, INTERACTIVE]
        np.testing.assert_array_equal(query.vectors, backend.vectors_for(MAIN, ["shared"]))
        await job
        assert cb.cache_stats().coalesced == 0 and len(cb.cache) == 2

    run(main())


def test_background_requests_join_computations_of_either_priority(backend: Any) -> None:
    async def main() -> None:
        cb = CachedBackend(CONFIG, backend)
        backend.delay_s = 0.1
        query = asyncio.create_task(embed(cb, ["asked"]))
        first_job = asyncio.create_task(embed(cb, ["chunk"], priority=BACKGROUND))
        await asyncio.sleep(0.01)
        joined = await embed(cb, ["asked", "chunk"], priority=BACKGROUND)  # joins both: nothing sent
        assert computed(backend) == ["asked", "chunk"] and backend.priorities == [INTERACTIVE, BACKGROUND]
        np.testing.assert_array_equal(joined.vectors, backend.vectors_for(MAIN, ["asked", "chunk"]))
        await asyncio.gather(query, first_job)
        stats = cb.cache_stats()
        assert (stats.coalesced, stats.in_flight) == (2, 0)
        assert stats.models[MAIN].coalesced == 2

    run(main())


# ---- over HTTP --------------------------------------------------------------------------------
async def with_client(cb: CachedBackend, body: Callable[[TestClient], Awaitable[None]]) -> None:
    async with TestClient(TestServer(build_app(CONFIG, cb))) as client:
        await body(client)


def test_routes_show_hits_misses_and_cut_dimensions_from_the_full_vector(backend: Any) -> None:
    async def body(client: TestClient) -> None:
        first = await client.post("/v1/embeddings", json={"model": MAIN, "input": ["alpha"], "dimensions": 3})
        second = await client.post("/v1/embeddings", json={"model": MAIN, "input": ["alpha"], "dimensions": 3})
        full = await client.post("/api/embed", json={"model": MAIN, "input": ["alpha", "beta"]})
        assert [r.headers["X-Cache"] for r in (first, second, full)] == ["miss", "hit", "partial"]
        cut_miss, cut_hit = [(await r.json())["data"][0]["embedding"] for r in (first, second)]
        assert cut_miss == cut_hit and len(cut_hit) == 3
        expected = backend.vectors_for(MAIN, ["alpha"])[0].tolist()
        assert (await full.json())["embeddings"][0] == pytest.approx(expected)
        assert second.headers["X-Worker-ID"] == "none"

    run(with_client(CachedBackend(CONFIG, backend), body))


def test_a_hit_answers_with_the_same_bytes_as_the_miss_on_every_json_route(backend: Any) -> None:
    bodies = {"/api/embed": {"model": MAIN, "input": ["p", "q"]},
              "/v1/embeddings": {"model": MAIN, "input": ["p", "q"]},
              "/api/embed/batch": {"model": MAIN, "inputs": [["p"], [], ["q"]]}}  # fmt: skip

    def vectors(doc: dict[str, Any]) -> Any:
        return {k: v for k, v in doc.items() if k not in ("total_duration", "cache_stats")}

    async def body(client: TestClient) -> None:
        for path, request in bodies.items():
            cb.cache = ResultCache(CONFIG.cache_bytes)  # each route's first answer is a miss
            miss = await client.post(path, json=request)
            hits = [await client.post(path, json=request) for _ in range(2)]  # encodes, then reuses
            assert [r.headers["X-Cache"] for r in (miss, *hits)] == ["miss", "hit", "hit"], path
            expected = vectors(await miss.json())
            for hit in hits:
                assert vectors(await hit.json()) == expected, path
        b64 = await client.post("/v1/embeddings", json={**bodies["/v1/embeddings"], "encoding_format": "base64"})
        assert b64.headers["X-Cache"] == "hit" and isinstance((await b64.json())["data"][0]["embedding"], str)

    cb = CachedBackend(CONFIG, backend)
    run(with_client(cb, body))


def test_batch_route_reports_cache_stats_and_honours_use_cache(backend: Any) -> None:
    async def body(client: TestClient) -> None:
        await client.post("/api/embed", json={"model": MAIN, "input": ["a", "b"]})
        mixed = await client.post("/api/embed/batch", json={"model": MAIN, "inputs": [["a", "x"], ["b", "y"]]})
        doc = await mixed.json()
        assert doc["cache_stats"] == {"hits": 2, "misses": 2, "hit_rate": 0.5}
        assert mixed.headers["X-Cache"] == "partial"
        expected = backend.vectors_for(MAIN, ["a", "x", "b", "y"])
        assert np.allclose(np.array(doc["batches"]).reshape(4, -1), expected)
        backend.calls.clear()
        bypass = await client.post("/api/embed/batch", json={"model": MAIN, "inputs": [["a"]], "use_cache": False})
        assert (await bypass.json())["cache_stats"]["hits"] == 0 and bypass.headers["X-Cache"] == "miss"
        assert computed(backend) == ["a"]

    run(with_client(CachedBackend(CONFIG, backend), body))


def test_cache_stats_and_stats_routes(backend: Any) -> None:
    async def body(client: TestClient) -> None:
        await client.post("/api/embed", json={"model": MAIN, "input": ["a", "a", "b"]})
        await client.post("/api/embed", json={"model": STATIC, "input": "a"})
        await client.post("/api/embed", json={"model": MAIN, "input": "a"})
        cache = await (await client.get("/cache-stats")).json()
        assert {k: cache[k] for k in ("hits", "misses", "coalesced", "entries", "evictions")} == {
            "hits": 1, "misses": 4, "coalesced": 1, "entries": 3, "evictions": 0}  # fmt: skip
        assert cache["hit_rate"] == pytest.approx(0.2) and cache["enabled"] is True
        assert cache["models"][MAIN]["hits"] == 1 and cache["models"][STATIC]["misses"] == 1
        assert cache["bytes"] == sum(m["bytes"] for m in cache["models"].values()) > 0
        stats = await (await client.get("/stats")).json()
        assert [w["index"] for w in stats["workers"]] == [0, 1] and "items" in stats["workers"][0]
        assert stats["cache"]["entries"] == 3 and stats["ready"] is True

    run(with_client(CachedBackend(CONFIG, backend), body))


class IsolatingBackend(PickyBackend):
    """As a worker answers an isolating call: each input with "TOO LONG" in it refused on its own
    (in ``EmbedOutcome.refused``, by its place in the call), the others computed."""

    async def embed(self, model: str, inputs: Sequence[Input], *, truncate: bool, deadline: float,
                    use_cache: bool = True, priority: int = INTERACTIVE, isolate: bool = False,
                    **options: Any) -> EmbedOutcome:  # fmt: skip
        if not isolate:
            return await super().embed(model, inputs, truncate=truncate, deadline=deadline, priority=priority)
        bad = {i for i, item in enumerate(inputs) if "TOO LONG" in item}
        good = [item for i, item in enumerate(inputs) if i not in bad]
        outcome = EmbedOutcome(np.zeros((0, 0), np.float32), [])
        if good:
            outcome = await self.inner.embed(model, good, truncate=truncate, deadline=deadline, priority=priority)
        outcome.refused = {i: errors.InputTooLong(f"input {i} exceeds 128 tokens (input {i})") for i in bad}
        return outcome


async def isolating(cb: CachedBackend, inputs: Sequence[Input]) -> EmbedOutcome:
    deadline = asyncio.get_running_loop().time() + 2.0
    return await cb.embed(MAIN, inputs, truncate=False, deadline=deadline, isolate=True)


def test_an_isolating_call_caches_only_what_it_computed(backend: Any) -> None:
    async def main() -> None:
        cb = CachedBackend(CONFIG, IsolatingBackend(backend))  # type: ignore[arg-type]
        first = await isolating(cb, ["a", "TOO LONG 1", "b", "TOO LONG 2", "c"])
        np.testing.assert_array_equal(first.vectors, backend.vectors_for(MAIN, ["a", "b", "c"]))
        assert first.tokens == [3, 3, 3] and sorted(first.refused) == [1, 3]
        assert first.refused[3].message.endswith("(input 3)") and isinstance(first.refused[3], errors.InputTooLong)
        backend.calls.clear()
        again = await isolating(cb, ["c", "TOO LONG 2", "b"])  # the refused key was not cached
        assert computed(backend) == []  # the hits served here, the refused one answered without a vector
        np.testing.assert_array_equal(again.vectors, backend.vectors_for(MAIN, ["c", "b"]))  # not slid
        assert list(again.refused) == [1] and again.refused[1].message.endswith("(input 1)")
        assert again.cache_hits == 2
        everything_refused = await isolating(cb, ["TOO LONG 1"])
        assert everything_refused.tokens == [] and list(everything_refused.refused) == [0]

    run(main())


def test_a_refused_input_is_each_waiter_s_own_error(backend: Any) -> None:
    async def main() -> None:
        backend.delay_s = 0.05
        cb = CachedBackend(CONFIG, IsolatingBackend(backend))  # type: ignore[arg-type]
        lead = asyncio.create_task(isolating(cb, ["x", "TOO LONG y"]))
        await asyncio.sleep(0.01)
        joiner = await isolating(cb, ["z", "w", "TOO LONG y"])  # joins the refused key
        assert list(joiner.refused) == [2] and joiner.refused[2].message.endswith("(input 2)")
        np.testing.assert_array_equal(joiner.vectors, backend.vectors_for(MAIN, ["z", "w"]))
        assert list((await lead).refused) == [1]
        # a request that does not isolate fails on it, with its own index (recomputed on its own)
        slow = asyncio.create_task(isolating(cb, ["v", "TOO LONG u"]))
        await asyncio.sleep(0.01)
        with pytest.raises(errors.InputTooLong, match=r"\(input 1\)$"):
            await embed(cb, ["q", "TOO LONG u"], truncate=False)
        await slow

    run(main())
