"""Child process for test_compile_cache: one worker's ``compile_afresh`` whose first try fails on
"unusable artefacts", run against another such child on the same state dir, in the order that
raced: the ``first`` child's retry is under way when the ``second`` child fails and removes the
cache. No torch compile: the "compile" writes a kernel file into inductor's cache dir and reads it
back once the other child has done its removal, as a real retry loads the kernels it just built.

Usage: python _compile_fallback_child.py <state_dir> <meeting_dir> first|second. Prints one JSON
object: the result and the cache dir the retry used.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's packages first

from workers import compile_cache  # noqa: E402

WAIT_S = 120.0  # the other child imports torch first: seconds on a busy 2-core box


def wait_for(signal: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while not signal.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {signal.name} within {WAIT_S:.0f}s")
        time.sleep(0.01)


def main(state_dir: str, meeting: Path, role: str) -> int:
    compile_cache.use(state_dir)
    tries: list[Path] = []
    kernel = f"kernel-{os.getpid()}.so"

    def compile_and_run() -> str:
        folder = compile_cache.cache_dir()
        tries.append(folder)
        if len(tries) == 1:
            if role == "second":
                wait_for(meeting / "first-retrying")  # fail only once the first child's retry is under way
            raise OSError("invalid ELF header")  # what loading a truncated kernel library raises
        (folder / kernel).write_bytes(role.encode())
        (meeting / f"{role}-retrying").touch()
        if role == "first":
            wait_for(meeting / "second-retrying")  # by now the second child has removed what it found
        return (folder / kernel).read_bytes().decode()  # the retry loads what it built

    result = compile_cache.compile_afresh(compile_and_run, role)
    print(json.dumps({"result": result, "tries": [str(t) for t in tries]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], Path(sys.argv[2]), sys.argv[3]))
