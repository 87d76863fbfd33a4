"""The request options every embedding route takes, resolved once against the model.

A body's ``EmbedOptions`` (``gateway/schemas.py``) become one ``EmbedChoice``: the prompt prefix
(``gateway/prompts.py``), the normalisation asked for (None: the model's default) and whether the
answer is normalised at all (which decides whether a ``dimensions`` cut is re-normalised), and the
truncation direction in the protocol's spelling (TEI's ``Left``/``Right`` accepted). Routes call
``embed_choice`` after resolving the model and before admitting the inputs, so a bad option is a
422 that costs no rate token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Sequence, cast

from msgspec import Meta

from appliance.protocol import Input, TruncationDirection
from gateway import errors
from gateway.backend import ModelCard
from gateway.prompts import apply_prompt, prompt_for
from gateway.schemas import EmbedOptions


# What every embedding route's RouteDoc says about the options.
OPTIONS_DOC = ("`normalize` (default: the model's own), `truncation_direction` (`right`/`left`), and at most one of "
               "`prompt_name`, `instruction`, `input_type` (prompts, `/v1/models` lists them; the default prompt "
               "applies when none is given) choose how the vectors are computed.")


PROMPT_FIELDS = ("prompt_name", "instruction", "input_type")


def _both_given(a: str, b: str) -> dict[str, Any]:
    return {"required": [a, b], "properties": {a: {"type": "string"}, b: {"type": "string"}}}


# "At most one prompt field is not null", in JSON Schema, for the routes' documented bodies (msgspec
# cannot say it of a Struct): clients and generated requests then see the rule ``prompt_for`` applies.
AT_MOST_ONE_PROMPT: dict[str, Any] = {"not": {"anyOf": [
    _both_given(a, b) for i, a in enumerate(PROMPT_FIELDS) for b in PROMPT_FIELDS[i + 1:]]}}  # fmt: skip


def documented(body: type) -> Any:
    """``body`` (a Struct with ``EmbedOptions``) as its RouteDoc names it: with the prompt rule."""
    return Annotated[body, Meta(extra_json_schema=AT_MOST_ONE_PROMPT)]


@dataclass(frozen=True, slots=True)
class EmbedChoice:
    """One request's options, resolved against its model."""

    prefix: str  # put before each text; "" for none
    normalize: bool | None  # what the request asked; None: the model's default
    normalized: bool  # whether the answer's vectors are normalised (the request's, else the model's)
    direction: TruncationDirection

    def inputs(self, items: Sequence[Input]) -> list[Input]:
        """``items`` as they are embedded: the prefix before each text (422 for token ids with one)."""
        return apply_prompt(self.prefix, items)


def embed_choice(card: ModelCard, body: EmbedOptions, max_chars: int) -> EmbedChoice:
    """``body``'s options on ``card``'s model; 422 ``invalid_field`` for a bad combination, an
    unknown prompt, or an instruction longer than a text may be (``max_chars``)."""
    if body.instruction is not None and len(body.instruction) > max_chars:
        raise errors.InvalidField(f"`instruction` has {len(body.instruction)} characters, more than the "
                                  f"{max_chars} a text may have - at `$.instruction`")  # fmt: skip
    prefix = prompt_for(card, prompt_name=body.prompt_name, instruction=body.instruction, input_type=body.input_type)
    normalized = card.normalize if body.normalize is None else body.normalize
    return EmbedChoice(prefix, body.normalize, normalized, direction_of(body.truncation_direction))


def direction_of(value: str) -> TruncationDirection:
    """The protocol's spelling of a body's ``truncation_direction`` (TEI capitalises it)."""
    return cast(TruncationDirection, value.lower())
