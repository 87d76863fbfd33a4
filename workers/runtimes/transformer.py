"""HF encoder runtime: a transformers model plus the pooling its sentence-transformers files ask
for (``modules.json``, ``1_Pooling/config.json``). A ``Normalize`` module there sets the model's
default (``normalize``); the L2 norm itself is applied per request by the worker loop, so one
batch can serve requests that want normalised vectors and requests that do not.

The encoder and its pooling are one ``nn.Module`` (``Encoder``), so that ``compile=True`` hands
the whole forward pass to ``torch.compile``. Compiling happens in ``warmup()``, before the worker
says Ready. The graph is compiled once with dynamic shapes, since batches vary in rows and width.
Measured with MiniLM on a quiet Xeon (2 threads, fp32): a static-shape frozen graph runs ~1.75x
eager but costs ~90 s to compile *per shape*; the dynamic graph compiles once (~20-70 s) and gains
only ~10-15% frozen, because the frozen weight prepacking needs a static row count. It is not
frozen: torch's caches cannot hold frozen CPU weights, and an unfrozen graph's cached artefacts let
a respawned worker skip most of the compile (``workers/compile_cache.py``, ``bench/restart.py``),
which is worth more to a service than what freezing gained. At bf16 on the 2-core AVX-512 BF16
box compiling measured no win: served 1.04x eager at c=32 (noise), a raw limit 0.94x eager's, and
1.23x slower at c=1 (``python -m bench serve --compile``), so ``compile`` stays off by default.

The directory's layout (Transformer directory, pooling, Normalize, max length, lowercase) is read
by ``appliance/model_layout.py``, which the gateway reads the same way for TEI's ``/info``.

The architectures it loads (HF ``model_type``) are listed in ``architectures``; any other is a
``ModelLoadError`` at load. What it shares with the cross-encoder runtime (dtype, tokenizer
loading, padding, compiling) is in ``hf``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from appliance.config import ModelConfig, ModelKind
from appliance.model_layout import read_layout
from appliance.protocol import Input, TruncationDirection
from workers.runtimes import architectures, hf, precision
from workers.runtimes.base import Tokenized, loading, not_a_cross_encoder
from workers.runtimes.hf import TorchRuntime
from workers.runtimes.tokenizer import TextTokenizer

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
    """Transformer -> pooling; one module so one compile covers it all. The vectors leave it
    unnormalised (the worker normalises per request)."""

    def __init__(self, model: nn.Module, pooling: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.pooling = pooling

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        # token_type_ids is always None: one text is one segment, which every model defaults to
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        hidden = hidden.float()  # pool in fp32 whatever the weights' dtype
        parts = [pool(hidden, attention_mask, mode) for mode in self.pooling]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


class TransformerRuntime(TorchRuntime):
    """A sentence embedding model: text -> tokenizer -> encoder -> pooled vectors (unnormalised)."""

    kind: ModelKind = "transformer"

    def tokenize(self, inputs: Sequence[Input], *, truncate: bool,
                 direction: TruncationDirection = "right") -> list[Tokenized]:  # fmt: skip
        return self.tokenizer.encode(inputs, truncate=truncate, direction=direction)

    def tokenize_pairs(self, query: str, documents: Sequence[str], *, truncate: bool,
                       direction: TruncationDirection = "right") -> list[Tokenized]:  # fmt: skip
        raise not_a_cross_encoder(self.name)

    def sample(self, texts: list[str]) -> list[Tokenized]:
        return self.tokenize(texts, truncate=True)


def load(model: ModelConfig, path: Path, device: str = "cpu") -> TransformerRuntime:
    """The model at its configured dtype, checked against float32 first (``precision``)."""
    runtime, _ = loading(model.name, path, lambda: precision.load_guarded(
        lambda dtype: _load(model, path, device, dtype), model.dtype, device))  # fmt: skip
    return runtime


def _load(model: ModelConfig, path: Path, device: str, dtype: torch.dtype) -> TransformerRuntime:
    from transformers import AutoModel

    hf.quiet_transformers()
    layout = read_layout(path)
    model_type = architectures.model_type_of(model.name, path, layout.transformer_dir)
    network = AutoModel.from_pretrained(str(layout.transformer_dir), dtype=dtype, local_files_only=True,
                                        attn_implementation=architectures.SUPPORTED.get(model_type, "sdpa"),
                                        ).to(device).eval()  # fmt: skip
    hf_tokenizer = hf.load_tokenizer(layout.transformer_dir)
    max_length = hf.max_length_of(network.config, hf_tokenizer, model.max_length, layout.max_seq_length)
    tokenizer = TextTokenizer(hf_tokenizer.backend_tokenizer, max_length=max_length, lowercase=layout.lowercase,
                              vocab_size=network.get_input_embeddings().num_embeddings)  # fmt: skip
    normalize = layout.normalize if model.normalize is None else model.normalize
    encoder = Encoder(network, layout.pooling).eval()
    dim = int(network.config.hidden_size) * len(layout.pooling)
    pad_id = hf.pad_id_of(hf_tokenizer, network.config)
    return TransformerRuntime(model.name, encoder, tokenizer, dim=dim, pad_id=pad_id, device=device, dtype=dtype,
                              compile=model.compile, normalize=normalize)  # fmt: skip
