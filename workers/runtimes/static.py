"""Static (Model2Vec-style) embeddings: the mean of per-token vectors, no network at all.

Loads a model2vec directory with numpy and tokenizers only (model2vec is not a runtime
dependency):

    config.json         {"hidden_dim": d, "normalize": bool, ...}
    model.safetensors   "embeddings" (vocab or clusters, d) [+ "weights" (vocab,), "mapping" (vocab,)]
    tokenizer.json      the tokenizer the vectors are indexed by

Tokenization matches model2vec's: no special tokens, [UNK] dropped (it has no useful vector).
``forward`` answers the plain mean; the config's ``normalize`` is the model's default, applied per
request by the worker loop.
``weights``/``mapping`` exist only in vocabulary-quantized models: a token's vector is then
``embeddings[mapping[id]] * weights[id]``.
"""

from __future__ import annotations

import json
from itertools import chain
from pathlib import Path
from typing import Sequence

import numpy as np

from appliance.config import ModelConfig, ModelKind
from appliance.protocol import Input, ModelInfo, TruncationDirection
from workers.runtimes.base import ModelLoadError, Tokenized, loading, model_info, not_a_cross_encoder
from workers.runtimes.tokenizer import TextTokenizer

DEFAULT_MAX_LENGTH = 512


class StaticRuntime:
    kind: ModelKind = "static"
    device = "cpu"  # a table lookup and a mean: moving it to a GPU would cost more than it saves
    dtype = "float32"

    def __init__(self, name: str, vectors: np.ndarray, tokenizer: TextTokenizer, *, normalize: bool,
                 weights: np.ndarray | None = None, mapping: np.ndarray | None = None) -> None:  # fmt: skip
        self.name = name
        self.dim = int(vectors.shape[1])
        self.max_length = tokenizer.max_length
        self.vectors = vectors
        self.weights = weights
        self.mapping = mapping
        self.normalize = normalize  # the model's default; the worker loop applies it per request
        self.tokenizer = tokenizer
        self.prompts: dict[str, str] = {}  # set by runtimes.load_runtime
        self.default_prompt_name = ""

    def tokenize(self, inputs: Sequence[Input], *, truncate: bool,
                 direction: TruncationDirection = "right") -> list[Tokenized]:  # fmt: skip
        return self.tokenizer.encode(inputs, truncate=truncate, direction=direction)

    def tokenize_pairs(self, query: str, documents: Sequence[str], *, truncate: bool,
                       direction: TruncationDirection = "right") -> list[Tokenized]:  # fmt: skip
        raise not_a_cross_encoder(self.name)

    def forward(self, batch: Sequence[Tokenized]) -> np.ndarray:
        lengths = np.fromiter((t.length for t in batch), dtype=np.int64, count=len(batch))
        flat = np.fromiter(chain.from_iterable(t.ids for t in batch), dtype=np.int64, count=int(lengths.sum()))
        out = np.zeros((len(batch), self.dim), dtype=np.float32)
        filled = lengths > 0  # an input of only [UNK] has no vector: it stays 0, as in model2vec
        if flat.size:
            rows = self.token_vectors(flat)
            starts = (np.cumsum(lengths) - lengths)[filled]
            out[filled] = np.add.reduceat(rows, starts, axis=0) / lengths[filled, None]
        return out  # unnormalised: the worker loop normalises per request

    def token_vectors(self, ids: np.ndarray) -> np.ndarray:
        rows = self.vectors[ids if self.mapping is None else self.mapping[ids]]
        return rows * self.weights[ids, None] if self.weights is not None else rows

    def warmup(self) -> None:
        self.forward(self.tokenize(["warm up", "a second, longer sentence"], truncate=True))

    def info(self) -> ModelInfo:
        return model_info(self)


def load(model: ModelConfig, path: Path, device: str = "cpu") -> StaticRuntime:
    """``device`` is accepted for the common signature; static vectors always live on the CPU."""
    return loading(model.name, path, lambda: _load(model, path))


def _load(model: ModelConfig, path: Path) -> StaticRuntime:
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    for required in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (path / required).is_file():
            raise ModelLoadError(model.name, path, f"not a model2vec directory: {required} is missing")
    config = json.loads((path / "config.json").read_text())
    tensors = load_file(str(path / "model.safetensors"))
    if "embeddings" not in tensors:
        raise ModelLoadError(model.name, path, f"model.safetensors has no 'embeddings' tensor ({sorted(tensors)})")
    vectors = np.ascontiguousarray(tensors["embeddings"], dtype=np.float32)  # fp16 on disk; fp32 sums
    weights = tensors.get("weights")
    mapping = tensors.get("mapping")
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    vocab_size = len(mapping) if mapping is not None else len(vectors)
    max_length = model.max_length or int(config.get("max_length") or DEFAULT_MAX_LENGTH)
    text = TextTokenizer(tokenizer, max_length=max_length, vocab_size=vocab_size,
                         special_tokens=False, drop_id=unk_id(tokenizer))  # fmt: skip
    normalize = bool(config.get("normalize", False)) if model.normalize is None else model.normalize
    return StaticRuntime(model.name, vectors, text, normalize=normalize,
                         weights=None if weights is None else weights.astype(np.float32),
                         mapping=None if mapping is None else mapping.astype(np.int64))  # fmt: skip


def unk_id(tokenizer: "Tokenizer") -> int | None:  # noqa: F821
    """The unknown token's id, whatever the tokenizer model (WordPiece/BPE name it, Unigram numbers it)."""
    model = json.loads(tokenizer.to_str())["model"]
    if model.get("unk_token") is not None:
        return tokenizer.token_to_id(model["unk_token"])
    unk = model.get("unk_id")
    return int(unk) if unk is not None else None
