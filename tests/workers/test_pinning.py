"""workers/pinning.py: the CUDA_VISIBLE_DEVICES a child is given, and pinning a real child process.

Slot planning (``appliance/slots.py``) is tested in ``tests/appliance/test_slots.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

from appliance.slots import Slot
from workers.pinning import SPIN_ON_LENT_CORES, gpu_device_name

CHILD = Path(__file__).with_name("_pin_child.py")
CHILD_TIMEOUT_S = 60

Spawn = Callable[..., subprocess.Popen[str]]


def test_gpu_device_name() -> None:
    assert gpu_device_name(3, None) == "3"
    assert gpu_device_name(5, "4,5") == "5"
    assert gpu_device_name(1, "GPU-a,GPU-b") == "GPU-b"
    with pytest.raises(ValueError, match="not among"):
        gpu_device_name(2, "GPU-a,GPU-b")


# ---- a real child process --------------------------------------------------------------------
@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Starts pinning children; whatever the test did, every one is gone when it ends."""
    children: list[subprocess.Popen[str]] = []

    def start(slot: Slot, *flags: str, env: dict[str, str | None] | None = None) -> subprocess.Popen[str]:
        children.append(start_child(slot, *flags, env=env))
        return children[-1]

    try:
        yield start
    finally:
        for child in children:
            stop(child)


def start_child(slot: Slot, *flags: str, env: dict[str, str | None] | None = None) -> subprocess.Popen[str]:
    child_env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    child_env["OMP_NUM_THREADS"] = "7"  # must be overridden by the slot
    for key, value in (env or {}).items():
        if value is None:
            child_env.pop(key, None)
        else:
            child_env[key] = value
    arg = json.dumps(slot._asdict())
    return subprocess.Popen([sys.executable, str(CHILD), arg, *flags], env=child_env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def stop(child: subprocess.Popen[str]) -> None:
    if child.poll() is None:
        child.kill()
    child.communicate()  # reaps it and closes its pipes


def finish(child: subprocess.Popen[str]) -> tuple[int, dict[str, object], str]:
    try:
        out, err = child.communicate(timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"child did not finish within {CHILD_TIMEOUT_S}s")  # the spawn fixture kills it
    report = json.loads(out) if child.returncode == 0 else {}
    return child.returncode, report, err


def test_child_is_really_pinned_and_sized(spawn: Spawn) -> None:
    allowed = sorted(os.sched_getaffinity(0))
    one = Slot(1, "light", (allowed[-1],), None)
    children = [spawn(one)]
    if len(allowed) >= 2:
        children.append(spawn(Slot(0, "primary", tuple(allowed[:2]), None)))
    results = [finish(c) for c in children]  # started together: torch imports overlap
    for (code, report, err), cores in zip(results, ([allowed[-1]], allowed[:2])):
        assert code == 0, err
        assert report["affinity"] == cores
        assert report["threads"] == len(cores)
        assert report["interop_threads"] == 1
        assert report["env"] == {"CUDA_VISIBLE_DEVICES": None,  # no GPU here: left alone
                                 "OMP_NUM_THREADS": str(len(cores)), "MKL_NUM_THREADS": str(len(cores))}  # fmt: skip
        assert report["torch_imported_before"] is False
        assert report["cuda_devices"] == 0


@pytest.mark.parametrize("borrows", [False, True])
def test_openmp_starts_before_the_pin_and_torch_uses_that_copy(spawn: Spawn, borrows: bool) -> None:
    # libgomp counts the usable cores when it loads; loaded after a one-core pin, a pass widened
    # onto lent cores would count as oversubscribed and never spin (workers/pinning.py)
    slot = Slot(1, "light", (sorted(os.sched_getaffinity(0))[-1],), None)
    code, report, err = finish(spawn(slot, *(["--borrows"] if borrows else []), env={"GOMP_SPINCOUNT": None}))
    assert code == 0, err
    assert report["torch_imported_before"] is False
    assert len(report["openmp_before_torch"]) == 1, report
    assert report["openmp_after_torch"] == report["openmp_before_torch"]
    assert report["spin"] == (str(SPIN_ON_LENT_CORES) if borrows else None)


def test_an_operators_spin_count_is_kept(spawn: Spawn) -> None:
    slot = Slot(1, "light", (sorted(os.sched_getaffinity(0))[-1],), None)
    code, report, err = finish(spawn(slot, "--borrows", "--no-torch", env={"GOMP_SPINCOUNT": "5000"}))
    assert code == 0, err
    assert report["spin"] == "5000"


def test_apply_torch_threads_resizes_a_running_torch(spawn: Spawn) -> None:
    cores = tuple(sorted(os.sched_getaffinity(0))[:2])
    if len(cores) < 2:
        pytest.skip("needs two CPUs")
    code, report, err = finish(spawn(Slot(0, "primary", cores, None), "--omp-drift"))
    assert code == 0, err
    assert report["threads_at_import"] == 1  # torch started with a drifted OpenMP setting ...
    assert report["threads"] == 2  # ... and the slot's count won


@pytest.mark.parametrize(
    ("inherited", "gpu", "expected"),
    [
        ("0,1", 1, "1"),  # a GPU slot sees only its GPU
        ("GPU-aaa,GPU-bbb", 1, "GPU-bbb"),
        ("3", None, ""),  # a CPU slot on a GPU machine sees none
        ("", None, ""),
    ],
)
def test_child_sees_only_its_gpu(spawn: Spawn, inherited: str, gpu: int | None, expected: str) -> None:
    cores = (sorted(os.sched_getaffinity(0))[0],)
    code, report, err = finish(spawn(Slot(0, "primary", cores, gpu), "--no-torch",
                                     env={"CUDA_VISIBLE_DEVICES": inherited}))  # fmt: skip
    assert code == 0, err
    assert report["env"]["CUDA_VISIBLE_DEVICES"] == expected  # type: ignore[index]


def test_child_refuses_cores_it_may_not_use(spawn: Spawn) -> None:
    code, _, err = finish(spawn(Slot(0, "primary", (4095,), None), "--no-torch"))
    assert code != 0
    assert "cannot pin worker 0 to cores [4095]" in err
