"""Drive a POST route with Debian's ``wrk`` (C, epoll): a load generator that is not the bottleneck.

A Python client saturates its own core before a 2-core box's gateway does, so the pure-hit path
is measured with ``wrk``, its request bodies cycled by a generated Lua script. ``--latency``
prints the 50/75/90/99th percentiles, parsed here with the request rate and error counts.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
_PERCENTILE = re.compile(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)", re.M)
_P95 = re.compile(r"^p95_us (\d+)$", re.M)  # printed by the script's done(): --latency stops at 90
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


@dataclass
class WrkResult:
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    errors: int


def available() -> bool:
    return shutil.which("wrk") is not None


def lua_script(path: str, bodies: list[bytes], headers: dict[str, str] | None = None) -> str:
    """A wrk script that POSTs ``bodies`` round-robin, each thread from its own offset. The
    requests are formatted once per thread in ``init``: ``request()`` only hands out a string,
    so the client's Lua costs next to nothing on a box whose other core serves the requests."""
    quoted = ",\n".join(json.dumps(body.decode()) for body in bodies)
    extra = "".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n" for k, v in (headers or {}).items())
    return f"""
local bodies = {{
{quoted}
}}
local requests = {{}}
local n = #bodies
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
{extra}init = function(args)
  for k = 1, n do requests[k] = wrk.format(nil, "{path}", nil, bodies[k]) end
  i = math.random(n)
end
request = function()
  i = i % n + 1
  return requests[i]
end
done = function(summary, latency, _)
  io.write(string.format("p95_us %d\\n", latency:percentile(95)))
end
"""


def run(url: str, path: str, bodies: list[bytes], *, connections: int, seconds: int,
        threads: int = 1, headers: dict[str, str] | None = None) -> WrkResult:  # fmt: skip
    """``seconds`` is whole: wrk refuses fractions."""
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(lua_script(path, bodies, headers))
        out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, seconds)}s", "--latency",
                              "-s", str(script), url], capture_output=True, text=True, timeout=seconds + 60,
                             check=True).stdout  # fmt: skip
    return parse(out)


def parse(out: str) -> WrkResult:
    percentiles = {int(q): float(v) * _UNITS[unit] for q, v, unit in _PERCENTILE.findall(out)}
    rate = _RATE.search(out)
    p95 = _P95.search(out)
    total = _TOTAL.search(out)
    if rate is None or total is None or p95 is None or not {50, 90, 99} <= percentiles.keys():
        raise ValueError(f"unexpected wrk output:\n{out}")
    non_2xx = _NON_2XX.search(out)
    sockets = _SOCKET_ERRORS.search(out)
    errors = (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, sockets.groups())) if sockets else 0)
    return WrkResult(int(total.group(1)), float(rate.group(1)), percentiles[50], percentiles[90],
                     int(p95.group(1)) / 1000, percentiles[99], errors)  # fmt: skip
