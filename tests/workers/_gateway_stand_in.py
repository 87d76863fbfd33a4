"""A stand-in gateway for test_worker_process: spawns one worker, reports its pid, then waits to
be killed, so the test can kill a worker's parent while the worker is still loading.

Usage: python _gateway_stand_in.py '<WorkerSpec JSON>' FD... -- WORKER_ARGV...
The spec's ``parent_pid`` is replaced by this process's pid; the FDs are passed on to the worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    split = argv.index("--")
    spec = json.loads(argv[0])
    spec["parent_pid"] = os.getpid()
    fds = [int(fd) for fd in argv[1:split]]
    worker = subprocess.Popen([*argv[split + 1:], json.dumps(spec)], pass_fds=fds, stdin=subprocess.DEVNULL)
    print(worker.pid, flush=True)
    time.sleep(300)  # the test kills us long before this
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
