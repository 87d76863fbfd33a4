"""`python -m bench faults`: what clients see while workers are SIGKILLed under a steady load.

The appliance (started here with its cache off, so every request reaches a worker, unless
``--url``) serves a closed-loop load (aiohttp; each of C connections sends its next request as
soon as the last one is answered) of single sentences from the bench corpus. Every
``--kill-every`` seconds one worker is SIGKILLed: its pid comes from ``GET /stats``, slots are
taken in turn, and a slot that is not up, has no pid yet, or is still respawning is passed over.
``/stats`` is then polled every 100 ms until that slot is up under a new pid: the respawn time.

A request belongs to a fault window if it was in flight at any moment between a kill and
``--window-tail`` seconds after its slot came back; p50/p99 (successful requests) are reported
inside and outside those windows. Failures are counted by HTTP status and by the error body's
``type``; status 0 means no HTTP answer (connection dropped, client timeout), typed by the
exception. Issue 6's target is zero failures. Each kill also says how many other slots were up
when it struck and how many requests failed in its window: with no other slot up, requests can
only wait for the respawn, and fail with a 503 once the gateway stops waiting, so zero failures
is reachable only while kills are further apart than a respawn takes.

An appliance started here is stopped with SIGTERM at the end, and ``bench.launcher`` reports what
it left (``leftover_pids``, ``leftover_segments``: both empty after a clean stop). With ``--url``
the workers must run on this machine: their pids are killed from here.

Last line: one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import statistics
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import aiohttp
import msgspec

from bench.corpus import sentences
from bench.launcher import Appliance
from bench.points import Point, summarize, table
from bench.target import add_options, appliance, auth_headers

POLL_S = 0.1  # /stats polling period while a slot respawns


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench faults", description=__doc__.splitlines()[0])
    add_options(p, workers="2")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of measured load")
    p.add_argument("--kill-every", type=float, default=10.0, help="seconds between kills (first at this mark)")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of load before the measurement")
    p.add_argument("--window-tail", type=float, default=1.0,
                   help="seconds a fault window lasts after its slot is back up")  # fmt: skip
    p.add_argument("--respawn-timeout", type=float, default=60.0, help="give up on a respawn after this long")
    p.add_argument("--request-timeout", type=float, default=30.0,
                   help="client-side limit per request; one reached counts as hung")  # fmt: skip
    return p.parse_args(argv)


# ---- what one run records ---------------------------------------------------------------------
@dataclass
class Outcome:
    """One request as the client saw it; times in seconds since the measured start."""

    sent: float
    done: float
    status: int  # 0: no HTTP answer
    error: str  # the error body's ``type``, an exception name, or "" on success


@dataclass
class Kill:
    slot: int
    pid: int
    at: float  # seconds since the measured start
    new_pid: int = 0
    up_s: float | None = None  # kill -> slot routable again (``up`` after having been seen down)
    respawn_s: float | None = None  # kill -> slot up under a new pid (/stats pids trail by ~1 s)
    others_up: int = 0  # other slots up at the kill: with none, requests can only wait or fail
    failures: int = 0  # failed requests in flight during this kill's fault window (latest kill wins)


@dataclass
class Run:
    t0: float  # perf_counter of the measured start; warm-up requests are sent before it
    outcomes: list[Outcome] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    skipped: int = 0  # kill marks where no slot was up to kill
    examples: dict[str, str] = field(default_factory=dict)  # error type -> its first message

    def now(self) -> float:
        return time.perf_counter() - self.t0


# ---- load -------------------------------------------------------------------------------------
async def post(session: aiohttp.ClientSession, url: str, model: str, text: str) -> tuple[int, str, str]:
    """(HTTP status, error type, error message); status 0 when no HTTP answer came."""
    try:
        async with session.post(url + "/api/embed", json={"model": model, "input": text}) as response:
            body = await response.read()
            return (response.status, "", "") if response.status == 200 else (response.status, *api_error(body))
    except TimeoutError:  # aiohttp's timeouts are TimeoutErrors: the request hung past the limit
        return 0, "client_timeout", "no answer within --request-timeout"
    except aiohttp.ClientError as exc:
        return 0, type(exc).__name__, str(exc)


def api_error(body: bytes) -> tuple[str, str]:
    try:
        error = msgspec.json.decode(body)["error"]
        return str(error["type"]), str(error["message"])
    except (msgspec.DecodeError, KeyError, TypeError):
        return "unparsed", body[:200].decode(errors="replace")


async def client(session: aiohttp.ClientSession, url: str, model: str, texts: Iterator[str], run: Run,
                 stop_at: float) -> None:  # fmt: skip
    while run.now() < stop_at:
        sent = run.now()
        status, error, message = await post(session, url, model, next(texts))
        if sent >= 0:  # warm-up requests are not counted
            run.outcomes.append(Outcome(sent, run.now(), status, error))
            if error:
                run.examples.setdefault(error, message)


# ---- faults -----------------------------------------------------------------------------------
async def worker_cards(session: aiohttp.ClientSession, url: str) -> list[dict[str, Any]] | None:
    """``/stats`` workers, or None when the gateway did not answer (it is busy, not the subject)."""
    try:
        async with session.get(url + "/stats") as response:
            if response.status != 200:
                return None
            return list(msgspec.json.decode(await response.read())["workers"])
    except (aiohttp.ClientError, TimeoutError, msgspec.DecodeError, KeyError):
        return None


async def wait_all_up(session: aiohttp.ClientSession, url: str, timeout: float = 120.0) -> list[dict[str, Any]]:
    """/ready means one worker can serve; kills need every slot up and its pid reported."""
    deadline, cards = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        cards = await worker_cards(session, url)
        if cards and all(c["up"] and c["pid"] for c in cards):
            return cards
        await asyncio.sleep(POLL_S)
    raise SystemExit(f"workers not all up with a pid after {timeout}s: {cards}")


def owned(pid: int, parent: int | None) -> bool:
    """The pid is a live child of the appliance we started (any live process with ``--url``):
    never SIGKILL a pid that /stats still shows after it was reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state, ppid = stat.rsplit(")", 1)[1].split()[:2]
    return state != "Z" and (parent is None or int(ppid) == parent)


def pick_victim(cards: list[dict[str, Any]], turn: int, respawning: set[int],
                parent: int | None) -> dict[str, Any] | None:  # fmt: skip
    """Slots in turn from ``turn``; one not up, without a pid, or still respawning is passed over
    (right after a respawn /stats may still show the dead pid: the worker reports it ~1 s late)."""
    order = [cards[(turn + k) % len(cards)] for k in range(len(cards))]
    return next((c for c in order if c["up"] and c["pid"] and c["index"] not in respawning
                 and owned(c["pid"], parent)), None)  # fmt: skip


async def watch_respawn(session: aiohttp.ClientSession, url: str, kill: Kill, run: Run, timeout: float) -> None:
    seen_down = False
    while run.now() < kill.at + timeout:
        cards = await worker_cards(session, url)
        card = cards[kill.slot] if cards else None
        if card is not None:
            seen_down = seen_down or not card["up"]
            if kill.up_s is None and seen_down and card["up"]:
                kill.up_s = round(run.now() - kill.at, 3)
            if card["up"] and card["pid"] not in (0, kill.pid):
                kill.new_pid, kill.respawn_s = card["pid"], round(run.now() - kill.at, 3)
                return
        await asyncio.sleep(POLL_S)


async def killer(session: aiohttp.ClientSession, url: str, args: argparse.Namespace, run: Run,
                 parent: int | None) -> list[asyncio.Task[None]]:  # fmt: skip
    """At every ``--kill-every`` mark inside the run, SIGKILL one worker and watch it come back."""
    watchers: list[asyncio.Task[None]] = []
    for turn in itertools.count():
        mark = (turn + 1) * args.kill_every
        if mark >= args.duration:
            return watchers
        await asyncio.sleep(max(0.0, mark - run.now()))
        respawning = {k.slot for k in run.kills if k.respawn_s is None}
        cards = await worker_cards(session, url)
        victim = pick_victim(cards, turn, respawning, parent) if cards else None
        if victim is None:
            run.skipped += 1
            continue
        others = sum(c["up"] and c["index"] not in respawning | {victim["index"]} for c in cards)
        kill = Kill(victim["index"], victim["pid"], round(run.now(), 3), others_up=others)
        try:
            os.kill(kill.pid, signal.SIGKILL)
        except ProcessLookupError:  # it died on its own since /stats answered
            run.skipped += 1
            continue
        run.kills.append(kill)
        watchers.append(asyncio.create_task(watch_respawn(session, url, kill, run, args.respawn_timeout)))
    return watchers


# ---- one run ----------------------------------------------------------------------------------
async def drive(args: argparse.Namespace, url: str, parent: int | None) -> Run:
    """Warm up, then load for ``--duration`` while the killer runs; wait for the last respawns."""
    texts = itertools.cycle(sentences(4000))
    timeout = aiohttp.ClientTimeout(total=args.request_timeout)
    headers = auth_headers(args.api_key)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=args.concurrency),
                                     headers=headers) as load, \
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5), headers=headers) as control:  # fmt: skip
        # its own connection: /stats polls must not queue behind the load's connections
        await wait_all_up(control, url)
        run = Run(t0=time.perf_counter() + args.warmup)
        clients = [client(load, url, args.model, texts, run, args.duration) for _ in range(args.concurrency)]
        load_done = asyncio.gather(*clients)
        watchers = await killer(control, url, args, run, parent)
        await load_done
        await asyncio.gather(*watchers)
    return run


# ---- figures ----------------------------------------------------------------------------------
def fault_windows(run: Run, tail: float) -> list[tuple[float, float]]:
    """[kill, back + tail] per kill; a slot that never came back stays faulty to the end."""
    return [(k.at, k.at + k.respawn_s + tail if k.respawn_s is not None else float("inf")) for k in run.kills]


def covered(windows: list[tuple[float, float]], duration: float) -> float:
    """Seconds of [0, duration] inside at least one window (windows may overlap)."""
    total, reach = 0.0, 0.0
    for start, end in sorted(windows):
        start, end = max(start, reach), min(end, duration)
        if end > start:
            total, reach = total + end - start, end
    return total


def split(run: Run, windows: list[tuple[float, float]]) -> tuple[list[Outcome], list[Outcome]]:
    """(in a fault window, outside): a request counts as faulty if in flight during any window."""
    faulty = [any(o.sent < end and o.done > start for start, end in windows) for o in run.outcomes]
    return ([o for o, f in zip(run.outcomes, faulty) if f], [o for o, f in zip(run.outcomes, faulty) if not f])


def attribute(run: Run, windows: list[tuple[float, float]]) -> None:
    """Count each kill's failures (was another worker up to take over, and did it?): a failure in
    overlapping windows goes to the latest kill before its answer, the one most likely its cause."""
    for o in run.outcomes:
        if o.status == 200:
            continue
        hit = [k for k, (start, end) in zip(run.kills, windows) if o.sent < end and start < o.done]
        if hit:
            hit[-1].failures += 1  # kills are in time order


def phase(name: str, outcomes: list[Outcome], concurrency: int, seconds: float) -> Point:
    latencies = [o.done - o.sent for o in outcomes if o.status == 200]
    seconds = max(round(seconds, 3), 0.001)  # no kill, no fault window: keep req/s a number
    return summarize(name, 1, concurrency, latencies, len(outcomes) - len(latencies), seconds)


def report(args: argparse.Namespace, run: Run, phases: list[Point],
           started: Appliance | None) -> dict[str, object]:  # fmt: skip
    """``started``: the appliance this bench started and has closed (None with ``--url``)."""
    failures = [o for o in run.outcomes if o.status != 200]
    respawns = [k.respawn_s for k in run.kills if k.respawn_s is not None]
    left = started.leftover if started else None  # the launcher checks every worker it saw
    return {"model": args.model, "workers": args.workers if not args.url else None, "url": args.url,
            "concurrency": args.concurrency, "duration_s": args.duration, "kill_every_s": args.kill_every,
            "window_tail_s": args.window_tail,
            "sent": len(run.outcomes), "succeeded": len(run.outcomes) - len(failures), "failed": len(failures),
            "failed_by_status": {str(s): n for s, n in sorted(Counter(o.status for o in failures).items())},
            "failed_by_type": dict(sorted(Counter(o.error for o in failures).items())),
            "failure_examples": run.examples,
            "hung": sum(o.error == "client_timeout" for o in failures),
            "kills": len(run.kills), "kills_skipped": run.skipped, "respawn_s": respawns,
            "respawn_mean_s": round(statistics.mean(respawns), 3) if respawns else None,
            "respawn_max_s": max(respawns) if respawns else None,
            "not_respawned": len(run.kills) - len(respawns),
            "kill_log": [asdict(k) for k in run.kills],
            **{p.scenario: asdict(p) for p in phases},
            "appliance_pid": started.pid if started else None,
            "appliance_exit_code": started.process.returncode if started else None,
            "appliance_forced": started.forced if started else None,
            "leftover_pids": left.pids if left is not None else None,
            "leftover_segments": left.segments if left is not None else None,
            "target_zero_failures": not failures}  # fmt: skip


def kill_table(kills: list[Kill]) -> str:
    head = (f"{'kill':>4}{'at s':>8}{'slot':>6}{'pid':>9}{'new pid':>9}{'up s':>8}{'respawn s':>11}"
            f"{'others up':>11}{'failed':>8}")  # fmt: skip
    rows = [f"{n:>4}{k.at:>8.2f}{k.slot:>6}{k.pid:>9}{k.new_pid or '-':>9}{_s(k.up_s):>8}{_s(k.respawn_s):>11}"
            f"{k.others_up:>11}{k.failures:>8}" for n, k in enumerate(kills, 1)]  # fmt: skip
    return "\n".join([head, *rows])


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f}"


def show(figures: dict[str, Any], run: Run, phases: list[Point]) -> None:
    print(kill_table(run.kills))
    print("\n".join(line[: -len("  x raw")] for line in table(phases).splitlines()))  # no raw limit here
    print(f"sent {figures['sent']}, succeeded {figures['succeeded']}, failed {figures['failed']} "
          f"(by status {figures['failed_by_status'] or '-'}, by type {figures['failed_by_type'] or '-'}), "
          f"hung {figures['hung']}; kills {figures['kills']} (skipped {figures['kills_skipped']}), "
          f"respawn mean {figures['respawn_mean_s']} s, max {figures['respawn_max_s']} s")  # fmt: skip


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    # cache off: a sentence the load sends twice must still reach a worker
    with appliance(args, {"APPLIANCE_CACHE_BYTES": "0"}) as (url, started):
        run = asyncio.run(drive(args, url, started.pid if started else None))
    windows = fault_windows(run, args.window_tail)
    inside, outside = split(run, windows)
    attribute(run, windows)
    faulty_s = covered(windows, args.duration)
    phases = [phase("steady", outside, args.concurrency, args.duration - faulty_s),
              phase("fault", inside, args.concurrency, faulty_s)]  # fmt: skip
    figures = report(args, run, phases, started)
    show(figures, run, phases)
    print(json.dumps(figures))
    return 0
