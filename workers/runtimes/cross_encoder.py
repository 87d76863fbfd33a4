"""Cross-encoder runtime: one relevance score per (query, document) pair, for true rerank.

The pair is read as one sequence (``[CLS] query [SEP] document [SEP]``) by an
``AutoModelForSequenceClassification`` with a single output logit. Tokenizer loading, padding,
dtype and compilation are shared with the transformer runtime (``hf``). It cannot embed: its
``tokenize`` refuses, and that refusal is the worker's one "a cross-encoder cannot embed" check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from appliance.config import ModelConfig, ModelKind
from appliance.protocol import Input, TruncationDirection
from workers.runtimes import hf, precision
from workers.runtimes.base import ModelLoadError, Tokenized, loading
from workers.runtimes.hf import TorchRuntime
from workers.runtimes.tokenizer import TextTokenizer


class Scorer(torch.nn.Module):
    """Pairs -> one relevance logit each, in float32.

    A one-label cross-encoder is trained with a binary (BCE) objective, so its logit is the
    log-odds of relevance. The worker loop turns it into a probability with the sigmoid (what
    clients of Cohere/Jina-style rerank APIs expect in ``relevance_score`` and what
    sentence-transformers' ``CrossEncoder.predict`` returns) unless the request asks for
    ``raw_scores``. The order is the same either way.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits
        return logits.float()[:, 0]


class CrossEncoderRuntime(TorchRuntime):
    """A reranker: (query, document) pairs -> tokenizer -> classifier -> one score per pair."""

    kind: ModelKind = "cross_encoder"

    def tokenize(self, inputs: Sequence[Input], *, truncate: bool,
                 direction: TruncationDirection = "right") -> list[Tokenized]:  # fmt: skip
        raise TypeError(f"model {self.name!r} is a cross-encoder: it scores (query, document) pairs, it cannot embed")

    def tokenize_pairs(self, query: str, documents: Sequence[str], *, truncate: bool,
                       direction: TruncationDirection = "right") -> list[Tokenized]:  # fmt: skip
        return self.tokenizer.encode_pairs(query, documents, truncate=truncate, direction=direction)

    def sample(self, texts: list[str]) -> list[Tokenized]:
        return self.tokenize_pairs("warm up", texts, truncate=True)


def load(model: ModelConfig, path: Path, device: str = "cpu") -> CrossEncoderRuntime:
    """The model at its configured dtype, checked against float32 first (``precision``)."""
    runtime, _ = loading(model.name, path, lambda: precision.load_guarded(
        lambda dtype: _load(model, path, device, dtype), model.dtype, device))  # fmt: skip
    return runtime


def _load(model: ModelConfig, path: Path, device: str, dtype: torch.dtype) -> CrossEncoderRuntime:
    from transformers import AutoModelForSequenceClassification

    hf.quiet_transformers()
    network = AutoModelForSequenceClassification.from_pretrained(
        str(path), dtype=dtype, attn_implementation="sdpa", local_files_only=True)  # fmt: skip
    labels = network.config.num_labels
    if labels != 1:
        raise ModelLoadError(model.name, path, f"a cross-encoder needs exactly one output label (one relevance "
                                               f"logit per pair), this one has {labels}")  # fmt: skip
    network = network.to(device).eval()
    hf_tokenizer = hf.load_tokenizer(path)
    max_length = hf.max_length_of(network.config, hf_tokenizer, model.max_length)
    tokenizer = TextTokenizer(hf_tokenizer.backend_tokenizer, max_length=max_length,
                              vocab_size=network.get_input_embeddings().num_embeddings)  # fmt: skip
    pad_id = hf.pad_id_of(hf_tokenizer, network.config)
    return CrossEncoderRuntime(model.name, Scorer(network).eval(), tokenizer, dim=0, pad_id=pad_id, device=device,
                               dtype=dtype, compile=model.compile,
                               type_ids=uses_segments(network.config, hf_tokenizer))  # fmt: skip


def uses_segments(config: object, hf_tokenizer: object) -> bool:
    """Pass segment (token type) ids exactly when transformers would: BERT-style models tell the
    query from the document by them; RoBERTa-style ones have one segment and must never see a 1."""
    names = getattr(hf_tokenizer, "model_input_names", None) or []
    return "token_type_ids" in names and int(getattr(config, "type_vocab_size", 0) or 0) > 1
