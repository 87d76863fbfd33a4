"""systemd's notify protocol (Type=notify): READY=1, STATUS=..., WATCHDOG=1, STOPPING=1.

A datagram to $NOTIFY_SOCKET, one ``KEY=value`` per line (``"READY=1\nSTATUS=serving ..."`` is
one message); a no-op when not run by systemd. Hand-written because the whole
protocol is one sendto() and a dependency would cost more than it saves.
"""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Send ``state`` (e.g. "READY=1") to systemd; False when not under systemd or it fails."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
        return True
    except OSError:
        return False


def watchdog_interval() -> float | None:
    """Half of WATCHDOG_USEC in seconds (how often to ping), when systemd asked for pings."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 2e6
