"""Which dtype a torch model runs in, and the accuracy guard that keeps ``auto`` honest.

``dtype = "auto"`` picks the fastest type that is exact enough for the device: fp16 on CUDA
(tensor cores), bf16 on a CPU that computes bf16 natively (AVX-512 BF16 or AMX, read from the
CPU's own feature flags as torch detects them, never guessed from a model name), fp32 elsewhere.
On the 2-core AVX-512 BF16 dev box, bf16 MiniLM ran 2.7x its fp32 speed (``python -m bench raw
--dtype bfloat16`` beside the fp32 run).

Half precision is not exact, and the product promises every served vector within cosine 0.9999
of fp32. How far a row drifts depends on its length: bf16 MiniLM agrees with fp32 to 0.99995 on
average, but over the 5,000 corpus sentences, the probe and 2,420 short inputs (``python -m
bench exactness``) the 201 rows below 0.9999 were all of 10 tokens or fewer (single words, "ok",
numbers, two- and three-word queries; lowest 0.99982), and no longer row was (lowest 0.999906). A
short row has few tokens to average the rounding over. So a runtime cast down computes the rows
of up to ``SHORT_MAX_TOKENS`` tokens apart, through the module as loaded with only its matmuls at
the reduced dtype (``with_reduced_matmuls``, on the cast copy's weights): fp32 activations,
residual stream, norms, softmax and embeddings. Every row of that run then agreed to 0.9999 or
better (short rows: lowest 0.999913), at 0.97x bf16's sentences/s on short queries and 0.99x on
the corpus, on a worker's one thread. The other candidates: the short rows wholly at fp32 (exact,
but short queries at 0.61x bf16's speed, fp32's own, in the same bench); in process, a scratch
run: LayerNorms, embeddings, the first or the last layer in fp32 (lowest row still
0.99983-0.99985), bf16 weights with fp32 arithmetic (0.99993 on the short rows: a third of their
drift is the rounded weights). Long rows keep bf16 everywhere: they need nothing more, and fp32
activations on every row ran at 0.58x bf16's speed in an earlier in-process timing.

The guard: a model loaded at a reduced precision is first run at fp32 on a fixed probe set, then
as it will be served; when the probe rows' mean cosine to their fp32 answers falls below
``MIN_COSINE`` or any one row below ``MIN_ROW_COSINE`` (both the product's 0.9999), the guard logs
the figures and, under ``auto``, serves fp32 instead. An explicitly configured dtype is honoured
either way and computed on every row, short ones too (the operator asked for it: the fastest
reduced answer, at the drift measured above); the figure is logged all the same.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Mapping, Protocol, Sequence, TypeVar

import numpy as np
import torch
from torch import nn

log = logging.getLogger("appliance.worker.precision")

# Reduced precision must agree with fp32 to this mean cosine over the probe rows, and to
# MIN_ROW_COSINE on each one, to be served by default.
MIN_COSINE = 0.9999
MIN_ROW_COSINE = 0.9999
# Rows of at most this many tokens keep float32 activations beside a reduced-precision model: every
# bf16 MiniLM row below MIN_ROW_COSINE was this short or shorter (10 tokens; 12 for a margin).
SHORT_MAX_TOKENS = 12
_NAMED = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Native bf16 arithmetic: AVX-512 BF16 (dot products) or AMX tiles; plain AVX-512 only emulates it.
_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")

# Varied lengths, scripts and registers, so that a model's weak spots (long rows, rare tokens,
# numbers) show up in the probe and not first in production.
PROBE_TEXTS: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "ok",
    "What is the capital of France, and which river runs through it?",
    "Ranked retrieval compares a query vector with millions of document vectors by cosine similarity.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "東京は日本の首都です。",
    "Invoice #4471: 3 items, total 1,299.50 EUR, due 2026-12-31.",
    "def add(a, b):\n    return a + b",
    "I loved it. I hated it. I could not stop thinking about it for a week afterwards.",
    "Photosynthesis converts light energy into chemical energy stored in glucose. " * 4,
    "A",
    "Transformers encode each token with attention over every other token in the sequence, which "
    "makes their cost grow with the square of the length of the input they are given.",
)


class ReducedMatmul(nn.Module):
    """An ``nn.Linear`` on float32 activations whose matmul runs at the reduced dtype: the input
    rounded for the matmul only, the product and the bias back in float32. The weight is the
    reduced module's own tensor, shared, not a copy."""

    def __init__(self, reduced: nn.Linear, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.weight = reduced.weight
        self.bias = None if bias is None else nn.Parameter(bias.detach().float(), requires_grad=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        out = nn.functional.linear(hidden.to(self.weight.dtype), self.weight).float()
        return out if self.bias is None else out + self.bias


def with_reduced_matmuls(module: nn.Module, reduced: nn.Module) -> nn.Module:
    """``module`` (float32) with each ``nn.Linear`` swapped, in place, for a ``ReducedMatmul`` on
    the weight of its counterpart in ``reduced`` (a cast copy of it): the activations, norms,
    softmax and embeddings stay float32, the matmuls run at the reduced speed."""
    counterparts = dict(reduced.named_modules())
    for name, parent in list(module.named_modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                path = f"{name}.{child_name}" if name else child_name
                setattr(parent, child_name, ReducedMatmul(counterparts[path], child.bias))
    return module


def cpu_has_native_bf16(capabilities: Mapping[str, object] | None = None) -> bool:
    """True when the CPU computes bf16 in hardware (``capabilities``: torch's detected flags)."""
    found = torch.cpu.get_capabilities() if capabilities is None else capabilities
    return any(bool(found.get(flag)) for flag in _NATIVE_BF16_FLAGS)


def auto_dtype(device: str, capabilities: Mapping[str, object] | None = None) -> torch.dtype:
    if device.startswith("cuda"):
        return torch.float16
    return torch.bfloat16 if cpu_has_native_bf16(capabilities) else torch.float32


def resolve_dtype(setting: str, device: str) -> torch.dtype:
    """The configured dtype, with ``auto`` resolved for ``device`` (before the guard has its say)."""
    return auto_dtype(device) if setting == "auto" else _NAMED[setting]


@dataclass(frozen=True, slots=True)
class Agreement:
    """How close a reduced-precision answer is to fp32: the mean and the lowest row cosine."""

    mean: float = 1.0
    lowest: float = 1.0

    def passes(self, min_mean: float = MIN_COSINE, min_row: float = MIN_ROW_COSINE) -> bool:
        return self.mean >= min_mean and self.lowest >= min_row

    def __str__(self) -> str:
        return f"mean cosine {self.mean:.6f}, lowest {self.lowest:.6f}"


def agreement(reference: np.ndarray, candidate: np.ndarray) -> Agreement:
    """Cosines between matching rows of two (n, dim) answers; for (n,) scores (a cross-encoder)
    the cosine of the two score vectors, as one row."""
    reference, candidate = np.atleast_2d(reference.astype(np.float64)), np.atleast_2d(candidate.astype(np.float64))
    dots = np.sum(reference * candidate, axis=1)
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1)
    # a zero row (an empty text under some poolings) agrees with a zero row
    cosines = np.clip(np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 1.0), -1.0, 1.0)
    return Agreement(float(cosines.mean()), float(cosines.min()))


class Castable(Protocol):
    """What the guard needs of a torch runtime (``hf.TorchRuntime``)."""

    name: str
    dtype: str

    def sample(self, texts: list[str]) -> list[object]: ...
    def forward(self, batch: Sequence[object]) -> np.ndarray: ...
    def cast(self, dtype: torch.dtype, *, short_max_tokens: int = 0) -> None: ...
    def forward_cast(self, batch: Sequence[object]) -> np.ndarray: ...
    def without_short_rows(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Verdict:
    dtype: torch.dtype  # what will be served
    agreement: Agreement  # the probe's figures against fp32 (perfect when fp32 was chosen outright)


C = TypeVar("C", bound=Castable)


def load_guarded(load_at: Callable[[torch.dtype], C], setting: str, device: str, min_cosine: float = MIN_COSINE,
                 min_row_cosine: float = MIN_ROW_COSINE) -> tuple[C, Verdict]:  # fmt: skip
    """``load_at(dtype)`` the model at the dtype ``setting`` resolves to, checked against fp32.

    At fp32 the model loads once, unchecked. Otherwise it loads at fp32, answers the probe, is
    cast down and answers again, as it will serve (under ``auto`` its rows of up to
    ``SHORT_MAX_TOKENS`` tokens with fp32 activations, unless every probe row is within the bounds
    without them; a configured dtype computes every row at that dtype); under ``auto`` figures
    below the bounds load it afresh at fp32 (and the runtime that holds the reduced copy is
    dropped)."""
    wanted = resolve_dtype(setting, device)
    if wanted == torch.float32:
        return load_at(torch.float32), Verdict(torch.float32, Agreement())
    runtime = load_at(torch.float32)
    probe = runtime.sample(list(PROBE_TEXTS))
    reference = runtime.forward(probe)
    split = setting == "auto" and SHORT_MAX_TOKENS > 0
    runtime.cast(wanted, short_max_tokens=SHORT_MAX_TOKENS if split else 0)
    found = agreement(reference, runtime.forward(probe))
    name = str(wanted).removeprefix("torch.")
    if split and (whole := agreement(reference, runtime.forward_cast(probe))).passes(min_cosine, min_row_cosine):
        # every row within the bounds at the reduced dtype (fp16 on a GPU, a model that drifts
        # less): no second module to hold, no extra pass for the short rows
        runtime.without_short_rows()
        found = whole
    if found.passes(min_cosine, min_row_cosine):
        log.info("model %s serves %s: %s to float32 over the probe", runtime.name, name, found)
        return runtime, Verdict(wanted, found)
    if setting != "auto":
        log.warning("model %s serves %s as configured, though it agrees with float32 only to %s (bounds %g mean, "
                    "%g per row)", runtime.name, name, found, min_cosine, min_row_cosine)  # fmt: skip
        return runtime, Verdict(wanted, found)
    log.warning("model %s: %s agrees with float32 only to %s (bounds %g mean, %g per row): serving float32",
                runtime.name, name, found, min_cosine, min_row_cosine)  # fmt: skip
    return load_at(torch.float32), Verdict(torch.float32, found)
