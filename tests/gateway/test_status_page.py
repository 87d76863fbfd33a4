"""The status page (``GET /``, ``gateway/routes/page.py``) as a browser renders it: Debian's
chromium, headless, driven by Playwright, against the real appliance (subprocess, tiny random
model). What the page shows is read back from the rendered DOM and compared with ``/stats``:

- with the appliance's own ``/stats``, after a few requests (some repeated, so the cache hits):
  the worker count and table, the cache hit rate, the traffic figures (or dashes, from a gateway
  that keeps none);
- with ``/stats`` answered by the test with every field of ``gateway.stats.SystemStats`` filled
  (roles, devices, restarts, traffic windows, five minutes of history, memory, advice), so the
  page is checked against the Struct definitions and not only against today's values;
- with API keys configured: the page asks for a key, a wrong one is refused and asked again, the
  right one shows the workers and survives a reload (``sessionStorage``).

Screenshots go to ``test-artifacts/`` (git-ignored); their absolute paths are printed.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from pathlib import Path
from typing import Any, Iterator

import msgspec
import pytest
from playwright.sync_api import BrowserContext, Page, sync_playwright

from gateway.backend import CacheReport, WorkerCard
from gateway.stats import Advice, HistoryPoint, MemoryView, SystemStats, Traffic, TrafficWindow
from harness import Appliance, get, post, serving
from system_tools import CHROMIUM_ARGS

pytestmark = pytest.mark.slow

MAIN = "tiny"
KEY = "sk-page-right"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
RENDER_TIMEOUT_MS = 20_000
SETTLE_S = 15.0  # the page and the test each read /stats; figures must agree within this long
TEXTS = ["status page one", "status page two", "status page three"]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory, tiny_transformer: Path) -> Iterator[Appliance]:
    models = [{"name": MAIN, "path": str(tiny_transformer), "main": True}]
    with serving(tmp_path_factory.mktemp("page"), models, workers=2) as running:
        yield running


@pytest.fixture(scope="module")
def browser(chromium_installed: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """Headless chromium on a fresh user-data dir; closed whatever the tests' outcome."""
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=chromium_installed, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900}, timeout=60_000)  # fmt: skip
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def tab(browser: BrowserContext) -> Iterator[Page]:
    """A new tab (its own sessionStorage). Script errors and refused content fail the test."""
    page = browser.new_page()
    page.set_default_timeout(RENDER_TIMEOUT_MS)
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None)
    try:
        yield page
        assert not problems, problems
    finally:
        page.close()


# ---- reading the page -------------------------------------------------------------------------
def renders(page: Page) -> int:
    return int(page.evaluate("Number(document.body.dataset.renders)"))


def wait_renders(page: Page, count: int) -> None:
    page.wait_for_function("n => Number(document.body.dataset.renders) >= n", arg=count)


def text(page: Page, selector: str) -> str:
    return page.locator(selector).inner_text().strip()


def shows(shown: str, value: float, scale: float = 1.0) -> bool:
    """``shown`` is ``value`` (times ``scale``) rounded to as many decimals as it shows."""
    figure = re.match(r"-?\d+(?:\.(\d+))?", shown)
    if figure is None:
        return False
    decimals = len(figure.group(1) or "")
    return abs(float(figure.group(0)) - value * scale) <= 0.5 * 10**-decimals + 1e-9


def disagreements(page: Page, stats: dict[str, Any]) -> list[str]:
    """What the page shows that ``stats`` does not say (empty when they agree)."""
    workers, cache, traffic = stats["workers"], stats["cache"], stats["traffic"]
    wrong = []
    expected_workers = f"{sum(w['up'] for w in workers)} / {len(workers)}"
    if text(page, "#v-workers") != expected_workers:
        wrong.append(f"workers {text(page, '#v-workers')!r} != {expected_workers!r}")
    if page.locator("#workers tr").count() != len(workers):
        wrong.append(f"{page.locator('#workers tr').count()} worker rows for {len(workers)} workers")
    if not shows(text(page, "#v-hit"), cache["hit_rate"], 100):
        wrong.append(f"hit rate {text(page, '#v-hit')!r} != {cache['hit_rate']}")
    if text(page, "#v-queue") != str(stats["queue_depth"]):
        wrong.append(f"queue {text(page, '#v-queue')!r} != {stats['queue_depth']}")
    return wrong + traffic_disagreements(page, traffic)


def traffic_disagreements(page: Page, traffic: dict[str, Any] | None) -> list[str]:
    shown = {key: text(page, f"#v-{key}") for key in ("rps", "p50", "p99", "4xx", "5xx")}
    if traffic is None:  # a gateway that keeps no traffic windows: dashes, not zeros
        return [f"{key} {value!r} without traffic figures" for key, value in shown.items() if value != "—"]
    m1, m5 = traffic["last_1m"], traffic["last_5m"]
    timed = m1["requests"] > 0  # no request in the minute, no latency: a dash, not 0
    expected = {"rps": m1["requests_per_s"], "p50": m1["p50_ms"] if timed else None,
                "p99": m1["p99_ms"] if timed else None,
                "4xx": m5["client_errors"], "5xx": m5["server_errors"]}  # fmt: skip
    return [f"{key} {shown[key]!r} != {value}" for key, value in expected.items()
            if not (shows(shown[key], value) if value is not None else shown[key] == "—")]  # fmt: skip


def agree_with_stats(page: Page, url: str) -> dict[str, Any]:
    """Read the page and ``/stats`` until they agree (each refresh races the other read); the
    ``/stats`` they agreed on. Fails with the last disagreement after ``SETTLE_S``."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        seen = renders(page)
        status, _, stats = get(url + "/stats")
        assert status == 200, stats
        wrong = disagreements(page, stats)
        if not wrong:
            return stats
        assert time.monotonic() < deadline, f"the page disagrees with /stats: {wrong}"
        wait_renders(page, seen + 1)


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    print(f"status page screenshot: {path}")
    return path


def points_in(page: Page, chart: str, series: str) -> int:
    d = page.locator(f"#{chart} path[data-series={series}]").get_attribute("d") or ""
    return len(re.findall(r"[ML]", d))


# ---- the appliance's own /stats ---------------------------------------------------------------
def test_the_page_shows_what_stats_says(appliance: Appliance, tab: Page) -> None:
    for text_ in TEXTS + TEXTS[:2]:  # the last two are served from the cache
        status, _, body = post(appliance.url + "/api/embed", {"model": MAIN, "input": [text_]})
        assert status == 200, body
    tab.goto(appliance.url + "/")
    wait_renders(tab, 2)  # two samples: live chart points exist even without the gateway's history
    stats = agree_with_stats(tab, appliance.url)
    assert stats["cache"]["hits"] >= 2 and text(tab, "#state") == "ready"
    rows = tab.locator("#workers tr")
    for row, worker in zip(rows.all(), stats["workers"]):
        cells = [c.strip() for c in row.locator("td").all_inner_texts()]
        expected = [str(worker["index"]), ", ".join(worker["models"]), str(worker["pid"])]
        assert [cells[0], cells[4], cells[-1]] == expected
    assert points_in(tab, "c-throughput", "rps") >= 1
    assert screenshot(tab, "status-page.png").stat().st_size > 0


# ---- every field filled -----------------------------------------------------------------------
def filled_stats(now: float) -> SystemStats:
    """A busy three-worker appliance, every field of the /stats Structs set; seeded."""
    rng = random.Random(7)
    step0 = math.floor(now / 10) * 10 - 300  # thirty finished steps
    history = []
    for i in range(30):
        requests = 0 if i == 4 else int(120 + 80 * math.sin(i / 4) + rng.randint(0, 30))  # one idle step: a gap
        hits = int(requests * 2.4 * (0.4 + 0.2 * math.sin(i / 7)))
        history.append(HistoryPoint(t=step0 + 10 * i, requests=requests, inputs=requests * 4,
                                    p50_ms=4 + rng.random() * 2 if requests else 0.0,
                                    p99_ms=14 + 6 * math.sin(i / 5) + rng.random() * 4 if requests else 0.0,
                                    cache_hits=hits, cache_misses=requests * 4 - hits))  # fmt: skip
    workers = [
        WorkerCard(index=0, up=True, models=[MAIN, "tiny-static"], outstanding_inputs=12, outstanding_tokens=640,
                   pid=4101, role="primary", device="cuda:0", cores=[0, 1, 2, 3], state="ready",
                   restarts={"crash": 1, "heartbeat": 0}, busy_share=0.62, rss_bytes=2_466_250_752,
                   gpu_memory_bytes=1_181_116_006, requests=9120, items=36480),
        WorkerCard(index=1, up=True, models=[MAIN], outstanding_inputs=3, outstanding_tokens=150, pid=4102,
                   role="light", device="cpu", cores=[4, 5], state="ready", busy_share=0.18,
                   rss_bytes=912_261_120, requests=2210, items=8840),
        WorkerCard(index=2, up=False, models=[MAIN], outstanding_inputs=0, outstanding_tokens=0, role="light",
                   device="cpu", cores=[6, 7], state="starting", restarts={"heartbeat": 2}),
    ]  # fmt: skip
    window = dict(requests=1234, inputs=4936, client_errors=3, server_errors=1, requests_per_s=20.57,
                  inputs_per_s=82.27, p50_ms=4.21, p95_ms=11.4, p99_ms=18.66)  # fmt: skip
    return SystemStats(
        uptime_s=93784.5, ready=True, draining=False, workers=workers,
        cache=CacheReport(enabled=True, hits=52_310, misses=61_002, entries=40_113, bytes=61_603_840,
                          capacity_bytes=268_435_456, hit_rate=52_310 / 113_312),
        traffic=Traffic(last_1m=TrafficWindow(seconds=60, **window),
                        last_5m=TrafficWindow(seconds=300, **{**window, "requests": 6170, "client_errors": 7})),
        history=history, queue_depth=15,
        memory=MemoryView(total_bytes=68_719_476_736, available_bytes=41_875_931_136, floor_bytes=2_147_483_648,
                          headroom_bytes=39_728_447_488),
        scaling=[Advice(signal="workers_busy", severity="warn", figure=0.86,
                        message="the workers computed 86 % of the last minute: add a worker or a GPU"),
                 Advice(signal="cache_hit_rate", severity="info", figure=0.46,
                        message="46 % of inputs came from the cache: a larger cache_bytes may raise it")],
    )  # fmt: skip


def test_the_page_renders_every_field_of_a_full_stats(appliance: Appliance, tab: Page) -> None:
    stats = filled_stats(time.time())
    body = msgspec.json.encode(stats)
    tab.route("**/stats", lambda route: route.fulfill(status=200, content_type="application/json", body=body))
    tab.goto(appliance.url + "/")
    wait_renders(tab, 1)
    assert disagreements(tab, json.loads(body)) == []
    assert text(tab, "#uptime") == "1 d 2 h" and text(tab, "#v-4xx") == "7" and text(tab, "#v-memory") == "37.0 GiB"
    rows = [[c.strip() for c in row.locator("td").all_inner_texts()] for row in tab.locator("#workers tr").all()]
    assert [r[1:4] for r in rows] == [["ready", "primary", "cuda:0 · cores 0-3"],
                                      ["ready", "light", "cpu · cores 4-5"],
                                      ["starting", "light", "cpu · cores 6-7"]]  # fmt: skip
    assert [r[6] for r in rows] == ["62.0 %", "18.0 %", "0.0 %"] and rows[0][7:9] == ["2.3 GiB", "1.1 GiB"]
    assert [r[9] for r in rows] == ["1 (crash 1)", "0", "2 (heartbeat 2)"]
    advice = tab.locator("#advice li").all_inner_texts()
    assert len(advice) == 2 and all(a.message in shown for a, shown in zip(stats.scaling, advice))
    # one point per history step; the idle step is a gap in the latency line, not a zero
    assert points_in(tab, "c-throughput", "rps") == 30 and points_in(tab, "c-latency", "p99") == 29
    assert points_in(tab, "c-cache", "hit") == 29
    screenshot(tab, "status-page-filled.png")


# ---- API keys ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, tiny_transformer: Path) -> Iterator[Appliance]:
    tmp = tmp_path_factory.mktemp("page-keyed")
    keys = tmp / "api_keys"
    keys.write_text(f"{KEY}\n")
    models = [{"name": MAIN, "path": str(tiny_transformer), "main": True}]
    env = {"APPLIANCE_API_KEYS_FILE": str(keys)}
    with serving(tmp, models, workers=1, env=env, headers=bearer(KEY)) as running:
        yield running


def ask_for_key(page: Page, message: str) -> None:
    page.wait_for_function("m => document.getElementById('key').open && "
                           "document.getElementById('key-msg').textContent.includes(m)", arg=message)  # fmt: skip


def test_with_api_keys_the_page_asks_for_one(keyed: Appliance, tab: Page) -> None:
    assert get(keyed.url + "/stats")[0] == 401
    tab.goto(keyed.url + "/")
    ask_for_key(tab, "needs an API key")
    assert renders(tab) == 0 and text(tab, "#v-workers") == "—"
    tab.fill("#key-input", "sk-page-wrong")
    tab.click("#key button")
    ask_for_key(tab, "refused")
    assert renders(tab) == 0 and tab.evaluate("sessionStorage.length") == 0
    tab.fill("#key-input", KEY)
    tab.click("#key button")
    wait_renders(tab, 1)
    assert text(tab, "#v-workers") == "1 / 1" and tab.locator("#workers tr").count() == 1
    assert tab.evaluate("sessionStorage.getItem('appliance.apiKey')") == KEY
    tab.reload()  # the key is kept for the tab's life: no second prompt
    wait_renders(tab, 1)
    assert not tab.evaluate("document.getElementById('key').open")
