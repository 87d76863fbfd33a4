"""The HTTP floor: a bare aiohttp app on uvloop that answers every POST with one fixed body.

``bench serve``'s pure-hit scenario drives it with the same wrk load right after the appliance,
so the hit path is reported as a ratio of what aiohttp itself can do on this box in the same run:
what is left above the floor is the gateway's own per-request cost (parsing, cache lookup,
headers), and no amount of work on it can pass 1.0x. It runs as a process of its own
(``python -m bench.floor PORT BODY_FILE``), like the gateway it stands in for: ``http_floor``
starts one and stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

from aiohttp import web

from bench.launcher import free_port

READY_S = 30.0


def app(body: bytes) -> web.Application:
    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=body, content_type="application/json")

    application = web.Application()
    application.router.add_post("/{path:.*}", answer)
    return application


async def serve(port: int, body: bytes) -> None:
    runner = web.AppRunner(app(body), access_log=None)
    await runner.setup()
    gc.freeze()  # as the gateway does
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    import uvloop

    port, body_file = int(sys.argv[1]), Path(sys.argv[2])
    uvloop.run(serve(port, body_file.read_bytes()))


@contextlib.contextmanager
def http_floor(answer: bytes) -> Iterator[str]:
    """The floor in its own process, answering ``answer`` to every POST; its URL."""
    with floor_process(answer) as (url, _):
        yield url


@contextlib.contextmanager
def floor_process(answer: bytes) -> Iterator[tuple[str, int]]:
    """As ``http_floor``, with the process id too (``bench gateway-cpu`` reads its CPU time)."""
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        body = Path(tmp) / "body.json"
        body.write_bytes(answer)
        port = free_port()
        process = subprocess.Popen([sys.executable, "-m", "bench.floor", str(port), str(body)],
                                   stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)  # fmt: skip
        try:
            assert process.stdout is not None
            if process.stdout.readline().strip() != b"ready":
                raise SystemExit(f"bench.floor did not start (exit code {process.wait(READY_S)})")
            yield f"http://127.0.0.1:{port}", process.pid
        finally:
            process.kill()
            process.wait(10)


if __name__ == "__main__":
    main()
