"""A channel's ``/dev/shm`` segment: its name, its permissions, its layout, its clean-up.

One segment per worker holds everything the gateway and that worker share. ``Segment`` only
creates, maps and removes the file; ``Channel`` lays it out (offsets in bytes)::

      0 +------------------------------------------------------------+
        | magic u64 | version u64 | ring_bytes u64 | creator pid u64 |  line 0, written once
     64 +------------------------------------------------------------+
        | heartbeat u64                                              |  line 1, worker increments
    128 +------------------------------------------------------------+
        | requests ring  (gateway -> worker), Ring.region_bytes      |  see ring.py
        +------------------------------------------------------------+
        | responses ring (worker -> gateway), Ring.region_bytes      |
        +------------------------------------------------------------+

The header lets an attaching worker refuse a segment that is not a channel of the size its spec
names (``check_header``) before it reads a single ring word.

Segments live in ``/dev/shm`` as ``appl-<creator pid>-<random hex>``, mode 0600, fully allocated
at creation (``allocate``: no page is left for a later write to miss), opened with
``os.open`` + ``mmap`` (no ``multiprocessing`` resource tracker: an attaching process could
otherwise unlink the creator's segment when it exits). The creator unlinks at exit; if it is
SIGKILLed, ``sweep_stale_segments()`` at the next start removes what it left.

**Who may remove a segment.** The creator holds a shared ``flock`` on the segment's file for as
long as it has the segment (taken at creation, released by ``close``); the sweep removes only a
segment whose exclusive lock it can take without waiting. The kernel drops a process's locks when
it dies, SIGKILL included, so a free lock means nobody holds the segment, and a held one blocks
the sweep whatever the holder's pid namespace, however the clock stepped and whoever got its pid
since. The pid in the name only tells a person whose segment it is; the sweep never trusts it.
Attaching workers take no lock: a worker outlives its gateway by at most a beat.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import re
import secrets

from appliance.ipc.ring import LINE

SHM_DIR = "/dev/shm"
NAME_PREFIX = "appl-"
NAME_RE = re.compile(r"^appl-(\d+)-([0-9a-f]{16})$")

MAGIC = int.from_bytes(b"APPLCHAN", "little")
VERSION = 2  # 2: the request ring's room word (ring.py)
HEADER_BYTES = 2 * LINE
# Word (u64) indices into the header drawn above.
MAGIC_WORD, VERSION_WORD, RING_BYTES_WORD, PID_WORD, HEARTBEAT_WORD = 0, 1, 2, 3, 8


class Segment:
    """One ``/dev/shm`` file mapped read-write: created 0600 under a pid-tagged name, or attached."""

    def __init__(self, name: str, mapping: mmap.mmap, creator: bool, lock_fd: int = -1) -> None:
        self.name = name
        self.creator = creator
        self._mapping = mapping
        self._lock_fd = lock_fd  # the creator's open file, holding LOCK_SH: "in use, not stale"
        self.view = memoryview(mapping)

    @staticmethod
    def path_of(name: str) -> str:
        return os.path.join(SHM_DIR, name)

    @classmethod
    def create(cls, size: int) -> "Segment":
        while True:
            name = f"{NAME_PREFIX}{os.getpid()}-{secrets.token_hex(8)}"
            path = cls.path_of(name)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                continue  # 64 random bits collided: draw again
            try:
                if not hold(fd, path):
                    os.close(fd)
                    continue  # a sweep took it between our open and our lock: draw again
                os.fchmod(fd, 0o600)  # the umask can only take bits away, but say it outright
                allocate(fd, path, size)
                return cls(name, mmap.mmap(fd, size), creator=True, lock_fd=fd)
            except BaseException:
                os.unlink(path)
                os.close(fd)
                raise

    @classmethod
    def attach(cls, name: str, min_size: int) -> "Segment":
        if not NAME_RE.match(name):
            raise ValueError(f"{name!r} is not a channel segment name ({NAME_PREFIX}<pid>-<hex>)")
        fd = os.open(cls.path_of(name), os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            info = os.fstat(fd)
            if info.st_uid != os.getuid():
                raise PermissionError(f"segment {name} belongs to uid {info.st_uid}, not to us")
            if info.st_size < min_size:
                raise ValueError(f"segment {name} has {info.st_size} bytes, the spec needs {min_size}")
            return cls(name, mmap.mmap(fd, info.st_size), creator=False)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Unmap; every view into ``view`` must be released first (mmap raises BufferError)."""
        self.view.release()
        self._mapping.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # drops our lock: from here on a sweep may remove the file
            self._lock_fd = -1

    def unlink(self) -> None:
        try:
            os.unlink(self.path_of(self.name))
        except FileNotFoundError:
            pass


def hold(fd: int, path: str) -> bool:
    """Creator: take the shared lock that keeps sweeps away; False if ``path`` is no longer ours.

    A sweep may take the exclusive lock between our ``open`` and this ``flock`` (the file is
    new and unlocked) and unlink it: then the name points at nothing, or at another file.
    """
    fcntl.flock(fd, fcntl.LOCK_SH)  # a sweep holds LOCK_EX only for one unlink: a short wait
    try:
        return os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def allocate(fd: int, path: str, size: int) -> None:
    """Back every byte of the segment now, or fail naming it and its size.

    A file only ``ftruncate``d is sparse: tmpfs finds a page for it at the first write, and when
    ``/dev/shm`` is full that write kills the writer with SIGBUS, gateway or worker, mid-record.
    ``posix_fallocate`` takes the pages at creation, so a full ``/dev/shm`` is an ``OSError``
    here, before any process maps the segment.
    """
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot allocate {size} bytes for shared-memory segment {path}: "
                      f"{exc.strerror} (free space in {SHM_DIR} or lower ring_bytes)") from None


def format_header(header: memoryview, ring_bytes: int) -> None:
    """Creator: fill line 0 of a fresh (all-zero) segment; ``header`` is its words (``"Q"``)."""
    header[VERSION_WORD], header[RING_BYTES_WORD], header[PID_WORD] = VERSION, ring_bytes, os.getpid()
    header[MAGIC_WORD] = MAGIC  # written last: it seals the words above


def check_header(header: memoryview, name: str, ring_bytes: int) -> None:
    """Attacher: refuse a segment that is not a channel of ``ring_bytes``-byte rings."""
    found = (header[MAGIC_WORD], header[VERSION_WORD], header[RING_BYTES_WORD])
    if found != (MAGIC, VERSION, ring_bytes):
        raise ValueError(f"segment {name} is not a version {VERSION} channel of {ring_bytes}-byte rings")


def sweep_stale_segments() -> list[str]:
    """Remove our segments that no live process holds (a SIGKILLed run's); the names removed."""
    removed = []
    for name in sorted(os.listdir(SHM_DIR)):
        if NAME_RE.match(name) and remove_if_unheld(Segment.path_of(name)):
            removed.append(name)
    return removed


def remove_if_unheld(path: str) -> bool:
    """Unlink ``path`` if it is ours and no process holds its lock (module doc)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, PermissionError):
        return False  # gone already (another sweeper, its creator), or not ours to open
    try:
        if os.fstat(fd).st_uid != os.getuid():
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its creator, in whatever pid namespace, still has it
        # order matters: unlink while holding the lock, so a creator that locks after us sees
        # its name gone (``hold``) instead of keeping a segment nobody can find
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
    finally:
        os.close(fd)
