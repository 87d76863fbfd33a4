"""workers/pinning.py: slot plans on fake machines, GPU discovery, and pinning a real child process."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from workers import pinning
from workers.pinning import Slot, discover_gpus, gpu_device_name, parse_cpulist, plan_slots

CHILD = Path(__file__).with_name("_pin_child.py")
CHILD_TIMEOUT_S = 60


# ---- discover_gpus ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", []),
        ("0", [0]),
        ("0,1", [0, 1]),
        ("2, 3", [2, 3]),  # physical ordinals are kept: the child is given the same number
        ("-1", []),  # the usual way to hide every GPU
        ("1,-1,2", [1]),  # CUDA ignores everything from the first invalid entry on
        ("GPU-8a1b,GPU-77c2", [0, 1]),  # by UUID: positions in the list
        ("MIG-1f2e", [0]),
    ],
)
def test_discover_gpus_honours_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch, value: str,
                                                    expected: list[int]) -> None:  # fmt: skip
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    assert discover_gpus() == expected
    assert discover_gpus({"CUDA_VISIBLE_DEVICES": value}) == expected


@pytest.fixture
def bare_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No CUDA_VISIBLE_DEVICES, empty /proc and /dev stand-ins, no nvidia-smi on PATH."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    for name in ("proc", "dev", "bin", "pci"):
        (tmp_path / name).mkdir()
    monkeypatch.setattr(pinning, "PROC_GPUS", tmp_path / "proc")
    monkeypatch.setattr(pinning, "DEV", tmp_path / "dev")
    monkeypatch.setattr(pinning, "PCI_DEVICES", tmp_path / "pci")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    return tmp_path


def test_discover_gpus_none_on_a_bare_host(bare_host: Path) -> None:
    assert discover_gpus() == []


def test_discover_gpus_counts_proc_driver_entries(bare_host: Path) -> None:
    for bus in ("0000:3b:00.0", "0000:af:00.0"):
        (bare_host / "proc" / bus).mkdir()
    assert discover_gpus() == [0, 1]


def test_discover_gpus_counts_device_nodes_not_control_nodes(bare_host: Path) -> None:
    for name in ("nvidia0", "nvidia1", "nvidia2", "nvidiactl", "nvidia-uvm", "nvidia-modeset"):
        (bare_host / "dev" / name).touch()
    assert discover_gpus() == [0, 1, 2]


def _fake_smi(bin_dir: Path, body: str) -> None:
    smi = bin_dir / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\n{body}\n")
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)


def test_discover_gpus_falls_back_to_nvidia_smi(bare_host: Path) -> None:
    _fake_smi(bare_host / "bin", "echo 'GPU 0: NVIDIA H100 (UUID: GPU-a)'\necho 'GPU 1: NVIDIA H100 (UUID: GPU-b)'")
    assert discover_gpus() == [0, 1]


def test_discover_gpus_gives_up_on_a_hung_nvidia_smi(bare_host: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_smi(bare_host / "bin", "exec sleep 30")
    monkeypatch.setattr(pinning, "NVIDIA_SMI_TIMEOUT_S", 0.3)
    assert discover_gpus() == []


def test_gpu_local_cpus_reads_sysfs_in_bus_order(bare_host: Path) -> None:
    for bus, cpus in (("0000:AF:00.0", "16-31\n"), ("0000:3b:00.0", "0-15\n")):
        (bare_host / "proc" / bus).mkdir()
        (bare_host / "pci" / bus.lower()).mkdir()
        (bare_host / "pci" / bus.lower() / "local_cpulist").write_text(cpus)
    local = pinning.gpu_local_cpus([0, 1, 2])
    assert local == {0: tuple(range(16)), 1: tuple(range(16, 32))}  # GPU 2 unknown: left out


def test_parse_cpulist() -> None:
    assert parse_cpulist("0-3,8,10-11\n") == (0, 1, 2, 3, 8, 10, 11)
    assert parse_cpulist("5") == (5,)


# ---- plan_slots ------------------------------------------------------------------------------
def check_plan(slots: list[Slot], cpus: list[int]) -> None:
    """Invariants of every plan: numbering, roles, non-empty core sets within the allowed CPUs."""
    assert [s.index for s in slots] == list(range(len(slots)))
    assert [s.role for s in slots] == ["primary"] + ["light"] * (len(slots) - 1)
    for slot in slots:
        assert slot.cores and set(slot.cores) <= set(cpus)
        assert list(slot.cores) == sorted(slot.cores)


@pytest.mark.parametrize(
    ("cores", "expected_sizes", "gateway_kept"),
    [
        (2, [1, 1], False),  # small box: the gateway shares; one single-threaded worker per core
        (3, [1, 1, 1], False),
        (4, [3], True),
        (8, [4, 3], True),
        (16, [4, 4, 4, 3], True),
        (64, [4] * 15 + [3], True),
    ],
)
def test_auto_without_gpus_makes_slots_of_about_four_cores(cores: int, expected_sizes: list[int],
                                                           gateway_kept: bool) -> None:  # fmt: skip
    cpus = list(range(cores))
    slots = plan_slots("auto", 1, cpus=cpus, gpus=[])
    check_plan(slots, cpus)
    assert [len(s.cores) for s in slots] == expected_sizes
    assert all(s.gpu is None for s in slots)
    used = sorted(c for s in slots for c in s.cores)
    assert used == (cpus[1:] if gateway_kept else cpus)  # every worker core used exactly once


def test_auto_respects_the_allowed_cpus_and_gateway_cores() -> None:
    cpus = [4, 5, 6, 7, 12, 13, 14, 15]  # e.g. a cgroup cpuset
    slots = plan_slots("auto", 2, cpus=cpus, gpus=[])
    check_plan(slots, cpus)
    assert [s.cores for s in slots] == [(6, 7, 12), (13, 14, 15)]
    assert plan_slots("auto", 0, cpus=cpus, gpus=[])[0].cores == (4, 5, 6, 7)


@pytest.mark.parametrize("cores", [2, 8, 64])
def test_auto_with_one_gpu_gives_one_slot_all_worker_cores(cores: int) -> None:
    cpus = list(range(cores))
    slots = plan_slots("auto", 1, cpus=cpus, gpus=[0], gpu_cpus={})
    check_plan(slots, cpus)
    assert len(slots) == 1 and slots[0].gpu == 0
    assert slots[0].cores == (tuple(cpus) if cores < 4 else tuple(cpus[1:]))


@pytest.mark.parametrize("cores", [2, 8, 64])
def test_auto_with_four_gpus_without_numa_info_splits_evenly(cores: int) -> None:
    cpus = list(range(cores))
    slots = plan_slots("auto", 1, cpus=cpus, gpus=[0, 1, 2, 3], gpu_cpus={})
    check_plan(slots, cpus)
    assert [s.gpu for s in slots] == [0, 1, 2, 3]
    sizes = [len(s.cores) for s in slots]
    assert max(sizes) - min(sizes) <= 1
    if cores >= 8:
        assert sorted(c for s in slots for c in s.cores) == cpus[1:]  # disjoint, all used


def test_auto_with_four_gpus_follows_numa_locality() -> None:
    cpus = list(range(64))
    node0, node1 = list(range(32)), list(range(32, 64))
    # GPUs 0 and 2 hang off socket 1, GPUs 1 and 3 off socket 0
    local = {0: node1, 1: node0, 2: node1, 3: node0}
    slots = plan_slots("auto", 1, cpus=cpus, gpus=[0, 1, 2, 3], gpu_cpus=local)
    check_plan(slots, cpus)
    for slot in slots:
        assert set(slot.cores) <= set(local[slot.gpu]), slot
    assert slots[0].cores == tuple(range(32, 48)) and slots[2].cores == tuple(range(48, 64))
    assert slots[1].cores == tuple(range(1, 17)) and slots[3].cores == tuple(range(17, 32))  # core 0: gateway


def test_partial_numa_info_falls_back_to_an_even_split() -> None:
    cpus = list(range(16))
    slots = plan_slots("auto", 0, cpus=cpus, gpus=[0, 1], gpu_cpus={0: range(8)})
    assert [s.cores for s in slots] == [tuple(range(8)), tuple(range(8, 16))]


def test_uuid_visible_devices_hide_sysfs_locality(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-a,GPU-b")
    assert pinning.gpu_local_cpus([0, 1]) == {}


@pytest.mark.parametrize(("workers", "cores"), [(1, 8), (3, 8), (2, 2), (5, 64)])
def test_forced_count_splits_cores_evenly(workers: int, cores: int) -> None:
    cpus = list(range(cores))
    slots = plan_slots(workers, 1, cpus=cpus, gpus=[])
    check_plan(slots, cpus)
    assert len(slots) == workers
    sizes = [len(s.cores) for s in slots]
    assert max(sizes) - min(sizes) <= 1
    assert len({c for s in slots for c in s.cores}) == sum(sizes)  # no sharing while cores suffice


def test_more_workers_than_cores_share_cores_round_robin() -> None:
    slots = plan_slots(5, 1, cpus=[0, 1], gpus=[])
    check_plan(slots, [0, 1])
    assert [s.cores for s in slots] == [(0,), (1,), (0,), (1,), (0,)]


def test_forced_count_with_gpus_deals_gpus_round_robin() -> None:
    cpus = list(range(16))
    slots = plan_slots(4, 1, cpus=cpus, gpus=[0, 1], gpu_cpus={0: range(8), 1: range(8, 16)})
    check_plan(slots, cpus)
    assert [s.gpu for s in slots] == [0, 1, 0, 1]
    # two slots per GPU share that GPU's node: (1..7) and (8..15), each cut in two
    assert [s.cores for s in slots] == [(1, 2, 3, 4), (8, 9, 10, 11), (5, 6, 7), (12, 13, 14, 15)]
    assert [s.gpu for s in plan_slots(1, 1, cpus=cpus, gpus=[0, 1], gpu_cpus={})] == [0]


@pytest.mark.parametrize("workers", [0, -2, "many", True])
def test_invalid_worker_counts_are_refused(workers: object) -> None:
    with pytest.raises(ValueError, match="workers"):
        plan_slots(workers, 1, cpus=[0, 1], gpus=[])  # type: ignore[arg-type]


def test_default_plan_on_this_machine_uses_the_allowed_cpus() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    slots = plan_slots("auto", 1)
    check_plan(slots, allowed)


def test_gpu_device_name() -> None:
    assert gpu_device_name(3, None) == "3"
    assert gpu_device_name(5, "4,5") == "5"
    assert gpu_device_name(1, "GPU-a,GPU-b") == "GPU-b"
    with pytest.raises(ValueError, match="not among"):
        gpu_device_name(2, "GPU-a,GPU-b")


# ---- a real child process --------------------------------------------------------------------
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


def finish(child: subprocess.Popen[str]) -> tuple[int, dict[str, object], str]:
    try:
        out, err = child.communicate(timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        out, err = child.communicate()
        pytest.fail(f"child did not finish within {CHILD_TIMEOUT_S}s: {err}")
    report = json.loads(out) if child.returncode == 0 else {}
    return child.returncode, report, err


def test_child_is_really_pinned_and_sized() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    one = Slot(1, "light", (allowed[-1],), None)
    children = [start_child(one)]
    if len(allowed) >= 2:
        children.append(start_child(Slot(0, "primary", tuple(allowed[:2]), None)))
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


def test_apply_torch_threads_resizes_a_running_torch() -> None:
    cores = tuple(sorted(os.sched_getaffinity(0))[:2])
    if len(cores) < 2:
        pytest.skip("needs two CPUs")
    code, report, err = finish(start_child(Slot(0, "primary", cores, None), "--omp-drift"))
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
def test_child_sees_only_its_gpu(inherited: str, gpu: int | None, expected: str) -> None:
    cores = (sorted(os.sched_getaffinity(0))[0],)
    code, report, err = finish(start_child(Slot(0, "primary", cores, gpu), "--no-torch",
                                           env={"CUDA_VISIBLE_DEVICES": inherited}))  # fmt: skip
    assert code == 0, err
    assert report["env"]["CUDA_VISIBLE_DEVICES"] == expected  # type: ignore[index]


def test_child_refuses_cores_it_may_not_use() -> None:
    code, _, err = finish(start_child(Slot(0, "primary", (4095,), None), "--no-torch"))
    assert code != 0
    assert "cannot pin worker 0 to cores [4095]" in err
