"""Batched tokenization with the appliance's rules, shared by every runtime.

- **Text** goes through the model's own tokenizer (``tokenizers``), with or without its special
  tokens as the model was trained.
- **Token ids** (OpenAI's token-id input form) are used exactly as given, nothing added, after a
  range check against the vocabulary.
- **Too long**: with ``truncate=True`` an input is cut to the model's max length; with
  ``truncate=False`` it is refused (``InputTooLong``, naming its index) instead of silently cut.
- **Direction**: ``"right"`` (the default) cuts the end off and keeps the beginning; ``"left"``
  cuts the beginning off and keeps the end (the latest turns of a chat, the end of a log). The
  special tokens stay where they are either way: ``[CLS]`` first, ``[SEP]`` last. Token ids cut
  left keep the last ``max_length`` ids.
- **Pairs** (a cross-encoder's query and document) are one sequence, cut longest-first, from the
  side the direction names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from appliance.protocol import Input, TruncationDirection
from workers.runtimes.base import InputTooLong, InvalidInput, Tokenized

if TYPE_CHECKING:  # imported at run time only by the constructor: a module import stays cheap
    from tokenizers import Encoding, Tokenizer


class TextTokenizer:
    """Batched tokenization with the appliance's rules: truncation, refusal, token-id input.

    Holds three copies of the model's tokenizer: two that truncate at ``max_length``, one cutting
    from the right and one from the left (the library keeps the special tokens when it cuts, so
    [CLS] stays first and [SEP] last), and one that never truncates, to measure an input before
    refusing it.
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
        self.cut_left = Tokenizer.from_str(self.full.to_str())
        self.cut_left.enable_truncation(max_length, strategy="longest_first", direction="left")

    # ---- single inputs -------------------------------------------------------------------
    def encode(self, inputs: Sequence[Input], *, truncate: bool,
               direction: TruncationDirection = "right") -> list[Tokenized]:  # fmt: skip
        texts = {i: self.prepare(x) for i, x in enumerate(inputs) if isinstance(x, str)}
        encodings = dict(zip(texts, self.encode_batch(list(texts.values()), truncate, direction)))
        out: list[Tokenized] = []
        for i, item in enumerate(inputs):
            if i in encodings:
                out.append(self.from_encoding(i, encodings[i], truncate))
            else:
                out.append(self.from_ids(i, item, truncate, direction))
        return out

    def from_encoding(self, index: int, encoding: Encoding, truncate: bool) -> Tokenized:
        ids = encoding.ids
        if not truncate and len(ids) > self.max_length:
            raise InputTooLong(index, len(ids), self.max_length)
        if self.drop_id is not None:
            ids = [t for t in ids if t != self.drop_id]
        return Tokenized(ids, None, len(ids))

    def from_ids(self, index: int, item: object, truncate: bool, direction: TruncationDirection = "right") -> Tokenized:
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
            # token ids are used exactly as given, so nothing special is kept: just the side asked for
            ids = ids[-self.max_length :] if direction == "left" else ids[: self.max_length]
        return Tokenized(ids, None, len(ids))

    # ---- pairs (cross-encoder) -----------------------------------------------------------
    def encode_pairs(self, query: str, documents: Sequence[str], *, truncate: bool,
                     direction: TruncationDirection = "right") -> list[Tokenized]:  # fmt: skip
        for i, doc in enumerate(documents):
            if not isinstance(doc, str):
                raise InvalidInput(i, f"documents must be text, got {type(doc).__name__}")
        q = self.prepare(query)
        pairs = [(q, self.prepare(doc)) for doc in documents]
        tokenizer = self.tokenizer_for(truncate, direction)
        out: list[Tokenized] = []
        for i, encoding in enumerate(tokenizer.encode_batch(pairs, add_special_tokens=self.special_tokens)):
            if len(encoding.ids) > self.max_length:
                raise InputTooLong(i, len(encoding.ids), self.max_length)
            out.append(Tokenized(encoding.ids, encoding.type_ids, len(encoding.ids)))
        return out

    # ---- helpers -------------------------------------------------------------------------
    def prepare(self, text: str) -> str:
        return text.lower() if self.lowercase else text

    def tokenizer_for(self, truncate: bool, direction: TruncationDirection) -> Tokenizer:
        if not truncate:
            return self.full
        return self.cut_left if direction == "left" else self.cut

    def encode_batch(self, texts: list[str], truncate: bool, direction: TruncationDirection = "right") -> list[Encoding]:
        if not texts:
            return []
        tokenizer = self.tokenizer_for(truncate, direction)
        # the _fast variant skips character offsets, which nothing here uses
        encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
        return list(encode(texts, add_special_tokens=self.special_tokens))
