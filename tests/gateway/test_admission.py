"""Admission (``gateway/admission.py``) over real HTTP against the in-test backend: API keys and
their rotation, per-principal request and input rates with exact ``Retry-After``, the memory
guard, the order of the checks, and the bounds (LRU of principals, a request no minute can hold).

Time is a ``FakeClock`` handed to the admission object, so every rate and ``Retry-After`` here is
exact and nothing sleeps; the memory guard is the real ``MemoryGuard`` with a probe the test sets.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import msgspec
import pytest

from appliance.config import Config
from appliance.guards import RETRY_AFTER_S, MemoryGuard
from gateway.admission import (
    Admission,
    AdmissionReport,
    ApiKeys,
    KeysFileError,
    TokenBuckets,
    digest,
    read_keys,
)
from gateway.app import build_app
from harness import Reply

# The contract tests' limits (tests/gateway/fake_backend.py TEST_CONFIG): 64 KiB bodies, 16 inputs,
# 1000 characters.
CONFIG = Config(max_body_bytes=64 * 1024, max_inputs=16, max_input_chars=1000, request_timeout=2.0)

KEY_A, KEY_B, KEY_C = "sk-alpha-0001", "sk-bravo-0002", "sk-charlie-0003"
# Each work route with a body of `n` inputs (texts, or documents for rerank: the query is free).
WORK_BODIES: dict[str, Callable[[int], dict[str, Any]]] = {
    "/api/embed": lambda n: {"model": "mini", "input": [f"text {i}" for i in range(n)]},
    "/v1/embeddings": lambda n: {"model": "mini", "input": [f"text {i}" for i in range(n)]},
    "/api/embed/batch": lambda n: {"model": "mini", "inputs": [[f"text {i}"] for i in range(n)]},
    "/api/rerank": lambda n: {"model": "cross", "query": "q", "documents": [f"doc {i}" for i in range(n)]},
    "/v1/rerank": lambda n: {"model": "cross", "query": "q", "documents": [f"doc {i}" for i in range(n)]},
}
OPEN_GETS = ["/health", "/ready"]
SYSTEM_GETS = ["/v1/models", "/api/tags", "/stats", "/cache-stats"]


class FakeClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Gateway:
    """A real server for one admission setup, and a client that can pick its key and address."""

    def __init__(self, server: Any, backend: Any, admission: Admission) -> None:
        self.server, self.backend, self.admission = server, backend, admission  # conftest's types

    def call(self, method: str, path: str, body: Any = None, *, key: str | None = None,
             source: str = "127.0.0.1", raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> Reply:  # fmt: skip
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        if key is not None:
            hdrs["Authorization"] = f"Bearer {key}"
        payload = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10, source_address=(source, 0))
        try:
            conn.request(method, path, body=payload, headers=hdrs)
            response = conn.getresponse()
            return Reply(response.status, response.headers, response.read())
        finally:
            conn.close()

    def embed(self, n: int = 1, *, route: str = "/api/embed", **kwargs: Any) -> Reply:
        return self.call("POST", route, WORK_BODIES[route](n), **kwargs)

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.call("GET", path, **kwargs)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "api_keys"
    path.write_text(f"# rotated quarterly\n{KEY_A}\n\n   {KEY_B}  \n#{KEY_C}\n")
    return path


@pytest.fixture
def start(clock: FakeClock, start_server: Callable[..., Any]) -> Callable[..., Gateway]:
    """``start(keys_file=None, rpm=0, ipm=0, guard=None)``: a gateway whose admission is built from
    the config as ``serve`` builds it, on the test's clock; every server stops after the test."""

    def start(keys_file: Path | None = None, rpm: int = 0, ipm: int = 0, guard: MemoryGuard | None = None) -> Gateway:
        config = msgspec.structs.replace(CONFIG, api_keys_file=str(keys_file or ""),
                                         rate_limit_rpm=rpm, rate_limit_ipm=ipm)  # fmt: skip
        admission = Admission.from_config(config, guard, clock)
        return Gateway(*start_server(config, admission), admission)

    return start


def error_of(reply: Reply, status: int, kind: str) -> str:
    assert reply.status == status, reply.body
    error = reply.json()["error"]
    assert (error["type"], error["code"]) == (kind, status), error
    return str(error["message"])


def retry_after(reply: Reply) -> int:
    return int(reply.headers["Retry-After"])


def statuses(replies: Sequence[Reply]) -> list[int]:
    return [r.status for r in replies]


# ---- 1. API keys ------------------------------------------------------------------------------
def test_keys_file_format_comments_blanks_and_whitespace(keys_file: Path) -> None:
    principals = read_keys(str(keys_file))
    assert len(principals) == 2  # KEY_C is commented out
    assert all(p.startswith("key:") and KEY_A not in p for p in principals.values())


@pytest.mark.parametrize("content", ["", "\n\n", "# only a comment\n   \n"])
def test_a_keys_file_without_keys_is_a_startup_error_naming_the_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "keys.txt"
    path.write_text(content)
    with pytest.raises(KeysFileError, match="keys.txt.*holds no key"):
        read_keys(str(path))
    config = msgspec.structs.replace(CONFIG, api_keys_file=str(path))
    with pytest.raises(KeysFileError, match="keys.txt"):
        build_app(config, backend=None)  # type: ignore[arg-type]  # never silently open


def test_a_missing_keys_file_is_a_startup_error(tmp_path: Path) -> None:
    with pytest.raises(KeysFileError, match="nowhere.*cannot be read"):
        ApiKeys(str(tmp_path / "nowhere"))


def test_serve_exits_2_naming_the_file_before_starting_anything(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from appliance.cli import compose
    from appliance.serving import serve

    path = tmp_path / "empty-keys"
    path.write_text("# nothing yet\n")
    config = Config(api_keys_file=str(path), state_dir=str(tmp_path / "state"))
    with caplog.at_level(logging.ERROR, logger="appliance"):
        assert asyncio.run(serve(config, compose)) == 2
    assert str(path) in caplog.text and "cannot start" in caplog.text


def test_missing_wrong_and_right_key(start: Callable[..., Gateway], keys_file: Path) -> None:
    gw = start(keys_file)
    missing = gw.embed()
    assert "Authorization: Bearer" in error_of(missing, 401, "unauthorized")
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = gw.embed(key="sk-nope")
    assert error_of(wrong, 401, "unauthorized") == "invalid API key"
    challenge = wrong.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer") and 'error="invalid_token"' in challenge
    error_of(gw.embed(key=KEY_C), 401, "unauthorized")  # commented out in the file
    error_of(gw.embed(headers={"Authorization": f"Basic {KEY_A}"}), 401, "unauthorized")
    assert gw.embed(key=KEY_A).status == 200 and gw.embed(key=KEY_B).status == 200
    assert gw.embed(headers={"Authorization": f"bearer {KEY_A}"}).status == 200  # the scheme is case-insensitive
    assert len(gw.backend.calls) == 3  # refused requests never reached the backend
    assert gw.admission.refused["unauthorized"] == 4


def test_probes_stay_open_and_everything_else_needs_a_key(start: Callable[..., Gateway], keys_file: Path) -> None:
    gw = start(keys_file)
    assert statuses([gw.get(path) for path in OPEN_GETS]) == [200, 200]
    for path in SYSTEM_GETS:
        error_of(gw.get(path), 401, "unauthorized")
        assert gw.get(path, key=KEY_A).status == 200
    error_of(gw.get("/no/such/route"), 401, "unauthorized")  # a 401 reveals no route
    error_of(gw.get("/no/such/route", key=KEY_A), 404, "not_found")
    gw.backend.ready = False
    error_of(gw.get("/ready"), 503, "not_ready")  # readiness, not auth, for a probe


def test_keys_rotate_when_the_file_changes_checked_at_most_once_a_second(
    start: Callable[..., Gateway], keys_file: Path, clock: FakeClock
) -> None:
    gw = start(keys_file)
    assert gw.embed(key=KEY_A).status == 200
    staged = keys_file.with_suffix(".new")
    staged.write_text(f"{KEY_C}\n")
    os.replace(staged, keys_file)  # how an operator (or config management) rotates: atomically
    clock.advance(0.5)
    assert gw.embed(key=KEY_A).status == 200  # not looked at again within the second
    clock.advance(0.5)
    error_of(gw.embed(key=KEY_A), 401, "unauthorized")
    assert gw.embed(key=KEY_C).status == 200
    keys_file.write_text(f"{KEY_C}\n{KEY_B}\n")  # an in-place rewrite is seen too
    clock.advance(1.0)
    assert gw.embed(key=KEY_B).status == 200


def test_a_broken_rotation_keeps_the_previous_keys(
    start: Callable[..., Gateway], keys_file: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    gw = start(keys_file)
    with caplog.at_level(logging.ERROR, logger="appliance.gateway.admission"):
        keys_file.write_text("# emptied by mistake\n")
        clock.advance(1.0)
        assert gw.embed(key=KEY_A).status == 200  # never open, never locked out by a bad write
        error_of(gw.embed(), 401, "unauthorized")
        keys_file.unlink()
        clock.advance(1.0)
        assert gw.embed(key=KEY_B).status == 200
    assert "holds no key" in caplog.text and "cannot be read" in caplog.text
    keys_file.write_text(f"{KEY_C}\n")  # the file comes back: read again
    clock.advance(1.0)
    assert gw.embed(key=KEY_C).status == 200
    error_of(gw.embed(key=KEY_A), 401, "unauthorized")


def test_only_complete_lines_are_keys(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "keys.txt"
    path.write_text(f"{KEY_A}\r\n{KEY_B}")
    with caplog.at_level(logging.WARNING, logger="appliance.gateway.admission"):
        assert list(read_keys(str(path))) == [digest(KEY_A)]  # a CRLF line is complete too
    assert "no newline yet" in caplog.text and KEY_B not in caplog.text  # a near-key is never logged
    path.write_text(KEY_A)  # `printf` without \n: not a key yet, and the error says why
    with pytest.raises(KeysFileError, match="holds no key.*ended by a newline"):
        read_keys(str(path))


def test_a_half_written_last_line_is_refused_until_its_newline_is_written(
    start: Callable[..., Gateway], keys_file: Path, clock: FakeClock
) -> None:
    keys_file.write_text(f"{KEY_A}\n{KEY_B[:6]}")  # `echo KEY_B >> keys` caught mid-write
    gw = start(keys_file)
    assert gw.embed(key=KEY_A).status == 200
    error_of(gw.embed(key=KEY_B[:6]), 401, "unauthorized")  # a prefix of a key is no key
    with keys_file.open("a") as fh:
        fh.write(KEY_B[6:])
    clock.advance(1.0)
    error_of(gw.embed(key=KEY_B), 401, "unauthorized")  # whole, but its line is not finished
    assert gw.embed(key=KEY_A).status == 200
    with keys_file.open("a") as fh:
        fh.write("\n")
    clock.advance(0.5)
    error_of(gw.embed(key=KEY_B), 401, "unauthorized")  # not looked at again within the second
    clock.advance(0.5)
    assert gw.embed(key=KEY_B).status == 200 and gw.embed(key=KEY_A).status == 200
    error_of(gw.embed(key=KEY_B[:6]), 401, "unauthorized")


# ---- 2. rate ----------------------------------------------------------------------------------
def test_requests_per_minute_then_429_with_exact_retry_after(start: Callable[..., Gateway], clock: FakeClock) -> None:
    gw = start(rpm=3)
    assert statuses([gw.embed() for _ in range(3)]) == [200, 200, 200]
    refused = gw.embed()
    assert "3 requests per minute" in error_of(refused, 429, "rate_limited")
    assert retry_after(refused) == 20  # one token refills every 60/3 s
    clock.advance(19.9)
    assert retry_after(gw.embed()) == 1  # 0.1 s short, rounded up
    clock.advance(0.1)
    assert gw.embed().status == 200
    error_of(gw.embed(), 429, "rate_limited")  # the refused requests were not charged, nor refunded
    clock.advance(3600)
    assert statuses([gw.embed() for _ in range(4)]) == [200, 200, 200, 429]  # a burst is capped at a minute's


def test_the_request_is_charged_before_the_body_is_read(start: Callable[..., Gateway]) -> None:
    gw = start(rpm=2)
    error_of(gw.call("POST", "/api/embed", raw=b"{not json"), 400, "malformed_json")  # costs a request
    error_of(gw.call("POST", "/api/embed", {"model": "mini", "input": []}), 400, "empty_input")
    oversized = b"x" * (CONFIG.max_body_bytes + 1)
    error_of(gw.call("POST", "/api/embed", raw=oversized), 429, "rate_limited")  # not 413: never read
    error_of(gw.call("POST", "/api/embed", raw=b"{not json"), 429, "rate_limited")


def test_only_work_routes_are_metered(start: Callable[..., Gateway]) -> None:
    gw = start(rpm=1)
    assert statuses([gw.get(path) for path in OPEN_GETS + SYSTEM_GETS for _ in range(3)]) == [200] * 18
    assert gw.embed().status == 200
    error_of(gw.embed(), 429, "rate_limited")


@pytest.mark.parametrize("route", list(WORK_BODIES))
def test_inputs_per_minute_count_texts_or_documents(
    start: Callable[..., Gateway], clock: FakeClock, route: str
) -> None:
    gw = start(ipm=10)
    assert statuses([gw.embed(4, route=route), gw.embed(4, route=route)]) == [200, 200]
    refused = gw.embed(4, route=route)
    assert "10 inputs per minute" in error_of(refused, 429, "rate_limited")
    assert retry_after(refused) == 12  # 2 of 4 short at 10/60 per second
    assert gw.embed(2, route=route).status == 200  # the refused 4 were not charged
    error_of(gw.embed(1, route=route), 429, "rate_limited")
    clock.advance(6.0)  # one input's worth
    assert gw.embed(1, route=route).status == 200


def test_a_request_no_minute_can_hold_is_422_and_charges_nothing(start: Callable[..., Gateway]) -> None:
    gw = start(ipm=10)  # max_inputs is 16, so 11..16 inputs pass the request limits
    message = error_of(gw.embed(11), 422, "too_many_inputs")
    assert "rate_limit_ipm" in message and "never" in message
    refused = gw.embed(16)
    error_of(refused, 422, "too_many_inputs")
    assert "Retry-After" not in refused.headers  # waiting would not help
    assert gw.embed(10).status == 200  # the full minute was still there
    assert "limit is 16" in error_of(gw.embed(17), 422, "too_many_inputs")  # max_inputs' own 422


def test_rates_are_per_key(start: Callable[..., Gateway], keys_file: Path) -> None:
    gw = start(keys_file, rpm=2, ipm=5)
    assert statuses([gw.embed(key=KEY_A) for _ in range(3)]) == [200, 200, 429]
    assert statuses([gw.embed(key=KEY_B) for _ in range(2)]) == [200, 200]
    # from another address the same key is the same principal
    error_of(gw.embed(key=KEY_A, source="127.0.0.2"), 429, "rate_limited")


def test_without_keys_rates_are_per_client_address(start: Callable[..., Gateway]) -> None:
    gw = start(ipm=5)
    assert statuses([gw.embed(5), gw.embed(1)]) == [200, 429]
    assert gw.embed(5, source="127.0.0.2").status == 200
    error_of(gw.embed(1, source="127.0.0.2"), 429, "rate_limited")
    assert gw.admission.report().principals == 2


def test_idle_principals_are_dropped_beyond_the_cap() -> None:
    buckets = TokenBuckets(per_minute=1, max_principals=3)
    assert [buckets.take(p, 1, 0.0) for p in "abc"] == [0.0, 0.0, 0.0]
    assert buckets.take("a", 1, 0.0) == 60.0  # "a" is now the most recently used
    assert buckets.take("d", 1, 0.0) == 0.0  # evicts "b", the least recently used
    assert list(buckets.buckets) == ["c", "a", "d"]
    assert buckets.take("b", 1, 0.0) == 0.0  # back with a full bucket
    assert len(buckets.buckets) == 3


def test_refill_is_continuous_and_capped() -> None:
    buckets = TokenBuckets(per_minute=60)
    assert buckets.take("p", 60, 0.0) == 0.0
    assert buckets.take("p", 1, 0.0) == pytest.approx(1.0)
    assert buckets.take("p", 30, 15.0) == pytest.approx(15.0)  # 15 refilled, 15 short
    assert buckets.take("p", 30, 30.0) == 0.0
    assert buckets.take("p", 61, 10_000.0) == pytest.approx(1.0)  # never more than a minute's


# ---- 4. memory guard --------------------------------------------------------------------------
def test_memory_guard_refuses_new_work_until_memory_recovers(start: Callable[..., Gateway]) -> None:
    available = [4 << 30]
    guard = MemoryGuard(floor=1 << 30, probe=lambda: available[0])
    gw = start(guard=guard)
    assert gw.embed().status == 200
    available[0] = 512 << 20
    guard.sample()
    for route in WORK_BODIES:
        refused = gw.embed(route=route)
        assert "memory_floor" in error_of(refused, 503, "memory_low")
        assert retry_after(refused) == RETRY_AFTER_S
    assert statuses([gw.get(path) for path in OPEN_GETS + SYSTEM_GETS]) == [200] * 6
    report = gw.get("/stats").json()["admission"]
    assert report["memory_low"] is True and report["refused"] == {"memory_low": 5}
    assert guard.refusals == 5 and len(gw.backend.calls) == 1
    available[0] = 2 << 30
    guard.sample()
    assert gw.embed().status == 200


# ---- order ------------------------------------------------------------------------------------
def test_a_bad_key_wins_over_everything(start: Callable[..., Gateway], keys_file: Path) -> None:
    guard = MemoryGuard(floor=1 << 30, probe=lambda: 0)  # low
    gw = start(keys_file, rpm=1, guard=guard)
    error_of(gw.embed(key=KEY_A), 503, "memory_low")  # spends KEY_A's only request
    error_of(gw.embed(key=KEY_A), 429, "rate_limited")
    gw.backend.ready = False
    for key in (None, "sk-nope"):
        error_of(gw.embed(key=key), 401, "unauthorized")  # bad key AND over rate AND not ready AND low


def test_not_ready_comes_before_the_rate_and_costs_no_token(start: Callable[..., Gateway]) -> None:
    gw = start(rpm=1)
    gw.backend.ready = False
    error_of(gw.embed(), 503, "not_ready")
    gw.backend.ready, gw.backend.draining = True, True
    error_of(gw.embed(), 503, "draining")
    gw.backend.draining = False
    assert gw.embed().status == 200


def test_rate_before_request_limits_before_memory(start: Callable[..., Gateway]) -> None:
    available = [1 << 30]
    guard = MemoryGuard(floor=1 << 20, probe=lambda: available[0])
    gw = start(ipm=3, guard=guard)
    available[0] = 0
    guard.sample()
    error_of(gw.call("POST", "/api/embed", {"model": "mini", "input": ["x" * 1001]}), 422, "input_too_long")
    error_of(gw.embed(3), 503, "memory_low")  # admitted by the rate (and charged), refused by memory
    error_of(gw.embed(1), 429, "rate_limited")  # over the input rate AND low on memory -> 429


def test_nothing_configured_means_no_middleware_and_no_state() -> None:
    admission = Admission.from_config(CONFIG)
    assert admission.keys is None and admission.requests is None and admission.inputs is None
    assert admission.report() == AdmissionReport()
