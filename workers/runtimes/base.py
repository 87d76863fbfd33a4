"""The interface every model runtime implements, and the tokenization rules they all share.

A runtime is one loaded model. The worker loop and the batcher only ever see this surface:

    tokenize(inputs, truncate) -> [Tokenized]      batched, cheap, done when a request arrives
    forward([Tokenized])       -> np.ndarray       one padded forward pass over a batch
    warmup() / info()

Inputs are text or, in OpenAI's token-id form, lists of token ids that are used exactly as given
(nothing added) after a range check. With ``truncate=False`` an input longer than the model's
max length is refused (``InputTooLong``, naming its index) instead of silently cut, which is what
the HTTP contract's 422 needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, NamedTuple, Protocol, Sequence, TypeVar

import numpy as np

from appliance.protocol import ModelInfo

if TYPE_CHECKING:  # tokenizers is imported by the runtimes that build a TextTokenizer
    from tokenizers import Encoding, Tokenizer

Input = str | list[int]


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
    """An input the model cannot take: a token id outside the vocabulary, an empty id list, a wrong type."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(f"input {index}: {message}")
        self.index = index


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
    """One loaded model. Embedders return (n, dim) float32 rows; a cross-encoder (n,) scores."""

    name: str
    kind: str  # "transformer" | "static" | "cross_encoder"
    dim: int  # 0 for a cross-encoder
    max_length: int
    device: str
    dtype: str

    def tokenize(self, inputs: Sequence[Input], *, truncate: bool) -> list[Tokenized]: ...

    def tokenize_pairs(self, query: str, documents: Sequence[str], *, truncate: bool) -> list[Tokenized]: ...

    def forward(self, batch: Sequence[Tokenized]) -> np.ndarray: ...

    def warmup(self) -> None: ...

    def info(self) -> ModelInfo: ...


def model_info(runtime: Runtime) -> ModelInfo:
    return ModelInfo(runtime.name, runtime.kind, runtime.dim, runtime.max_length, runtime.device, runtime.dtype)


def cosine_scores(query_vec: np.ndarray, doc_vecs: np.ndarray) -> np.ndarray:
    """Cosine of one query vector with each document row, as float32 (a zero vector scores 0)."""
    query = np.asarray(query_vec, dtype=np.float32).reshape(-1)
    docs = np.asarray(doc_vecs, dtype=np.float32).reshape(-1, query.shape[0])
    norms = np.linalg.norm(docs, axis=1) * np.linalg.norm(query)
    dots = docs @ query
    # where a norm is 0 the cosine is undefined; 0 ranks it below every real match
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0).astype(np.float32)


class TextTokenizer:
    """Batched tokenization with the appliance's rules: truncation, refusal, token-id input.

    Holds two copies of the model's tokenizer: one that truncates at ``max_length`` (the library
    keeps the special tokens when it cuts, so [SEP] stays last) and one that never truncates, to
    measure an input before refusing it.
    """

    def __init__(self, tokenizer: Tokenizer, *, max_length: int, vocab_size: int,
                 special_tokens: bool = True, lowercase: bool = False, drop_id: int | None = None) -> None:  # fmt: skip
        from tokenizers import Tokenizer

        self.max_length = max_length
        self.vocab_size = vocab_size
        self.special_tokens = special_tokens
        self.lowercase = lowercase
        self.drop_id = drop_id  # model2vec drops [UNK]: a static model has no useful vector for it
        self.full = Tokenizer.from_str(tokenizer.to_str())
        self.full.no_truncation()
        self.full.no_padding()  # padding is the forward pass's job, per batch
        self.cut = Tokenizer.from_str(self.full.to_str())
        self.cut.enable_truncation(max_length, strategy="longest_first")

    # ---- single inputs -------------------------------------------------------------------
    def encode(self, inputs: Sequence[Input], *, truncate: bool) -> list[Tokenized]:
        texts = {i: self.prepare(x) for i, x in enumerate(inputs) if isinstance(x, str)}
        encodings = dict(zip(texts, self.encode_batch(list(texts.values()), truncate)))
        out: list[Tokenized] = []
        for i, item in enumerate(inputs):
            if i in encodings:
                out.append(self.from_encoding(i, encodings[i], truncate))
            else:
                out.append(self.from_ids(i, item, truncate))
        return out

    def from_encoding(self, index: int, encoding: Encoding, truncate: bool) -> Tokenized:
        ids = encoding.ids
        if not truncate and len(ids) > self.max_length:
            raise InputTooLong(index, len(ids), self.max_length)
        if self.drop_id is not None:
            ids = [t for t in ids if t != self.drop_id]
        return Tokenized(ids, None, len(ids))

    def from_ids(self, index: int, item: object, truncate: bool) -> Tokenized:
        if not isinstance(item, (list, tuple)):
            raise InvalidInput(index, f"expected text or a list of token ids, got {type(item).__name__}")
        ids = list(item)
        if not ids:
            raise InvalidInput(index, "an empty list of token ids")
        if not all(isinstance(t, int) for t in ids):
            raise InvalidInput(index, "token ids must be integers")
        low, high = min(ids), max(ids)
        if low < 0 or high >= self.vocab_size:
            bad = low if low < 0 else high
            raise InvalidInput(index, f"token id {bad} is outside the vocabulary (0..{self.vocab_size - 1})")
        if len(ids) > self.max_length:
            if not truncate:
                raise InputTooLong(index, len(ids), self.max_length)
            ids = ids[: self.max_length]
        return Tokenized(ids, None, len(ids))

    # ---- pairs (cross-encoder) -----------------------------------------------------------
    def encode_pairs(self, query: str, documents: Sequence[str], *, truncate: bool) -> list[Tokenized]:
        for i, doc in enumerate(documents):
            if not isinstance(doc, str):
                raise InvalidInput(i, f"documents must be text, got {type(doc).__name__}")
        q = self.prepare(query)
        pairs = [(q, self.prepare(doc)) for doc in documents]
        tokenizer = self.cut if truncate else self.full
        out: list[Tokenized] = []
        for i, encoding in enumerate(tokenizer.encode_batch(pairs, add_special_tokens=self.special_tokens)):
            if len(encoding.ids) > self.max_length:
                raise InputTooLong(i, len(encoding.ids), self.max_length)
            out.append(Tokenized(encoding.ids, encoding.type_ids, len(encoding.ids)))
        return out

    # ---- helpers -------------------------------------------------------------------------
    def prepare(self, text: str) -> str:
        return text.lower() if self.lowercase else text

    def encode_batch(self, texts: list[str], truncate: bool) -> list[Encoding]:
        if not texts:
            return []
        tokenizer = self.cut if truncate else self.full
        # the _fast variant skips character offsets, which nothing here uses
        encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
        return list(encode(texts, add_special_tokens=self.special_tokens))


def not_a_cross_encoder(name: str) -> TypeError:
    return TypeError(f"model {name!r} embeds; it does not score (query, document) pairs")
