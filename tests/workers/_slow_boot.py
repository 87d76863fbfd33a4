"""A worker whose model load is slow, for the boot-liveness tests in test_worker_process.

Usage: python _slow_boot.py SECONDS '<WorkerSpec JSON>'. Runs ``workers.main`` as the supervisor
would, except that ``load_models`` first sleeps SECONDS, the way a big or compiled model does.
"""

from __future__ import annotations

import os
import sys
import time


def main(argv: list[str]) -> int:
    import workers.models
    from workers.main import main as worker_main

    seconds, load_models = float(argv[0]), workers.models.load_models

    def slow_load_models(spec: object) -> object:
        time.sleep(seconds)
        return load_models(spec)

    workers.models.load_models = slow_load_models  # workers.main imports it at call time
    return worker_main(argv[1:])


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stderr.flush()
    os._exit(code)  # as workers.main does
