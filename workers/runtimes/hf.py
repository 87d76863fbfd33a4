"""What the two torch runtimes (``transformer``, ``cross_encoder``) share: dtype choice, tokenizer
loading and limits, batch padding, compilation, and ``TorchRuntime``, the runtime half that does
not depend on what the module computes (padded and chunked passes, compiling and calibrating at
warm-up).

Models load from local directories only: this module switches the Hugging Face hub offline when
it is imported, before either runtime imports transformers, so a missing file is a load error and
never a download.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from appliance.config import ModelKind
from appliance.protocol import ModelInfo
from workers.compile_cache import compile_afresh
from workers.runtimes import precision
from workers.runtimes.base import Tokenized, model_info
from workers.runtimes.chunking import MAX_OVERHEAD_TOKENS, forward_by_length, forward_in_chunks, measure_overhead_tokens
from workers.runtimes.tokenizer import TextTokenizer

# huggingface_hub reads these once, when transformers first imports it
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402  (after the offline switches)
from torch import nn  # noqa: E402

from appliance.model_layout import NO_LIMIT  # noqa: E402


# The env switch ``bench raw --cudnn-attention`` sets to measure the backend this module turns off.
CUDNN_ATTENTION_ENV = "APPLIANCE_CUDNN_ATTENTION"


def prefer_shape_free_attention(device: str) -> None:
    """On CUDA, keep scaled-dot-product attention off the cuDNN backend.

    torch 2.11 sends a masked SDPA call (every padded encoder batch) to cuDNN first on Hopper, and
    cuDNN builds an execution plan for every new (rows, width) it sees: tens of ms each time. A
    server sees a new shape on most batches, so on an H200 a one-sentence forward took 26 ms and a
    c=32 batch 55 ms, with 84% of the worker's samples inside that call (py-spy), and the served
    rate could never reach the model's. The memory-efficient and flash kernels need no per-shape
    plan. ``APPLIANCE_CUDNN_ATTENTION=1`` leaves torch's own order, for measuring the difference.
    """
    if device.startswith("cuda") and os.environ.get(CUDNN_ATTENTION_ENV) != "1":
        torch.backends.cuda.enable_cudnn_sdp(False)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def quiet_transformers() -> None:
    # progress bars and "weights not initialised" chatter would fill the worker log
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def load_tokenizer(path: Path) -> Any:
    """The model's fast tokenizer, as transformers (and so sentence-transformers) builds it."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def max_length_of(config: Any, hf_tokenizer: Any, configured: int, *limits: int) -> int:
    """The smallest of every limit the model's files state (``limits``: any beyond the config's and
    the tokenizer's), and the operator's ``configured`` one if set (> 0)."""
    found = [int(getattr(config, "max_position_embeddings", 0) or NO_LIMIT), tokenizer_limit(hf_tokenizer), *limits]
    if configured > 0:
        found.append(configured)
    return min(found)


def tokenizer_limit(hf_tokenizer: Any) -> int:
    limit = int(getattr(hf_tokenizer, "model_max_length", 0) or 0)
    return limit if 0 < limit < NO_LIMIT else NO_LIMIT


def pad_id_of(hf_tokenizer: Any, config: Any) -> int:
    for candidate in (getattr(hf_tokenizer, "pad_token_id", None), getattr(config, "pad_token_id", None)):
        if candidate is not None:
            return int(candidate)
    return 0


def pad_batch(batch: Sequence[Tokenized], pad_id: int, device: str, *, with_type_ids: bool = False,
              min_shape: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """Right-pad to the longest row of this batch: (input_ids, attention_mask, token_type_ids).

    ``min_shape`` > 1 pads rows (repeating the first) and width up to it; callers drop the extra rows.
    """
    rows = list(batch) + [batch[0]] * (min_shape - len(batch))
    width = max(min_shape, *(t.length for t in rows))
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    types = np.zeros((len(rows), width), dtype=np.int64) if with_type_ids else None
    for row, item in enumerate(rows):
        ids[row, : item.length] = item.ids
        mask[row, : item.length] = 1
        if types is not None and item.type_ids is not None:
            types[row, : item.length] = item.type_ids
    return _to(ids, device), _to(mask, device), (_to(types, device) if types is not None else None)


def _to(array: np.ndarray, device: str) -> torch.Tensor:
    return torch.from_numpy(array).to(device, non_blocking=True)


# A compiled graph is dynamic in rows and width, except that torch specialises dimensions of size
# 1: a batch of one row, or of one-token id inputs, would each cost a fresh ~20 s compile in the
# middle of serving. Compiled runtimes pad every batch to at least 2 x 2 so one graph serves all.
COMPILED_MIN_SHAPE = 2


def compile_module(module: nn.Module) -> Callable[..., torch.Tensor]:
    """torch.compile with dynamic shapes (batches vary in rows and width). Not frozen: a frozen
    CPU graph holds mkldnn-prepacked weights, which torch's caches cannot store, so every respawn
    would compile it again (``workers/compile_cache.py``)."""
    # Python floats computed inside the forward stay constants: traced as symbols, they made dynamo
    # throw its first trace of the encoder away and start again ("Restarting analysis due to
    # _tensorify_python_scalars"), a wasted trace on every start, cached or not. They are the same
    # on every call, so nothing is lost.
    torch._dynamo.config.specialize_float = True
    return torch.compile(module, dynamic=True)  # type: ignore[return-value]


def calibrate(run: Callable[[Sequence[Tokenized]], np.ndarray], long_item: Tokenized, device: str) -> float:
    """The pass overhead that decides batch splitting (``chunking``); GPUs pad nearly for free."""
    if not device.startswith("cpu") or long_item.length < 64:
        return float(MAX_OVERHEAD_TOKENS)
    return measure_overhead_tokens(run, lambda length: resized(long_item, length))


def resized(item: Tokenized, length: int) -> Tokenized:
    """``item`` cut to ``length`` tokens, its last (end-of-sequence) token kept."""
    ids = item.ids[: length - 1] + item.ids[-1:]
    types = None if item.type_ids is None else item.type_ids[: length - 1] + item.type_ids[-1:]
    return Tokenized(ids, types, length)


# ---- the runtime both build on ---------------------------------------------------------------
class TorchRuntime:
    """A torch module behind the runtime interface; a subclass says what it is for.

    A forward pass is the batch padded to its longest row, split into length-sorted passes when
    padding costs more than a pass (``chunking``). Cast to a reduced precision with
    ``short_max_tokens``, it computes the rows of at most that many tokens in passes of their own,
    through a second module: float32 activations, only the matmuls at the reduced precision (on
    the cast module's weights). Short rows drift furthest from float32 at the reduced precision
    everywhere, and that module holds them within the bound at nearly the reduced speed
    (``precision``). The module is called as ``module(input_ids, attention_mask,
    token_type_ids)``, the last None unless ``type_ids`` is set. A subclass adds ``kind``,
    ``tokenize``/``tokenize_pairs`` and ``sample``: some texts tokenized as its requests will be,
    to warm up on.
    """

    kind: ModelKind

    def __init__(self, name: str, module: nn.Module, tokenizer: TextTokenizer, *, dim: int, pad_id: int,
                 device: str, dtype: torch.dtype, compile: bool, type_ids: bool = False,
                 normalize: bool = False) -> None:  # fmt: skip
        prefer_shape_free_attention(device)
        self.name = name
        self.dim = dim  # 0 for a cross-encoder, whose module answers one score per row
        self.max_length = tokenizer.max_length
        self.device = device
        self.dtype = dtype_name(dtype)
        self.module = module
        self.tokenizer = tokenizer
        self.pad_id = pad_id
        self.compile = compile
        self.type_ids = type_ids
        self.normalize = normalize  # the model's default; the worker loop applies it per request
        self.prompts: dict[str, str] = {}  # set by runtimes.load_runtime
        self.default_prompt_name = ""
        self._run: Callable[..., torch.Tensor] = module
        self._min_shape = 1
        self.short: nn.Module | None = None  # short rows' module: float32 but for the matmuls (``cast``)
        self.short_max_tokens = 0
        self.overhead_tokens = float(MAX_OVERHEAD_TOKENS)  # no splitting until warm-up measures it

    def sample(self, texts: list[str]) -> list[Tokenized]:
        """``texts`` tokenized the way this model's requests are (to embed, or paired with a query)."""
        raise NotImplementedError

    def forward(self, batch: Sequence[Tokenized]) -> np.ndarray:
        if not batch:
            return np.zeros((0, self.dim) if self.dim else (0,), dtype=np.float32)
        if self.short is None:
            return self._forward_served(batch)
        return forward_by_length(self._forward_short, self._forward_served, batch, self.short_max_tokens)

    def _forward_served(self, batch: Sequence[Tokenized]) -> np.ndarray:
        return forward_in_chunks(self.forward_padded, batch, self.overhead_tokens)

    def forward_cast(self, batch: Sequence[Tokenized]) -> np.ndarray:
        """Every row through the served module, the short ones too (what the guard compares the
        short rows' split against)."""
        return self._forward_served(batch)

    def without_short_rows(self) -> None:
        """Compute every row through the served module from now on; the short rows' module (its
        float32 embeddings and norms) is dropped."""
        self.short, self.short_max_tokens = None, 0

    def _forward_short(self, batch: Sequence[Tokenized]) -> np.ndarray:
        return forward_in_chunks(self.forward_padded_short, batch, self.overhead_tokens)

    def forward_padded(self, batch: Sequence[Tokenized]) -> np.ndarray:
        """One pass over the whole batch, padded to its longest row, at the served dtype."""
        return self._pass(self._run, batch, self._min_shape)

    def forward_padded_short(self, batch: Sequence[Tokenized]) -> np.ndarray:
        """One pass through the short rows' module (the served one when nothing was cast)."""
        return self._pass(self.short or self._run, batch, 1)

    def _pass(self, run: Callable[..., torch.Tensor], batch: Sequence[Tokenized], min_shape: int) -> np.ndarray:
        ids, mask, types = pad_batch(batch, self.pad_id, self.device, with_type_ids=self.type_ids,
                                     min_shape=min_shape)  # fmt: skip
        with torch.inference_mode():
            out = run(ids, mask, types)
        return out[: len(batch)].to("cpu", torch.float32).numpy()

    def warmup(self) -> None:
        """Compile (if asked: the first forward compiles), run real batches of one and of several
        rows, and measure the pass overhead that decides batch splitting."""
        if self.compile:
            compile_afresh(self.compile_now, self.name)  # reuses what an earlier start compiled
        else:
            self.forward(self.sample(["warm up"]))
        self.forward(self.sample(["warm up", "a somewhat longer text to warm up the model with padding"] * 2))
        self.forward_padded(self.sample(["warm up"]))  # the served module, whatever the short rows' split
        self.overhead_tokens = calibrate(self.forward_padded, self.sample(["word " * 100])[0], self.device)

    def cast(self, dtype: torch.dtype, *, short_max_tokens: int = 0) -> None:
        """Serve at ``dtype`` from now on (the precision guard casts a model it has checked); with
        ``short_max_tokens``, rows of at most that many tokens run through the module as loaded,
        its activations kept float32 and its matmuls at ``dtype`` on the cast copy's weights (held
        once): only the float32 embeddings and norms are held twice."""
        reduced = copy.deepcopy(self.module).to(dtype) if short_max_tokens > 0 else self.module.to(dtype)
        if short_max_tokens > 0:
            self.short = precision.with_reduced_matmuls(self.module, reduced)
            self.short_max_tokens = short_max_tokens
        self.module = self._run = reduced
        self.dtype = dtype_name(dtype)

    def compile_now(self) -> None:
        """Compile the module: its first forward compiles (or loads what the cache holds)."""
        self._run = compile_module(self.module)
        self._min_shape = COMPILED_MIN_SHAPE
        self.forward_padded(self.sample(["warm up"]))  # the compiled path, whatever the text's length

    def info(self) -> ModelInfo:
        return model_info(self)
