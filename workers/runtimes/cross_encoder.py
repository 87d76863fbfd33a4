"""Cross-encoder runtime: one relevance score per (query, document) pair, for true rerank.

The pair is read as one sequence (``[CLS] query [SEP] document [SEP]``) by an
``AutoModelForSequenceClassification`` with a single output logit. Tokenizer loading, padding,
dtype and compilation are shared with the transformer runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from appliance.config import ModelConfig
from appliance.protocol import ModelInfo
from workers.runtimes.base import Input, ModelLoadError, TextTokenizer, Tokenized, loading, model_info
from workers.runtimes.chunking import MAX_OVERHEAD_TOKENS, forward_in_chunks
from workers.runtimes.transformer import (
    COMPILED_MIN_SHAPE,
    calibrate,
    compile_module,
    dtype_name,
    load_tokenizer,
    pad_batch,
    pad_id_of,
    quiet_transformers,
    resolve_dtype,
    tokenizer_limit,
    torch,
)


class Scorer(torch.nn.Module):
    """Pair logits -> scores in 0..1.

    A one-label cross-encoder is trained with a binary (BCE) objective, so its logit is the
    log-odds of relevance: the sigmoid turns it into a probability, which is what clients of
    Cohere/Jina-style rerank APIs expect in ``relevance_score`` and what sentence-transformers'
    ``CrossEncoder.predict`` returns. The order is the same either way.
    """

    def __init__(self, model: torch.nn.Module, uses_segments: bool) -> None:
        super().__init__()
        self.model = model
        self.uses_segments = uses_segments

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits
        return torch.sigmoid(logits.float()[:, 0])


class CrossEncoderRuntime:
    kind = "cross_encoder"
    dim = 0  # it scores, it does not embed

    def __init__(self, name: str, scorer: Scorer, tokenizer: TextTokenizer, *, pad_id: int, device: str,
                 dtype: torch.dtype, compile: bool) -> None:  # fmt: skip
        self.name = name
        self.max_length = tokenizer.max_length
        self.device = device
        self.dtype = dtype_name(dtype)
        self.scorer = scorer
        self.tokenizer = tokenizer
        self.pad_id = pad_id
        self.compile = compile
        self._run: Callable[..., torch.Tensor] = scorer
        self._min_shape = 1
        self.overhead_tokens = float(MAX_OVERHEAD_TOKENS)  # no splitting until warm-up measures it

    def tokenize(self, inputs: Sequence[Input], *, truncate: bool) -> list[Tokenized]:
        raise TypeError(f"model {self.name!r} is a cross-encoder: it scores (query, document) pairs, it cannot embed")

    def tokenize_pairs(self, query: str, documents: Sequence[str], *, truncate: bool) -> list[Tokenized]:
        return self.tokenizer.encode_pairs(query, documents, truncate=truncate)

    def forward(self, batch: Sequence[Tokenized]) -> np.ndarray:
        if not batch:
            return np.zeros((0,), dtype=np.float32)
        return forward_in_chunks(self.forward_padded, batch, self.overhead_tokens)

    def forward_padded(self, batch: Sequence[Tokenized]) -> np.ndarray:
        ids, mask, types = pad_batch(batch, self.pad_id, self.device, with_type_ids=self.scorer.uses_segments,
                                     min_shape=self._min_shape)  # fmt: skip
        with torch.inference_mode():
            scores = self._run(ids, mask, types)
        return scores[: len(batch)].to("cpu", torch.float32).numpy()

    def warmup(self) -> None:
        if self.compile:
            self._run = compile_module(self.scorer, self.device)
            self._min_shape = COMPILED_MIN_SHAPE
        self.forward(self.tokenize_pairs("warm up", ["a document"], truncate=True))
        self.forward(self.tokenize_pairs("warm up", ["a document", "another, longer document to pad"] * 2,
                                         truncate=True))  # fmt: skip
        long_pair = self.tokenize_pairs("warm up", ["word " * 100], truncate=True)[0]
        self.overhead_tokens = calibrate(self.forward_padded, long_pair, self.device)

    def info(self) -> ModelInfo:
        return model_info(self)


def load(model: ModelConfig, path: Path, device: str = "cpu") -> CrossEncoderRuntime:
    return loading(model.name, path, lambda: _load(model, path, device))


def _load(model: ModelConfig, path: Path, device: str) -> CrossEncoderRuntime:
    from transformers import AutoModelForSequenceClassification

    quiet_transformers()
    dtype = resolve_dtype(model.dtype, device)
    hf = AutoModelForSequenceClassification.from_pretrained(str(path), dtype=dtype, attn_implementation="sdpa",
                                                            local_files_only=True)  # fmt: skip
    if hf.config.num_labels != 1:
        raise ModelLoadError(model.name, path, f"a cross-encoder needs exactly one output label (one relevance "
                                               f"logit per pair), this one has {hf.config.num_labels}")  # fmt: skip
    hf = hf.to(device).eval()
    hf_tokenizer = load_tokenizer(path)
    limits = [int(getattr(hf.config, "max_position_embeddings", 0) or 1 << 30), tokenizer_limit(hf_tokenizer)]
    if model.max_length > 0:
        limits.append(model.max_length)
    tokenizer = TextTokenizer(hf_tokenizer.backend_tokenizer, max_length=min(limits),
                              vocab_size=hf.get_input_embeddings().num_embeddings)  # fmt: skip
    scorer = Scorer(hf, uses_segments(hf.config, hf_tokenizer)).eval()
    return CrossEncoderRuntime(model.name, scorer, tokenizer, pad_id=pad_id_of(hf_tokenizer, hf.config),
                               device=device, dtype=dtype, compile=model.compile)  # fmt: skip


def uses_segments(config: object, hf_tokenizer: object) -> bool:
    """Pass segment (token type) ids exactly when transformers would: BERT-style models tell the
    query from the document by them; RoBERTa-style ones have one segment and must never see a 1."""
    names = getattr(hf_tokenizer, "model_input_names", None) or []
    return "token_type_ids" in names and int(getattr(config, "type_vocab_size", 0) or 0) > 1
