"""``gateway/prometheus.py``'s render thread over a real server (``fake_backend``): a scrape is
formatted off the event loop, so the gateway answers other requests while one renders; scrapes
render one at a time; and each shows the counters as they were when it was taken, however the
loop counts on meanwhile.

A gate collector added to the exporter's registry holds a render for as long as the test wants
and records the thread and how many renders were inside it at once. No timing is asserted: the
waits are generous bounds, and a loop blocked by a render would fail them by hanging.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterator

import pytest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from fake_backend import MAIN, TEST_CONFIG, FakeBackend, ServerThread
from gateway.app import build_app
from gateway.prometheus import EXPORTER
from harness import Reply

WAIT_S = 30.0  # bound on every wait: two busy cores, never a timing assertion
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Gate:
    """A Collector that holds each render until ``release`` (or ``hold_s`` passes) and records
    where it ran."""

    def __init__(self, name: str, hold_s: float = WAIT_S) -> None:
        self.name, self.hold_s = name, hold_s
        self.entered = threading.Event()
        self.released = threading.Event()
        self.lock = threading.Lock()
        self.inside = 0
        self.most_inside = 0
        self.renders = 0
        self.threads: set[int] = set()

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
            self.renders += 1
            self.threads.add(threading.get_ident())
        self.entered.set()
        try:
            self.released.wait(self.hold_s)
        finally:
            with self.lock:
                self.inside -= 1
        yield GaugeMetricFamily(self.name, "Renders through this gate", value=1)


class GatedServer:
    """A real server whose exporter renders through the gates the test adds."""

    def __init__(self) -> None:
        self.app = build_app(TEST_CONFIG, FakeBackend())
        self.server = ServerThread(self.app)
        self.gates: list[Gate] = []

    def gate(self, name: str, hold_s: float = WAIT_S) -> Gate:
        self.gates.append(Gate(name, hold_s))
        self.app[EXPORTER].registry.register(self.gates[-1])  # type: ignore[arg-type]  # a duck-typed Collector
        return self.gates[-1]


@pytest.fixture
def gated() -> Iterator[GatedServer]:
    rig = GatedServer()
    rig.server.start()
    try:
        yield rig
    finally:
        for gate in rig.gates:
            gate.released.set()  # a failed test must not leave a render held
        rig.server.stop()


def samples(reply: Reply) -> Samples:
    assert reply.status == 200, reply.body[:200]
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(reply.body.decode()) for s in family.samples}  # fmt: skip


def embeds_ok(scrape: Samples) -> float:
    key = ("appliance_requests_total", (("method", "POST"), ("route", "/api/embed"), ("status", "200")))
    return scrape.get(key, 0.0)


def test_the_gateway_answers_while_a_scrape_renders(gated: GatedServer) -> None:
    server, gate = gated.server, gated.gate("test_held")
    with ThreadPoolExecutor(max_workers=1) as client:
        held: Future[Reply] = client.submit(server.get, "/metrics")
        assert gate.entered.wait(WAIT_S), "the scrape never reached its render"
        # the render is held on its thread: a loop it blocked could answer none of these
        assert server.get("/health").status == 200
        for i in range(5):
            assert server.post("/api/embed", {"model": MAIN, "input": [f"text {i}"]}).status == 200
        assert not held.done()
        gate.released.set()
        during = samples(held.result(timeout=WAIT_S))
    loop_thread = server.thread.ident
    assert gate.threads and loop_thread not in gate.threads
    assert during[("test_held", ())] == 1
    assert embeds_ok(during) == 0  # taken on the loop before the render: the embeds came after
    assert embeds_ok(samples(server.get("/metrics"))) == 5


def test_scrapes_render_one_at_a_time(gated: GatedServer) -> None:
    server, slow = gated.server, gated.gate("test_slow", hold_s=0.2)  # each render held a while
    with ThreadPoolExecutor(max_workers=3) as clients:
        scrapes = [clients.submit(server.get, "/metrics") for _ in range(3)]
        answers = [samples(f.result(timeout=WAIT_S)) for f in scrapes]
    assert all(a[("test_slow", ())] == 1 for a in answers)
    assert slow.renders == 3 and slow.most_inside == 1
    assert len(slow.threads) == 1 and server.thread.ident not in slow.threads
