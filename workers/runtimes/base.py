"""The interface every model runtime implements, and the errors and helpers they all share.

A runtime is one loaded model. The worker loop and the batcher only ever see this surface:

    tokenize(inputs, truncate, direction) -> [Tokenized]   batched, cheap, done when a request arrives
    tokenize_pairs(query, documents, truncate, direction)  a cross-encoder's (query, document) pairs
    forward([Tokenized])       -> np.ndarray               one padded forward pass over a batch
    warmup() / info()

``forward`` answers what the model computes before any per-request choice: pooled vectors NOT
L2-normalised, a cross-encoder's raw logits. The worker loop applies the request's choices when
it assembles one request's answer (``l2_normalize`` unless the request or the model's default
says not to, the sigmoid unless ``raw_scores``): a few rows of numpy, and one batch can then mix
requests that want different things.

Inputs (``appliance.protocol.Input``) are text or, in OpenAI's token-id form, lists of token ids.
With ``truncate=False`` an input longer than the model's max length is refused (``InputTooLong``,
naming its index) instead of silently cut, which is what the HTTP contract's 422 needs. The rules
themselves live in ``tokenizer.TextTokenizer``, which every runtime uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple, Protocol, Sequence, TypeVar

import numpy as np

from appliance.config import ModelKind
from appliance.protocol import Input, ModelInfo, TruncationDirection


class Tokenized(NamedTuple):
    """One tokenized input, ready for a batch."""

    ids: list[int]  # token ids incl. special tokens, already truncated to max_length
    type_ids: list[int] | None  # segment ids of a (query, document) pair; None for one text
    length: int  # len(ids): what the batch's token budget counts


class InputTooLong(Exception):
    """``truncate=False`` and an input has more tokens than the model takes.

    ``index`` may be renumbered by the caller (the bi-encoder rerank shifts it so that it names a
    document, -1 being the query), so the message is built when it is read, not when raised.
    """

    def __init__(self, index: int, length: int, max_length: int) -> None:
        super().__init__(index, length, max_length)
        self.index = index
        self.length = length
        self.max_length = max_length

    def __str__(self) -> str:
        what = "the query" if self.index < 0 else f"input {self.index}"
        return (f"{what} has {self.length} tokens, more than the model's max length {self.max_length} "
                f"(send truncate=true to cut it)")  # fmt: skip


class InvalidInput(ValueError):
    """An input the model cannot take: a token id outside the vocabulary, an empty id list, a wrong type.

    As with ``InputTooLong``, ``index`` may be renumbered by the caller (the worker names an input
    by its place in the whole request, ``workers/refusals.py``): the message is built when read.
    """

    def __init__(self, index: int, message: str) -> None:
        super().__init__(index, message)
        self.index = index
        self.reason = message

    def __str__(self) -> str:
        return f"input {self.index}: {self.reason}"


class ModelLoadError(Exception):
    """A model could not be loaded; the message names the model and the directory."""

    def __init__(self, model: str, path: Path | str, reason: str) -> None:
        super().__init__(f"cannot load model {model!r} from {path}: {reason}")
        self.model = model
        self.path = Path(path)
        self.reason = reason


R = TypeVar("R")


def loading(model: str, path: Path, load: Callable[[], R]) -> R:
    """``load()``, with any file, format or torch error reported as one ``ModelLoadError`` that
    names the model and the path (the worker exits with its load-failure code on it)."""
    try:
        return load()
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(model, path, f"{type(exc).__name__}: {exc}") from exc


class Runtime(Protocol):
    """One loaded model. Embedders return (n, dim) float32 rows; a cross-encoder (n,) logits."""

    name: str
    kind: ModelKind
    dim: int  # 0 for a cross-encoder
    max_length: int
    device: str
    dtype: str
    normalize: bool  # the model's default: L2-normalise its vectors when a request does not say
    prompts: dict[str, str]  # set by ``load_runtime`` from the model's files and its config
    default_prompt_name: str

    def tokenize(self, inputs: Sequence[Input], *, truncate: bool,
                 direction: TruncationDirection = "right") -> list[Tokenized]: ...  # fmt: skip

    def tokenize_pairs(self, query: str, documents: Sequence[str], *, truncate: bool,
                       direction: TruncationDirection = "right") -> list[Tokenized]: ...  # fmt: skip

    def forward(self, batch: Sequence[Tokenized]) -> np.ndarray: ...

    def warmup(self) -> None: ...

    def info(self) -> ModelInfo: ...


def model_info(runtime: Runtime) -> ModelInfo:
    return ModelInfo(runtime.name, runtime.kind, runtime.dim, runtime.max_length, runtime.device, runtime.dtype,
                     runtime.normalize, dict(runtime.prompts), runtime.default_prompt_name)  # fmt: skip


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Each row divided by its L2 norm, as float32; a zero row stays zero rather than NaN."""
    rows = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """The logistic function in float32, stable for large logits of either sign."""
    x = np.asarray(logits, dtype=np.float64)
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32)


def cosine_scores(query_vec: np.ndarray, doc_vecs: np.ndarray) -> np.ndarray:
    """Cosine of one query vector with each document row, as float32 (a zero vector scores 0)."""
    query = np.asarray(query_vec, dtype=np.float32).reshape(-1)
    docs = np.asarray(doc_vecs, dtype=np.float32).reshape(-1, query.shape[0])
    norms = np.linalg.norm(docs, axis=1) * np.linalg.norm(query)
    dots = docs @ query
    # where a norm is 0 the cosine is undefined; 0 ranks it below every real match
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0).astype(np.float32)


def not_a_cross_encoder(name: str) -> TypeError:
    return TypeError(f"model {name!r} embeds; it does not score (query, document) pairs")
