"""appliance/ipc/segment.py: private pid-tagged names, attach checks, the header, the sweep."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import msgspec
import pytest

from appliance.ipc import segment as segment_module
from appliance.ipc.channel import Channel
from appliance.ipc.segment import (
    HEADER_BYTES,
    NAME_RE,
    SHM_DIR,
    Segment,
    check_header,
    format_header,
    sweep_stale_segments,
)
from appliance.protocol import ChannelSpec

sys.path.insert(0, str(Path(__file__).parent))
import _channel_peer as peer  # noqa: E402

SIZE = 4096


@pytest.fixture
def segment() -> Iterator[Segment]:
    created = Segment.create(SIZE)
    yield created
    created.close()
    created.unlink()


@pytest.fixture
def small_shm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A 1 MiB tmpfs standing in for ``/dev/shm`` (needs the right to mount: root)."""
    mountpoint = tmp_path / "shm"
    mountpoint.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mountpoint)],
                             capture_output=True, text=True, timeout=10)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    monkeypatch.setattr(segment_module, "SHM_DIR", str(mountpoint))
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True, timeout=10)


def remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


# ---- creation and attachment ------------------------------------------------------------
def test_created_segment_is_private_pid_tagged_and_sized(segment: Segment) -> None:
    info = os.stat(Segment.path_of(segment.name))
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_size == SIZE and len(segment.view) == SIZE
    match = NAME_RE.match(segment.name)
    assert match and int(match.group(1)) == os.getpid()
    assert segment.creator


def test_an_attached_segment_shares_the_creators_bytes(segment: Segment) -> None:
    attached = Segment.attach(segment.name, SIZE)
    try:
        assert not attached.creator
        segment.view[100:105] = b"hello"
        assert bytes(attached.view[100:105]) == b"hello"
    finally:
        attached.close()
    assert os.path.exists(Segment.path_of(segment.name))  # closing never unlinks


def test_attach_refuses_foreign_names_short_files_and_other_owners(
    segment: Segment, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="not a channel segment name"):
        Segment.attach("../etc/passwd", SIZE)
    with pytest.raises(ValueError, match="the spec needs"):
        Segment.attach(segment.name, SIZE + 1)
    uid = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: uid + 1)
    with pytest.raises(PermissionError, match=f"belongs to uid {uid}"):
        Segment.attach(segment.name, SIZE)


SPARSE_WRITE = """
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
os.ftruncate(fd, 4 << 20)  # succeeds: nothing is allocated yet
mapping = mmap.mmap(fd, 4 << 20)
mapping[:] = bytes(4 << 20)  # the page tmpfs cannot back
"""


def test_a_full_shm_fails_create_naming_the_segment_and_size_instead_of_sigbus(small_shm: Path) -> None:
    # The failure a sparse segment meets: the first write past the room kills the writer.
    sparse = subprocess.run([sys.executable, "-c", SPARSE_WRITE, str(small_shm / "sparse")], timeout=30)
    assert sparse.returncode == -signal.SIGBUS
    (small_shm / "sparse").unlink()

    size = 4 << 20
    with pytest.raises(OSError) as failed:
        Segment.create(size)
    assert failed.value.errno == errno.ENOSPC
    assert f"cannot allocate {size} bytes for shared-memory segment {small_shm}/appl-{os.getpid()}-" in str(failed.value)
    assert os.listdir(small_shm) == []  # the half-made segment is gone
    small = Segment.create(SIZE)  # what fits is still created, fully backed
    try:
        assert os.stat(Segment.path_of(small.name)).st_blocks * 512 >= SIZE
    finally:
        small.close()
        small.unlink()


def test_the_header_refuses_what_is_not_a_channel_of_the_specs_rings(segment: Segment) -> None:
    header = segment.view[:HEADER_BYTES].cast("Q")
    try:
        with pytest.raises(ValueError, match=r"not a version \d+ channel"):
            check_header(header, segment.name, 1 << 16)  # never formatted: all zeros
        format_header(header, 1 << 16)
        check_header(header, segment.name, 1 << 16)
        with pytest.raises(ValueError, match="of 32768-byte rings"):
            check_header(header, segment.name, 1 << 15)
    finally:
        header.release()


# ---- who removes a segment ----------------------------------------------------------------
HOLD_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_SH)
print("locked", flush=True)
sys.stdin.read()  # hold it until the test closes our stdin or kills us
"""


def test_a_held_segment_is_not_swept_whatever_pid_its_name_carries() -> None:
    # A creator in another pid namespace, or one whose pid the sweeper's namespace gave to
    # another process since: the name's pid is dead here, yet a live process holds the lock.
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(peer.STARTUP_S)
    path = os.path.join(SHM_DIR, f"appl-{gone.pid}-{os.urandom(8).hex()}")
    Path(path).touch(mode=0o600)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, path], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        assert os.path.basename(path) not in sweep_stale_segments()
        assert os.path.exists(path)
        holder.send_signal(signal.SIGKILL)  # the kernel drops its lock with it
        holder.wait(peer.STARTUP_S)
        assert os.path.basename(path) in sweep_stale_segments()
        assert not os.path.exists(path)
    finally:
        holder.kill()
        holder.wait(peer.STARTUP_S)
        remove(path)


def test_a_created_segment_holds_its_lock_until_closed(segment: Segment) -> None:
    fd = os.open(Segment.path_of(segment.name), os.O_RDONLY)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # shared with other holders
    finally:
        os.close(fd)


def test_attacher_exit_or_kill_never_unlinks_the_creators_segment() -> None:
    with Channel.create(1 << 16) as channel:
        for how in ("exit", "hold"):
            child = peer.spawn("attach", peer.spec_json(channel), how, pass_fds=channel.pass_fds)
            try:
                assert child.stdout is not None and child.stdout.readline() == "attached\n"
                if how == "hold":
                    child.send_signal(signal.SIGKILL)
                assert child.wait(peer.STARTUP_S) == (0 if how == "exit" else -signal.SIGKILL)
            finally:
                peer.stop(child)
            assert os.path.exists(channel.path)
            assert channel.spec.name not in sweep_stale_segments()  # we, the creator, are alive
        assert channel.poll_responses() == [b"attached", b"attached"]


def test_sigkilled_creator_leaves_a_segment_the_next_sweep_removes() -> None:
    child = peer.spawn("create")
    path = None
    try:
        assert child.stdout is not None
        spec = msgspec.json.decode(child.stdout.readline(), type=ChannelSpec)
        path = Segment.path_of(spec.name)
        assert NAME_RE.match(spec.name).group(1) == str(child.pid)  # type: ignore[union-attr]
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        child.send_signal(signal.SIGKILL)
        child.wait(peer.STARTUP_S)
        assert os.path.exists(path)  # nobody unlinked it: that is what the sweep is for
        assert spec.name in sweep_stale_segments()
        assert not os.path.exists(path)
    finally:
        peer.stop(child)
        if path is not None:
            remove(path)


def test_sweep_keeps_live_and_foreign_names(segment: Segment) -> None:
    ours_alive = os.path.join(SHM_DIR, f"appl-{os.getpid()}-{'0' * 16}")
    unrelated = os.path.join(SHM_DIR, "appl-not-ours")
    held = -1
    try:
        for path in (ours_alive, unrelated):
            Path(path).touch(mode=0o600)
        held = os.open(ours_alive, os.O_RDONLY)
        fcntl.flock(held, fcntl.LOCK_SH)  # what a live creator does
        removed = sweep_stale_segments()
        assert os.path.exists(ours_alive) and os.path.exists(unrelated)
        assert os.path.exists(Segment.path_of(segment.name))
        assert all(NAME_RE.match(name) for name in removed)
    finally:
        if held >= 0:
            os.close(held)
        remove(ours_alive)
        remove(unrelated)
