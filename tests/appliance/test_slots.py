"""appliance/slots.py: GPU discovery on fake hosts, and slot plans on fake machines."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from appliance import slots
from appliance.slots import Slot, discover_gpus, parse_cpulist, plan_slots, thread_env


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
    monkeypatch.setattr(slots, "PROC_GPUS", tmp_path / "proc")
    monkeypatch.setattr(slots, "DEV", tmp_path / "dev")
    monkeypatch.setattr(slots, "PCI_DEVICES", tmp_path / "pci")
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
    monkeypatch.setattr(slots, "NVIDIA_SMI_TIMEOUT_S", 0.3)
    assert discover_gpus() == []


def test_gpu_local_cpus_reads_sysfs_in_bus_order(bare_host: Path) -> None:
    for bus, cpus in (("0000:AF:00.0", "16-31\n"), ("0000:3b:00.0", "0-15\n")):
        (bare_host / "proc" / bus).mkdir()
        (bare_host / "pci" / bus.lower()).mkdir()
        (bare_host / "pci" / bus.lower() / "local_cpulist").write_text(cpus)
    local = slots.gpu_local_cpus([0, 1, 2])
    assert local == {0: tuple(range(16)), 1: tuple(range(16, 32))}  # GPU 2 unknown: left out


def test_parse_cpulist() -> None:
    assert parse_cpulist("0-3,8,10-11\n") == (0, 1, 2, 3, 8, 10, 11)
    assert parse_cpulist("5") == (5,)


# ---- plan_slots ------------------------------------------------------------------------------
def check_plan(plan: list[Slot], cpus: list[int]) -> None:
    """Invariants of every plan: numbering, roles, non-empty core sets within the allowed CPUs."""
    assert [s.index for s in plan] == list(range(len(plan)))
    assert [s.role for s in plan] == ["primary"] + ["light"] * (len(plan) - 1)
    for slot in plan:
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
    plan = plan_slots("auto", 1, cpus=cpus, gpus=[])
    check_plan(plan, cpus)
    assert [len(s.cores) for s in plan] == expected_sizes
    assert all(s.gpu is None for s in plan)
    used = sorted(c for s in plan for c in s.cores)
    assert used == (cpus[1:] if gateway_kept else cpus)  # every worker core used exactly once


def test_auto_respects_the_allowed_cpus_and_gateway_cores() -> None:
    cpus = [4, 5, 6, 7, 12, 13, 14, 15]  # e.g. a cgroup cpuset
    plan = plan_slots("auto", 2, cpus=cpus, gpus=[])
    check_plan(plan, cpus)
    assert [s.cores for s in plan] == [(6, 7, 12), (13, 14, 15)]
    assert plan_slots("auto", 0, cpus=cpus, gpus=[])[0].cores == (4, 5, 6, 7)


@pytest.mark.parametrize("cores", [2, 8, 64])
def test_auto_with_one_gpu_gives_one_slot_all_worker_cores(cores: int) -> None:
    cpus = list(range(cores))
    plan = plan_slots("auto", 1, cpus=cpus, gpus=[0], gpu_cpus={})
    check_plan(plan, cpus)
    assert len(plan) == 1 and plan[0].gpu == 0
    assert plan[0].cores == (tuple(cpus) if cores < 4 else tuple(cpus[1:]))


@pytest.mark.parametrize("cores", [2, 8, 64])
def test_auto_with_four_gpus_without_numa_info_splits_evenly(cores: int) -> None:
    cpus = list(range(cores))
    plan = plan_slots("auto", 1, cpus=cpus, gpus=[0, 1, 2, 3], gpu_cpus={})
    check_plan(plan, cpus)
    assert [s.gpu for s in plan] == [0, 1, 2, 3]
    sizes = [len(s.cores) for s in plan]
    assert max(sizes) - min(sizes) <= 1
    if cores >= 8:
        assert sorted(c for s in plan for c in s.cores) == cpus[1:]  # disjoint, all used


def test_auto_with_four_gpus_follows_numa_locality() -> None:
    cpus = list(range(64))
    node0, node1 = list(range(32)), list(range(32, 64))
    # GPUs 0 and 2 hang off socket 1, GPUs 1 and 3 off socket 0
    local = {0: node1, 1: node0, 2: node1, 3: node0}
    plan = plan_slots("auto", 1, cpus=cpus, gpus=[0, 1, 2, 3], gpu_cpus=local)
    check_plan(plan, cpus)
    for slot in plan:
        assert set(slot.cores) <= set(local[slot.gpu]), slot
    assert plan[0].cores == tuple(range(32, 48)) and plan[2].cores == tuple(range(48, 64))
    assert plan[1].cores == tuple(range(1, 17)) and plan[3].cores == tuple(range(17, 32))  # core 0: gateway


def test_partial_numa_info_falls_back_to_an_even_split() -> None:
    cpus = list(range(16))
    plan = plan_slots("auto", 0, cpus=cpus, gpus=[0, 1], gpu_cpus={0: range(8)})
    assert [s.cores for s in plan] == [tuple(range(8)), tuple(range(8, 16))]


def test_uuid_visible_devices_hide_sysfs_locality(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-a,GPU-b")
    assert slots.gpu_local_cpus([0, 1]) == {}


@pytest.mark.parametrize(("workers", "cores"), [(1, 8), (3, 8), (2, 2), (5, 64)])
def test_forced_count_splits_cores_evenly(workers: int, cores: int) -> None:
    cpus = list(range(cores))
    plan = plan_slots(workers, 1, cpus=cpus, gpus=[])
    check_plan(plan, cpus)
    assert len(plan) == workers
    sizes = [len(s.cores) for s in plan]
    assert max(sizes) - min(sizes) <= 1
    assert len({c for s in plan for c in s.cores}) == sum(sizes)  # no sharing while cores suffice


def test_more_workers_than_cores_share_cores_round_robin() -> None:
    plan = plan_slots(5, 1, cpus=[0, 1], gpus=[])
    check_plan(plan, [0, 1])
    assert [s.cores for s in plan] == [(0,), (1,), (0,), (1,), (0,)]


def test_forced_count_with_gpus_deals_gpus_round_robin() -> None:
    cpus = list(range(16))
    plan = plan_slots(4, 1, cpus=cpus, gpus=[0, 1], gpu_cpus={0: range(8), 1: range(8, 16)})
    check_plan(plan, cpus)
    assert [s.gpu for s in plan] == [0, 1, 0, 1]
    # two slots per GPU share that GPU's node: (1..7) and (8..15), each cut in two
    assert [s.cores for s in plan] == [(1, 2, 3, 4), (8, 9, 10, 11), (5, 6, 7), (12, 13, 14, 15)]
    assert [s.gpu for s in plan_slots(1, 1, cpus=cpus, gpus=[0, 1], gpu_cpus={})] == [0]


@pytest.mark.parametrize("workers", [0, -2, "many", True])
def test_invalid_worker_counts_are_refused(workers: object) -> None:
    with pytest.raises(ValueError, match="workers"):
        plan_slots(workers, 1, cpus=[0, 1], gpus=[])  # type: ignore[arg-type]


def test_default_plan_on_this_machine_uses_the_allowed_cpus() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    plan = plan_slots("auto", 1)
    check_plan(plan, allowed)


# ---- thread_env --------------------------------------------------------------------------------
def test_thread_env_sizes_every_native_pool_to_the_slots_cores() -> None:
    assert thread_env(Slot(1, "light", (2, 3, 4), None)) == dict.fromkeys(slots.THREAD_VARS, "3")
    assert thread_env(Slot(0, "primary", (), 0)) == dict.fromkeys(slots.THREAD_VARS, "1")  # a GPU slot without cores
    assert "OPENBLAS_NUM_THREADS" in slots.THREAD_VARS  # numpy's: it loads in a worker before pinning
