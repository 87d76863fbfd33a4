"""`python -m bench refusals`: what many refused inputs cost one request, counted in worker records
and input sends (counts, not timings), against the one-at-a-time loop they replace, in the same run.

One batch of ``--inputs`` sentences, ``--refused`` of them (spread evenly) too long for the model
with ``truncate: false``, served two ways by the same appliance, cache off:

- **per item** (the measured path): ``POST /api/embed/batch`` with ``on_error: "skip"``; the workers
  answer per item (``workers/refusals.py``), so the request is one round.
- **one at a time** (the baseline: the gateway's loop before the workers answered per item, run
  here by the client): ``POST /api/embed`` of every input still live; each 422 names one input,
  which is set aside, and the rest are sent again.

Each way reports its HTTP calls, the inputs it sent, inputs failed, and from the workers' own
counters (``GET /stats``, read once settled: two reads more than a Stats period apart agree) the
work records they received (``requests`` admitted plus ``refused_requests`` failed whole for one
input) and the inputs they computed (``items``). The sentences come from the bench corpus; one
over the model's max length counts as refused too. Last line: one JSON object with both ways and
the ratios of records and input sends, per item over one at a time.
"""

from __future__ import annotations

import argparse
import json
import re
import time
import urllib.error
import urllib.request
from typing import Any, Sequence

from bench.corpus import sentences
from bench.target import add_options, appliance, auth_headers

TOO_LONG = "word " * 2000  # over any served model's max length
SETTLE_S = 1.5  # more than the workers' Stats period (1 s)
NAMED = re.compile(r"\(input (\d+)\)$")


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench refusals", description=__doc__.splitlines()[0])
    add_options(p, workers="1")
    p.add_argument("--inputs", type=int, default=256, help="inputs in the request")
    p.add_argument("--refused", type=int, default=32, help="of them too long, spread evenly")
    return p.parse_args(argv)


def request_inputs(count: int, refused: int) -> tuple[list[str], set[int]]:
    step = count / refused if refused else 0
    bad = {int(i * step + step / 2) for i in range(refused)}
    texts = sentences(count)
    return [f"{TOO_LONG}{i}" if i in bad else text for i, text in enumerate(texts)], bad


def call(url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
    request = urllib.request.Request(url, json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **headers})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def settled(url: str, headers: dict[str, str], timeout: float = 30.0) -> tuple[int, int]:
    """The workers' (work records received, inputs computed), once two reads ``SETTLE_S`` apart agree."""
    last: tuple[int, int] | None = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(urllib.request.Request(f"{url}/stats", headers=headers), timeout=10) as answer:
            workers = json.loads(answer.read())["workers"]
        now = (sum(w["requests"] + w["refused_requests"] for w in workers), sum(w["items"] for w in workers))
        if now == last and all(w["pid"] for w in workers):
            return now
        last = now
        time.sleep(SETTLE_S)
    raise RuntimeError(f"worker stats did not settle within {timeout}s")


def per_item(url: str, model: str, texts: list[str], headers: dict[str, str]) -> dict[str, int]:
    body = {"model": model, "inputs": [texts], "truncate": False, "on_error": "skip", "use_cache": False}
    status, answer = call(f"{url}/api/embed/batch", body, headers)
    assert status == 200, answer
    failed = sum(isinstance(item, dict) for item in answer["batches"][0])
    return {"http_calls": 1, "inputs_sent": len(texts), "failed": failed}


def one_at_a_time(url: str, model: str, texts: list[str], headers: dict[str, str]) -> dict[str, int]:
    live, calls, sent, failed = list(range(len(texts))), 0, 0, 0
    while live:
        body = {"model": model, "input": [texts[i] for i in live], "truncate": False}  # first seen: no hits
        status, answer = call(f"{url}/api/embed", body, headers)
        calls, sent = calls + 1, sent + len(live)
        if status == 200:
            break
        named = NAMED.search(answer["error"]["message"])
        assert status == 422 and named, answer
        live.pop(int(named.group(1)))
        failed += 1
    return {"http_calls": calls, "inputs_sent": sent, "failed": failed}


def counted(way: Any, url: str, model: str, texts: list[str], headers: dict[str, str]) -> dict[str, int]:
    """``way``'s own counts plus the worker records and computed inputs it cost."""
    records, items = settled(url, headers)
    figures = way(url, model, texts, headers)
    records_after, items_after = settled(url, headers)
    return {**figures, "worker_records": records_after - records, "inputs_computed": items_after - items}


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    texts, bad = request_inputs(args.inputs, args.refused)
    headers = auth_headers(args.api_key)
    with appliance(args, {}) as (url, _):
        baseline = counted(one_at_a_time, url, args.model, texts, headers)
        measured = counted(per_item, url, args.model, texts, headers)
    assert measured["failed"] == baseline["failed"] >= len(bad), (measured, baseline, len(bad))
    summary = {"inputs": args.inputs, "refused": measured["failed"], "per_item": measured, "one_at_a_time": baseline,
               "records_over_baseline": round(measured["worker_records"] / baseline["worker_records"], 4),
               "sends_over_baseline": round(measured["inputs_sent"] / baseline["inputs_sent"], 4)}  # fmt: skip
    for name in ("one_at_a_time", "per_item"):
        print(f"{name:<14}" + "  ".join(f"{k} {v}" for k, v in summary[name].items()))
    print(json.dumps(summary))
    return 0
