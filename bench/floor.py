"""The HTTP floor: a bare aiohttp app on uvloop that answers every POST with one fixed body.

``bench serve``'s pure-hit scenario drives it with the same wrk load right after the appliance,
so the hit path is reported as a ratio of what aiohttp itself can do on this box in the same run:
what is left above the floor is the gateway's own per-request cost (parsing, cache lookup,
headers), and no amount of work on it can pass 1.0x. Run as a process of its own
(``python -m bench.floor PORT BODY_FILE``), like the gateway it stands in for.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from pathlib import Path

from aiohttp import web


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


if __name__ == "__main__":
    main()
