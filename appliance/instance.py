"""One appliance per ``state_dir``: the instance lock.

``serving.serve`` takes it first, before it builds anything, binds the port or sweeps
``/dev/shm``, and holds it until it returns. A second appliance on the same ``state_dir`` (same
job store, same derived models) fails at once with ``InstanceLocked``, naming the lock file and
the holder's pid, having started and removed nothing.

The lock is an exclusive ``flock`` on ``<state_dir>/appliance.lock``; the file holds the holder's
pid, for people (the lock, not the pid, is what counts: the kernel drops it when the holder dies,
SIGKILL included, so a crash never leaves a lock to clean up). The file is opened close-on-exec,
so workers never inherit it.
"""

from __future__ import annotations

import fcntl
import os

LOCK_FILE = "appliance.lock"


class InstanceLocked(RuntimeError):
    """The instance lock cannot be had; the message says why in one line."""


class InstanceLock:
    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def acquire(cls, state_dir: str) -> "InstanceLock":
        """The lock, or ``InstanceLocked`` naming the file (and its holder's pid) at once."""
        path = os.path.join(state_dir, LOCK_FILE)
        try:
            os.makedirs(state_dir, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise InstanceLocked(f"cannot open the instance lock {path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_holder(fd)
            os.close(fd)
            raise InstanceLocked(f"another appliance ({holder}) holds the instance lock {path}: "
                                 "one appliance per state_dir") from None  # fmt: skip
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        """Idempotent. The pid is left in the file: the next holder overwrites it."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "InstanceLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_holder(fd: int) -> str:
    """"pid N" from the lock file; the holder may not have written it yet."""
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return f"pid {text}" if text.isdigit() else "pid not yet written"
