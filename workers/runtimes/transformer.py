"""HF encoder runtime: a transformers model plus the pooling and normalisation its
sentence-transformers files ask for (``modules.json``, ``1_Pooling/config.json``, ``Normalize``).

The encoder and its pooling are one ``nn.Module`` (``Encoder``), so that ``compile=True`` hands
the whole forward pass to ``torch.compile`` (on CPU with inductor freezing). Compiling happens in
``warmup()``, before the worker says Ready. The graph is compiled once with dynamic shapes, since
batches vary in rows and width. Measured with MiniLM on a quiet Xeon (2 threads, fp32): a
static-shape frozen graph runs ~1.75x eager but costs ~90 s to compile *per shape*; the dynamic
graph compiles once (~20-70 s) and gains only ~10-15%, because the frozen weight prepacking
needs a static row count. With bf16 weights on a CPU with AVX-512 BF16/AMX, compiling adds ~25%.

Also home of what the cross-encoder runtime shares with this one: dtype choice, tokenizer
loading, batch padding and compilation.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from appliance.config import ModelConfig
from appliance.protocol import ModelInfo
from workers.runtimes.base import Input, TextTokenizer, Tokenized, loading, model_info, not_a_cross_encoder
from workers.runtimes.chunking import MAX_OVERHEAD_TOKENS, forward_in_chunks, measure_overhead_tokens

# Models load from local directories only: never let a missing file turn into a hub download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402  (after the offline switches)
from torch import nn  # noqa: E402

# sentence-transformers' pooling modes, in the order it concatenates the legacy flags
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# HF tokenizers say "no limit" with a huge sentinel instead of None
_NO_LIMIT = 1_000_000
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# ---- shared with the cross-encoder ------------------------------------------------------------
def resolve_dtype(setting: str, device: str) -> torch.dtype:
    """auto = fp16 on CUDA (tensor cores), fp32 on CPU (exact; bf16 is opt-in per CPU)."""
    if setting == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return _DTYPES[setting]


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


def tokenizer_limit(hf_tokenizer: Any) -> int:
    limit = int(getattr(hf_tokenizer, "model_max_length", 0) or 0)
    return limit if 0 < limit < _NO_LIMIT else _NO_LIMIT


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


def compile_module(module: nn.Module, device: str) -> Callable[..., torch.Tensor]:
    """torch.compile with dynamic shapes (batches vary in rows and width); freezing on CPU."""
    if device == "cpu":
        import torch._inductor.config as inductor

        # freezing folds the weights into the graph as constants, which lets inductor prepack them
        inductor.freezing = True
    return torch.compile(module, dynamic=True)  # type: ignore[return-value]


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


# ---- sentence-transformers layout -------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SentenceLayout:
    """What a sentence-transformers directory says about pooling; plain HF defaults otherwise."""

    transformer_dir: Path
    pooling: tuple[str, ...] = ("mean",)
    normalize: bool = False
    max_seq_length: int = _NO_LIMIT
    lowercase: bool = False


def read_layout(path: Path) -> SentenceLayout:
    """Parse modules.json; any module we cannot reproduce exactly is a load error, not a guess."""
    modules = json.loads((path / "modules.json").read_text()) if (path / "modules.json").is_file() else []
    transformer_dir, pooling, normalize = path, ("mean",), False
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        where = path / module.get("path", "")
        if kind == "Transformer":
            transformer_dir = where
        elif kind == "Pooling":
            pooling = pooling_modes(read_json(where / "config.json"))
        elif kind == "Normalize":
            normalize = True
        else:
            raise ValueError(f"unsupported sentence-transformers module {module.get('type')!r} in modules.json")
    st = read_json(transformer_dir / "sentence_bert_config.json")
    max_seq = int(st.get("max_seq_length") or _NO_LIMIT)
    return SentenceLayout(transformer_dir, pooling, normalize, max_seq, bool(st.get("do_lower_case", False)))


def pooling_modes(config: dict[str, Any]) -> tuple[str, ...]:
    """Both config styles: ``pooling_mode: "mean" | [...]`` (concatenated in the order listed) and
    the legacy ``pooling_mode_*_tokens`` flags (concatenated in sentence-transformers' fixed order)."""
    mode = config.get("pooling_mode")
    if mode is None:
        modes = tuple(m for key, m in _LEGACY_POOLING_KEYS.items() if config.get(key))
    else:
        modes = (mode,) if isinstance(mode, str) else tuple(mode)
    for m in modes:
        if m not in POOLING_MODES:
            raise ValueError(f"unsupported pooling mode {m!r} (supported: {', '.join(POOLING_MODES)})")
    return modes or ("mean",)


# ---- the model --------------------------------------------------------------------------------
def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """One pooling mode over right-padded rows (``mask`` 1 for real tokens), in float32."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "max":
        return hidden.masked_fill(weights == 0, float("-inf")).max(dim=1).values
    if mode == "lasttoken":
        last = (mask.sum(dim=1) - 1).clamp(min=0)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if mode == "weightedmean":
        # position weights 1..n over the real tokens, as sentence-transformers does
        positions = torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=hidden.dtype)
        weights = weights * positions.view(1, -1, 1)
    summed = (hidden * weights).sum(dim=1)
    count = weights.sum(dim=1).clamp(min=1e-9)
    return summed / (count.sqrt() if mode == "mean_sqrt_len_tokens" else count)


class Encoder(nn.Module):
    """Transformer -> pooling -> optional L2 norm; one module so one compile covers it all."""

    def __init__(self, model: nn.Module, pooling: tuple[str, ...], normalize: bool) -> None:
        super().__init__()
        self.model = model
        self.pooling = pooling
        self.normalize = normalize

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        hidden = hidden.float()  # pool and normalise in fp32 whatever the weights' dtype
        parts = [pool(hidden, attention_mask, mode) for mode in self.pooling]
        vectors = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
        if self.normalize:
            vectors = nn.functional.normalize(vectors, p=2.0, dim=1)
        return vectors


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


class TransformerRuntime:
    """A sentence embedding model: text -> tokenizer -> encoder -> pooled (normalised) vectors."""

    kind = "transformer"

    def __init__(self, name: str, encoder: Encoder, tokenizer: TextTokenizer, *, dim: int, pad_id: int,
                 device: str, dtype: torch.dtype, compile: bool) -> None:  # fmt: skip
        self.name = name
        self.dim = dim
        self.max_length = tokenizer.max_length
        self.device = device
        self.dtype = dtype_name(dtype)
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.pad_id = pad_id
        self.compile = compile
        self._run: Callable[..., torch.Tensor] = encoder
        self._min_shape = 1
        self.overhead_tokens = float(MAX_OVERHEAD_TOKENS)  # no splitting until warm-up measures it

    def tokenize(self, inputs: Sequence[Input], *, truncate: bool) -> list[Tokenized]:
        return self.tokenizer.encode(inputs, truncate=truncate)

    def tokenize_pairs(self, query: str, documents: Sequence[str], *, truncate: bool) -> list[Tokenized]:
        raise not_a_cross_encoder(self.name)

    def forward(self, batch: Sequence[Tokenized]) -> np.ndarray:
        if not batch:
            return np.zeros((0, self.dim), dtype=np.float32)
        return forward_in_chunks(self.forward_padded, batch, self.overhead_tokens)

    def forward_padded(self, batch: Sequence[Tokenized]) -> np.ndarray:
        """One pass over the whole batch, padded to its longest row."""
        ids, mask, _ = pad_batch(batch, self.pad_id, self.device, min_shape=self._min_shape)
        with torch.inference_mode():
            vectors = self._run(ids, mask)
        return vectors[: len(batch)].to("cpu", torch.float32).numpy()

    def warmup(self) -> None:
        """Compile (if asked: the first forward compiles) and run real batches of one and of several rows."""
        if self.compile:
            self._run = compile_module(self.encoder, self.device)
            self._min_shape = COMPILED_MIN_SHAPE
        texts = ["warm up", "a somewhat longer sentence to warm up the model with padding in the batch"]
        self.forward(self.tokenize(texts[:1], truncate=True))
        self.forward(self.tokenize(texts * 2, truncate=True))
        self.overhead_tokens = calibrate(self.forward_padded, self.tokenize(["word " * 100], truncate=True)[0],
                                         self.device)  # fmt: skip

    def info(self) -> ModelInfo:
        return model_info(self)


def max_length_of(config: Any, hf_tokenizer: Any, layout: SentenceLayout, configured: int) -> int:
    """The smallest of every limit the model's files state, and the operator's if set."""
    limits = [
        int(getattr(config, "max_position_embeddings", 0) or _NO_LIMIT),
        tokenizer_limit(hf_tokenizer),
        layout.max_seq_length,
    ]
    if configured > 0:
        limits.append(configured)
    return min(limits)


def load(model: ModelConfig, path: Path, device: str = "cpu") -> TransformerRuntime:
    return loading(model.name, path, lambda: _load(model, path, device))


def _load(model: ModelConfig, path: Path, device: str) -> TransformerRuntime:
    from transformers import AutoModel

    quiet_transformers()
    layout = read_layout(path)
    dtype = resolve_dtype(model.dtype, device)
    hf = AutoModel.from_pretrained(str(layout.transformer_dir), dtype=dtype, attn_implementation="sdpa",
                                   local_files_only=True)  # fmt: skip
    hf = hf.to(device).eval()
    hf_tokenizer = load_tokenizer(layout.transformer_dir)
    max_length = max_length_of(hf.config, hf_tokenizer, layout, model.max_length)
    tokenizer = TextTokenizer(hf_tokenizer.backend_tokenizer, max_length=max_length, lowercase=layout.lowercase,
                              vocab_size=hf.get_input_embeddings().num_embeddings)  # fmt: skip
    normalize = layout.normalize if model.normalize is None else model.normalize
    encoder = Encoder(hf, layout.pooling, normalize).eval()
    dim = int(hf.config.hidden_size) * len(layout.pooling)
    return TransformerRuntime(model.name, encoder, tokenizer, dim=dim, pad_id=pad_id_of(hf_tokenizer, hf.config),
                              device=device, dtype=dtype, compile=model.compile)  # fmt: skip
