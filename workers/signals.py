"""The worker's signal record: handlers only note what arrived; the serving loop acts on it.

Ctrl-C in a terminal reaches the whole process group, but the supervisor decides when a worker
stops (it sends ``Drain``), so a worker ignores SIGINT. SIGTERM (systemd, an operator's ``kill``)
means "drain": the handler records it and the loop's housekeeping starts draining.
"""

from __future__ import annotations

import signal
from types import FrameType

_sigterms: list[int] = []


def install() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _record_sigterm)


def _record_sigterm(signum: int, _frame: FrameType | None) -> None:
    _sigterms.append(signum)  # a list append is safe in a handler; anything more waits for the loop


def sigterm_received() -> bool:
    return bool(_sigterms)
