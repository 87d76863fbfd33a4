"""workers/runtimes/hf.py: a torch runtime on CUDA keeps attention off cuDNN's per-shape plans.

The switch is torch's process-wide backend flag, which exists without a GPU, so the choice is
checked here on CPU; each test restores the flag it found.
"""

from __future__ import annotations

from typing import Iterator

import pytest
import torch

from workers.runtimes.hf import CUDNN_ATTENTION_ENV, prefer_shape_free_attention


@pytest.fixture(autouse=True)
def restore_flag(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(CUDNN_ATTENTION_ENV, raising=False)
    before = torch.backends.cuda.cudnn_sdp_enabled()
    torch.backends.cuda.enable_cudnn_sdp(True)
    yield
    torch.backends.cuda.enable_cudnn_sdp(before)


def test_a_cuda_runtime_turns_cudnn_attention_off() -> None:
    prefer_shape_free_attention("cuda:0")
    assert torch.backends.cuda.cudnn_sdp_enabled() is False


def test_a_cpu_runtime_leaves_the_backends_alone() -> None:
    prefer_shape_free_attention("cpu")
    assert torch.backends.cuda.cudnn_sdp_enabled() is True


def test_the_environment_switch_keeps_torchs_order_for_measuring(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CUDNN_ATTENTION_ENV, "1")
    prefer_shape_free_attention("cuda:0")
    assert torch.backends.cuda.cudnn_sdp_enabled() is True
