"""The served models' own tokenizers, in the gateway: ``Tokenizers`` (one ``ModelTokenizer`` per
model, loaded on first use and kept) for TEI's ``POST /tokenize`` and ``POST /decode``.

The workers tokenize what they compute; these answer questions about tokens without reaching a
worker. The rules are the workers' (``workers/runtimes/tokenizer.py``): the model's fast
tokenizer (``tokenizer.json``), text lowercased first for a ``do_lower_case`` model, special
tokens as the model adds them (``gateway/model_files.py`` reads which). As TEI's ``/tokenize``
does, the whole input is shown: nothing is cut at the model's max length.

A token's ``start`` and ``stop`` are UTF-8 byte offsets into the text as sent, and its ``text``
the sent text between them (TEI's ``SimpleToken``); a special token has no offsets and its
``text`` is the token itself. Loading reads files and encoding is CPU work, so both run off the
event loop: ``Tokenizers.of`` loads in a thread, and the routes call ``tokenize`` and ``decode``
through ``asyncio.to_thread`` (``tokenizers`` releases the GIL while it encodes a batch).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from appliance.config import Config
from gateway import errors
from gateway.backend import ModelCard
from gateway.model_files import ModelFiles, read_model_files

if TYPE_CHECKING:  # imported when a tokenizer is first loaded: the gateway starts without it
    from tokenizers import Encoding, Tokenizer


@dataclass(frozen=True, slots=True)
class Token:
    id: int
    text: str
    special: bool
    start: int | None  # UTF-8 byte offsets into the text as sent; None for a special token
    stop: int | None


class ModelTokenizer:
    """One model's tokenizer with the workers' rules."""

    def __init__(self, tokenizer: Tokenizer, files: ModelFiles) -> None:
        self.tokenizer = tokenizer
        self.files = files
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)

    @classmethod
    def load(cls, files: ModelFiles) -> ModelTokenizer:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(files.tokenizer_file))
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return cls(tokenizer, files)

    def tokenize(self, texts: Sequence[str], *, add_special_tokens: bool = True) -> list[list[Token]]:
        """``TokenizerFailed`` for a text the library cannot take (a lone surrogate)."""
        prepared = [text.lower() if self.files.lowercase else text for text in texts]
        add = add_special_tokens and self.files.special_tokens
        try:
            encodings = self.tokenizer.encode_batch(prepared, add_special_tokens=add)
        except Exception as exc:  # the library raises plain exceptions (TypeError, its own) for bad text
            raise errors.TokenizerFailed(f"the tokenizer cannot take this input: {exc}") from None
        return [tokens_of(encoding, shown(text, given)) for encoding, text, given in zip(encodings, texts, prepared)]

    def decode(self, batches: Sequence[Sequence[int]], *, skip_special_tokens: bool = True) -> list[str]:
        lists = [list(ids) for ids in batches]
        return list(self.tokenizer.decode_batch(lists, skip_special_tokens=skip_special_tokens))

    def unknown_id(self, batches: Sequence[Sequence[int]]) -> int | None:
        """The first id outside the vocabulary, if any (the library would silently drop it)."""
        return next((i for ids in batches for i in ids if i >= self.vocab_size), None)


def shown(sent: str, given: str) -> str:
    """The text token offsets index: as sent, unless lowercasing changed its length (a few
    non-ASCII letters), when the offsets only fit the lowercased text the tokenizer was given."""
    return sent if len(sent) == len(given) else given


def tokens_of(encoding: Encoding, text: str) -> list[Token]:
    starts = byte_offsets(text)
    out: list[Token] = []
    for token_id, token, special, (start, stop) in zip(encoding.ids, encoding.tokens, encoding.special_tokens_mask,
                                                         encoding.offsets):  # fmt: skip
        if special:
            out.append(Token(token_id, token, True, None, None))
        else:
            out.append(Token(token_id, text[start:stop], False, starts[start], starts[stop]))
    return out


def byte_offsets(text: str) -> list[int]:
    """The UTF-8 byte offset of every character offset 0..len(text) (inclusive)."""
    if text.isascii():
        return list(range(len(text) + 1))
    offsets = [0]
    for char in text:
        offsets.append(offsets[-1] + len(char.encode("utf-8", "surrogatepass")))
    return offsets


class Tokenizers:
    """Each model's ``ModelTokenizer``, loaded once on first use (in a thread) and kept for the
    life of the app: a model's files do not change while it is served."""

    def __init__(self) -> None:
        self._loaded: dict[str, ModelTokenizer] = {}
        self._lock = threading.Lock()  # two first requests at once load the files once

    async def of(self, card: ModelCard, config: Config) -> ModelTokenizer:
        found = self._loaded.get(card.name)
        if found is not None:
            return found
        return await asyncio.to_thread(self._load, card.name, config)

    def _load(self, name: str, config: Config) -> ModelTokenizer:
        with self._lock:
            if name not in self._loaded:
                model = config.model(name)
                if model is None:  # the backend's cards come from this config; a test's may not
                    raise FileNotFoundError(f"no directory is configured for model {name!r}")
                self._loaded[name] = ModelTokenizer.load(read_model_files(model, config.state_dir))
            return self._loaded[name]
