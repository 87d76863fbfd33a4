"""The HTTP request shapes (the contract in ``docs/architecture.md``) as msgspec Structs, and how a body becomes one.

Requests: known fields are strictly typed (no coercion: ``"3"`` is not an int), unknown fields
are ignored (msgspec's default) because clients send vendor extras, and ``model`` may be left
out to mean the main model (the batch API's original clients relied on a default model). Requests are ``kw_only`` so
required and defaulted fields can sit in the order the public APIs document them.

The response shapes are ``gateway/responses.py``.
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeVar, Union

import msgspec
import numpy as np
from msgspec import Meta

from gateway.errors import InvalidField, MalformedJson, TooManyInputs

T = TypeVar("T")

# Below 2**32: no vocabulary comes near, and a token id travels to the workers as a msgpack uint32
# (``gateway/parts.py`` sizes records at 5 bytes an id). Larger, up to any bignum, is a 422 here.
TokenId = Annotated[int, Meta(ge=0, lt=2**32)]
_TOKEN_ID_SCHEMA = {"type": "integer", "minimum": 0, "exclusiveMaximum": 2**32}
# OpenAI's ``input``: msgspec decodes one array type per union, so the Struct takes any mix of the
# element forms and ``gateway/routes/openai.py`` refuses a mix; the JSON Schema (``GET
# /openapi.json``) says what is accepted: a text, texts, one token-id list or token-id lists.
# (msgspec keeps its own ``anyOf`` for a union, so the narrower one goes in an ``allOf``.)
OpenAIInput = Annotated[str | list[Union[str, TokenId, list[TokenId]]], Meta(extra_json_schema={"allOf": [{"anyOf": [
    {"type": "string"},
    {"type": "array", "items": {"type": "string"}},
    {"type": "array", "items": _TOKEN_ID_SCHEMA},
    {"type": "array", "items": {"type": "array", "items": _TOKEN_ID_SCHEMA}},
]}]})]  # fmt: skip
Dimensions = Annotated[int, Meta(ge=1)]
Count = Annotated[int, Meta(ge=1)]
# Ollama's runtime options (ignored here) are scalars, or a short list like ``stop``: nothing in
# them may nest or grow without bound.
OPTIONS_MAX = 64
OptionName = Annotated[str, Meta(max_length=OPTIONS_MAX)]
OptionScalar = Union[str, int, float, bool, None]
OptionValue = Union[OptionScalar, Annotated[list[Union[str, int, float, bool]], Meta(max_length=OPTIONS_MAX)]]
Options = Annotated[dict[OptionName, OptionValue], Meta(max_length=OPTIONS_MAX)]
KeepAlive = Annotated[str, Meta(max_length=OPTIONS_MAX)]  # "5m", "-1"; or a number of seconds
# Which end of a too-long input is cut off; TEI clients spell them capitalised.
Direction = Annotated[Literal["right", "left", "Right", "Left"], Meta(
    description="Which end a too-long input loses when `truncate` is on: `right` keeps the beginning, `left` the "
                "end (`Right`/`Left` too).")]  # fmt: skip
InputType = Annotated[Literal["query", "document", "search_query", "search_document"], Meta(
    description="What the texts are: picks the model's `query` or `document` (else `passage`) prompt; none if it has "
                "no such prompt.")]  # fmt: skip


# ---- request options ------------------------------------------------------------------------
class EmbedOptions(msgspec.Struct, kw_only=True):
    """How every embedding body may ask for its vectors (``gateway/routes/options.py`` resolves
    them against the model). At most one of ``prompt_name``, ``instruction``, ``input_type``."""

    normalize: Annotated[bool | None, Meta(
        description="L2-normalise the vectors; left out: as the model does by default (`/v1/models`).")] = None
    truncation_direction: Direction = "right"
    prompt_name: Annotated[str | None, Meta(
        description="One of the model's prompts (`/v1/models` lists them), put before each text.")] = None
    instruction: Annotated[str | None, Meta(description="Free text put before each text, verbatim.")] = None
    input_type: InputType | None = None


# ---- requests -------------------------------------------------------------------------------
class OllamaEmbed(EmbedOptions, kw_only=True):
    """``POST /api/embed``. ``keep_alive`` and ``options`` are accepted (bounded: ``Options``) and
    ignored: models stay loaded, and runtime options are the operator's, not the client's."""

    model: str | None = None
    input: str | list[str]
    truncate: bool = True
    dimensions: Dimensions | None = None
    keep_alive: KeepAlive | float | None = None
    options: Options | None = None


class OpenAIEmbed(EmbedOptions, kw_only=True):
    """``POST /v1/embeddings``. ``input``: a text, texts, one token-id list, or token-id lists,
    not a mix (``OpenAIInput``). ``truncate`` is our extension (default on, as OpenAI's
    server refuses rather than truncates, but most local servers truncate)."""

    model: str | None = None
    input: OpenAIInput
    # ``int8``/``uint8``/``binary``/``ubinary`` are our extension: JSON integer arrays
    # (``gateway/quantize.py``; the binary ones pack 8 dimensions a byte, after ``dimensions``)
    encoding_format: Literal["float", "base64", "int8", "uint8", "binary", "ubinary"] = "float"
    dimensions: Dimensions | None = None
    user: str | None = None
    truncate: bool = True


class BatchEmbed(EmbedOptions, kw_only=True):
    """``POST /api/embed/batch`` (groups of texts, as the original batch API had them). ``batch_size`` is accepted for
    compatibility; forward batches are the workers' business (token budget), not the client's."""

    model: str | None = None
    inputs: list[list[str]]
    batch_size: Count | None = None
    use_cache: bool = True
    truncate: bool = True
    # "fail": an input that cannot be served fails the whole request (the original behaviour);
    # "skip": it answers as a ``FailedItem`` in its place and the others are served
    # (``gateway/routes/batch.py``). ``POST /api/embed/stream`` takes this body too.
    on_error: Literal["fail", "skip"] = "fail"


class Rerank(msgspec.Struct, kw_only=True):
    """``POST /api/rerank``."""

    model: str | None = None
    query: str
    documents: list[str]
    top_k: Count | None = None
    truncate: bool = True
    truncation_direction: Direction = "right"
    raw_scores: Annotated[bool, Meta(description="A cross-encoder's raw logits instead of sigmoid probabilities; "
                                                 "an embedding model's cosines are the same either way.")] = False


class Document(msgspec.Struct):
    text: str


class CohereRerank(msgspec.Struct, kw_only=True):
    """``POST /v1/rerank`` (Cohere / Jina): documents are strings or ``{"text": ...}``."""

    model: str | None = None
    query: str
    documents: list[Union[str, Document]]
    top_n: Count | None = None
    return_documents: bool = False
    truncate: bool = True
    truncation_direction: Direction = "right"


class JobSubmit(EmbedOptions, kw_only=True):
    """``POST /v1/jobs`` (and ``POST /jobs``): the batch body plus ``task``. ``inputs`` are texts;
    an element that is a list of texts is a group, flattened in order (item indices count the
    flattened texts). A rerank job scores ``inputs`` as documents against ``query`` (of the
    options, only ``truncation_direction`` applies to it)."""

    model: str | None = None
    task: Literal["embed", "rerank"] = "embed"
    inputs: list[Union[str, list[str]]]
    query: str | None = None
    truncate: bool = True
    dimensions: Dimensions | None = None
    use_cache: bool = True


class OllamaEmbeddings(EmbedOptions, kw_only=True):
    """``POST /api/embeddings``, the Ollama API older clients still call: one ``prompt``. An empty
    prompt answers an empty embedding, as Ollama's does (it only loads the model there).
    ``keep_alive`` and ``options`` as in ``OllamaEmbed``. Our extensions: ``truncate`` and the
    request options every embedding body takes (``EmbedOptions``)."""

    model: str | None = None
    prompt: str = ""
    truncate: bool = True
    keep_alive: KeepAlive | float | None = None
    options: Options | None = None


class CohereRerankV2(msgspec.Struct, kw_only=True):
    """``POST /v2/rerank`` (Cohere's v2): documents are strings. Documents are cut at the model's
    max length, as Cohere cuts them at ``max_tokens_per_doc`` (its default 4096); a value below the
    model's max length is refused (``gateway/routes/cohere_v2.py``)."""

    model: str | None = None
    query: str
    documents: list[str]
    top_n: Count | None = None
    max_tokens_per_doc: Count | None = None


# ---- decoding -------------------------------------------------------------------------------
_json_syntax = msgspec.json.Decoder(msgspec.Raw)  # parses (and so checks) without building values
_SCAN_CHUNK = 64 << 10  # bytes the container count looks at a time: its scratch stays in cache
_QUOTE, _OPEN_ARRAY, _OPEN_OBJECT = ord('"'), ord("["), ord("{")
TOO_DEEP = "JSON nested too deeply to decode"


def decode(decoder: msgspec.json.Decoder[T], body: bytes, max_containers: int | None = None) -> T:
    """Body bytes -> request Struct; 400 when it is not JSON (or not UTF-8, or nested deeper than
    the decoder can go), 422 naming the field when a field is wrong, 422 ``too_many_inputs``
    when it holds more than ``max_containers`` arrays and objects. That last check runs before
    decoding because decoding is what costs: an 8 MB body of ``[],`` is 2.7 million lists, most
    of a second of the event loop, while counting them costs milliseconds."""
    if not body:
        raise MalformedJson("request body is empty; expected a JSON object")
    _check_utf8(body)
    if max_containers is not None:
        _check_containers(body, max_containers)
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        _raise_if_malformed(body)
        raise InvalidField(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise MalformedJson(f"malformed JSON: {exc}") from None
    except RecursionError:  # msgspec's depth guard (the interpreter's recursion limit)
        raise MalformedJson(TOO_DEEP) from None


def _check_utf8(body: bytes) -> None:
    """JSON is UTF-8 (RFC 8259). msgspec checks the strings it builds, not those it skips (unknown
    fields), so the whole body is checked here; ``isascii`` makes the common case free."""
    if body.isascii():
        return
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedJson(f"malformed JSON: the body is not valid UTF-8 (byte {exc.start})") from None


def _check_containers(body: bytes, limit: int) -> None:
    """422 when the body opens more than ``limit`` arrays and objects. A raw count of ``[`` and
    ``{`` is an upper bound (brackets inside strings count too), so only a body over it is
    counted exactly, outside its strings."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return
    found = containers_outside_strings(body)
    if found > limit:
        raise TooManyInputs(f"the body holds {found} arrays and objects; the limit is {limit}")


def containers_outside_strings(body: bytes) -> int:
    """How many ``[`` and ``{`` of ``body`` open an array or object (are outside strings). Escaped
    backslashes, then escaped quotes, are dropped first (order matters: in ``\\\\"`` the quote
    closes the string), so every ``"`` left opens or closes one; a bracket is outside strings when
    an even number of quotes comes before it."""
    text = body.replace(b"\\\\", b"").replace(b'\\"', b"") if b"\\" in body else body
    found, inside = 0, 0  # inside: parity of the quotes in the chunks before this one
    for start in range(0, len(text), _SCAN_CHUNK):
        chunk = np.frombuffer(text, np.uint8, min(_SCAN_CHUNK, len(text) - start), start)
        is_open = (chunk == _OPEN_ARRAY) | (chunk == _OPEN_OBJECT)
        quotes = np.flatnonzero(chunk == _QUOTE)
        if quotes.size:
            in_string = (np.searchsorted(quotes, np.flatnonzero(is_open)) + inside) % 2
            found += int(in_string.size - np.count_nonzero(in_string))
        elif not inside:
            found += int(np.count_nonzero(is_open))
        inside = (inside + quotes.size) % 2
    return found


def _raise_if_malformed(body: bytes) -> None:
    """msgspec validates while it parses, so ``{"input": 1,}`` reports the type error first;
    the syntax error is the truer answer (400). Only runs on the error path."""
    try:
        _json_syntax.decode(body)
    except msgspec.DecodeError as exc:
        raise MalformedJson(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise MalformedJson(TOO_DEEP) from None
