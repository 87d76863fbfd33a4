"""How a booting worker stays tied to the gateway: it proves it is alive while it loads, and it
dies with the process that started it.

**The boot heartbeat.** The supervisor kills a worker whose heartbeat word stalls: past
``ready_timeout`` while the worker starts, past ``worker_timeout`` once it has said ``Ready``.
Loading and warming a model (a ``compile = true`` one above all) can take longer than
``worker_timeout``; if the word did not move during the load, the worker would be killed the
moment it said ``Ready``. ``BootHeartbeat`` is a daemon thread that beats once a second from the
moment the channel is attached until the serving loop takes over, so a loading worker is judged on
a live heartbeat. A C call that holds the GIL stops it too, which is right: a worker stuck like
that is silent, and the supervisor's ``ready_timeout`` bounds it.

``Channel.beat`` is a read-modify-write of one shared word, so it must have one writer at a time:
``stop`` joins the thread, and the worker calls it before the loop's first beat.

**Dying with the gateway.** The serving loop notices a vanished gateway through ``os.getppid()``,
but nothing reads that during a load of a minute or more. ``die_with_parent`` asks the kernel
(``PR_SET_PDEATHSIG``) to send SIGKILL when the parent exits. SIGKILL, not SIGTERM: SIGTERM is
only recorded (``workers.signals``) and acted on by the serving loop as "drain", so a loading
worker would go on loading for nobody, holding its memory and its device; and once serving, there
is no gateway left to drain to. The worker has nothing to flush: results go to the gateway, the
channel segment is the gateway's to unlink, and the worker leaves with ``os._exit`` anyway.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import sys
import threading

from appliance.ipc.channel import Channel

log = logging.getLogger("appliance.worker")

BEAT_INTERVAL_S = 1.0  # far below any sensible ready_timeout; one write per second costs nothing
STOP_TIMEOUT_S = 5.0  # the thread only waits on an event and bumps a word: it stops at once
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent() -> bool:
    """Have the kernel SIGKILL this process when its parent exits; False where it cannot (not Linux).

    The signal is tied to the *thread* that forked us: the gateway spawns workers from its event
    loop thread, which lives as long as the gateway. Call this first, then compare ``os.getppid()``
    with the expected parent: a parent that died before the call is not covered by it.
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0


class BootHeartbeat:
    """Beats ``channel`` every ``interval`` seconds from ``start`` until ``stop``."""

    def __init__(self, channel: Channel, interval: float = BEAT_INTERVAL_S) -> None:
        self._channel, self._interval = channel, interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="boot-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop and join the thread: after this returns, nothing but the caller beats the channel."""
        if not self._thread.is_alive():
            return
        self._stopped.set()
        self._thread.join(STOP_TIMEOUT_S)
        if self._thread.is_alive():  # cannot happen short of a wedged interpreter; never beat twice
            raise RuntimeError(f"boot heartbeat did not stop within {STOP_TIMEOUT_S:g}s")

    def __enter__(self) -> "BootHeartbeat":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while True:
            self._channel.beat()  # first beat at once: attaching is the first sign of life
            if self._stopped.wait(self._interval):
                return
