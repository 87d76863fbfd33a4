"""bench/serve.py and bench/wrk.py: wrk output parsing, and a short real run on a tiny model."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import pytest
from aiohttp import web

import bench.serve as serve
from bench import wrk

WRK_OUTPUT = """Running 10s test @ http://127.0.0.1:8080
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.12ms    1.02ms  20.31ms   80.00%
    Req/Sec    12.50k     1.20k   14.00k    70.00%
  Latency Distribution
     50%  498.00us
     75%    5.50ms
     90%    6.20ms
     99%    1.10s
  124512 requests in 10.00s, 60.12MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 3
Requests/sec:  12450.11
Transfer/sec:      6.01MB
p95_us 7350
"""


def test_wrk_output_is_parsed_with_units_and_errors() -> None:
    result = wrk.parse(WRK_OUTPUT)
    assert (result.requests, result.rps, result.errors) == (124512, 12450.11, 6)
    assert (result.p50_ms, result.p90_ms, result.p95_ms, result.p99_ms) == (pytest.approx(0.498), 6.2, 7.35, 1100.0)
    with pytest.raises(ValueError, match="unexpected wrk output"):
        wrk.parse("wrk: connection refused")


def test_wrk_script_cycles_every_body_as_a_post() -> None:
    script = wrk.lua_script("/api/embed", [b'{"input": "a \\"quoted\\" text"}', b'{"input": "b"}'])
    assert 'wrk.method = "POST"' in script and '"/api/embed"' in script
    assert script.count('"{\\"input\\"') == 2  # each body one Lua string literal, quotes escaped


@pytest.mark.usefixtures("wrk_installed")
def test_wrk_posts_every_body_to_a_real_server() -> None:
    seen: Counter[bytes] = Counter()

    async def record(request: web.Request) -> web.Response:
        seen[await request.read()] += 1
        return web.json_response({"ok": request.method == "POST" and request.content_type == "application/json"})

    async def main() -> wrk.WrkResult:
        app = web.Application()
        app.router.add_post("/api/embed", record)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            return await asyncio.to_thread(wrk.run, f"http://127.0.0.1:{port}", "/api/embed", bodies,
                                           connections=4, seconds=1)  # fmt: skip
        finally:
            await runner.cleanup()

    bodies = [json.dumps({"input": f"text {i} \"quoted\""}).encode() for i in range(5)]
    result = asyncio.run(main())
    assert result.errors == 0 and result.requests > 50
    assert set(seen) == set(bodies)  # every body sent, byte for byte, each many times
    assert min(seen.values()) > 5


def test_repeat_texts_mix_hot_and_never_seen_texts() -> None:
    corpus, hot = [f"sentence {i}." for i in range(50)], ["hot a", "hot b"]
    texts = serve.repeat_texts(corpus, hot, 0.6, seed=1)
    drawn = [texts(i)[0] for i in range(2000)]
    cold = [t for t in drawn if t not in hot]
    assert 0.55 < 1 - len(cold) / len(drawn) < 0.65
    assert len(set(cold)) == len(cold), "a miss is never repeated"
    assert all(t not in hot for t in (serve.repeat_texts(corpus, hot, 0.0, seed=2)(i)[0] for i in range(100)))


@pytest.mark.slow
@pytest.mark.usefixtures("wrk_installed")
def test_serve_bench_runs_every_scenario_on_a_tiny_model(tiny_transformer: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """Against an appliance that wants a key: every scenario's client (aiohttp and wrk) sends it,
    or its points would count 401s as errors."""
    keys = tmp_path / "keys"
    keys.write_text("bench-key-1\n")
    argv = ["--model", "tiny", "--model-path", str(tiny_transformer), "--workers", "1", "--seconds", "0.5",
            "--warmup", "0.2", "--raw-seconds", "0.3", "--concurrency", "1,4", "--batches", "1,4", "--rates", "40",
            "--batching", "--repeat-fractions", "0,0.6", "--repeat-concurrency", "4", "--hit-concurrency", "4",
            "--env", f"APPLIANCE_API_KEYS_FILE={keys}", "--api-key", "bench-key-1"]  # fmt: skip
    assert serve.main(argv) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    points = {(p["scenario"], p["batch"], p["concurrency"]): p for p in report["points"]}
    assert {("embed", b, c) for b in (1, 4) for c in (1, 4)} <= set(points)
    assert {("open@40", 1, 0), ("open@40", 4, 0)} <= set(points)  # Poisson arrivals, after the closed loops
    assert {("repeat-0", 1, 4), ("repeat-0.6", 1, 4)} <= set(points)
    assert report["raw_limit_sps"] > 0 and len(report["raw_runs"]) == 2
    assert report["repeat_0.6_over_0"] > 0
    assert report["pure_hit"]["client"] == "hit-wrk"
    assert ("http-floor", 1, 4) in points and 0 < report["pure_hit"]["over_floor"]  # the bare aiohttp floor, same run
    assert all(p["requests"] > 0 and p["errors"] == 0 for p in report["points"])


def test_wrk_script_sends_extra_headers() -> None:
    script = wrk.lua_script("/api/embed", [b"{}"], {"Authorization": "Bearer k"})
    assert 'wrk.headers["Authorization"] = "Bearer k"' in script


def test_scrape_summary_compares_the_ratio_with_the_run_to_run_noise() -> None:
    from bench import scrape

    summary = scrape.summary({False: [100.0, 104.0], True: [101.0, 99.0]}, [0.004, 0.006, 0.005])
    assert summary["ratio"] == pytest.approx(0.98) and summary["noise"] == pytest.approx(0.04)
    assert summary["paired_ratios"] == [1.01, 0.952]
    assert summary["within_noise"] is True and summary["scrapes"] == 3 and summary["scrape_p50_ms"] == 5.0
    assert scrape.summary({False: [100.0, 100.0], True: [80.0, 81.0]}, [])["within_noise"] is False


def test_the_scraper_gets_metrics_about_once_a_second_until_stopped() -> None:
    from bench import scrape

    async def main() -> tuple[list[float], int]:
        hits = 0

        async def metrics(request: web.Request) -> web.Response:
            nonlocal hits
            hits += 1
            return web.Response(text="appliance_up 1\n")

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        stop = asyncio.Event()
        try:
            task = asyncio.create_task(scrape.scrape_loop(f"http://127.0.0.1:{port}", {}, stop))
            await asyncio.sleep(2.5)
            stop.set()
            return await asyncio.wait_for(task, 5), hits
        finally:
            await runner.cleanup()

    durations, hits = asyncio.run(main())
    assert len(durations) == hits == 3  # at 0, 1 and 2 s; the stop ends the wait at once
