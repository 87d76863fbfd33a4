"""``workers/loop.py``'s GPU memory sample. The serving loop itself runs in real worker processes
in ``test_worker_process.py``; this machine has no GPU, so the CUDA side of the sample is checked
against torch's own function, stood in for."""

from __future__ import annotations

import pytest
import torch

from workers.loop import gpu_memory_bytes


def test_a_cpu_worker_reports_no_gpu_memory_and_never_asks_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(device: object = None) -> int:
        raise AssertionError("a CPU worker must not touch torch.cuda")

    monkeypatch.setattr(torch.cuda, "memory_allocated", refuse)
    assert gpu_memory_bytes("cpu") == 0


def test_a_cuda_worker_reports_what_torch_has_allocated_on_its_device(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[object] = []

    def allocated(device: object = None) -> int:
        asked.append(device)
        return 123 << 20

    monkeypatch.setattr(torch.cuda, "memory_allocated", allocated)
    assert gpu_memory_bytes("cuda:0") == 123 << 20
    assert asked == ["cuda:0"]


def test_a_failing_driver_reads_as_zero_not_a_dead_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(device: object = None) -> int:
        raise RuntimeError("CUDA error: unknown error")

    monkeypatch.setattr(torch.cuda, "memory_allocated", broken)
    assert gpu_memory_bytes("cuda:0") == 0
