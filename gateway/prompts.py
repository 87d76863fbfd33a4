"""Prompts: the text put in front of each input before it is embedded, chosen per request.

Many embedding models are trained with a prefix that says what a text is for (E5's ``"query: "``
and ``"passage: "``, instructions for the Instructor/GTE-Qwen families). sentence-transformers
keeps a model's named prompts in ``config_sentence_transformers.json``; the worker reads them (with
the config's overrides) and the gateway sees them on the ``ModelCard``. A request picks its prefix
with at most one of:

- ``prompt_name``: one of the model's prompts, by name (422 listing them otherwise);
- ``instruction``: free text, used verbatim as the prefix (TEI/Infinity style);
- ``input_type``: ``"query"`` or ``"document"`` (and Cohere/Voyage's ``"search_query"`` /
  ``"search_document"``), mapped to the model's ``query`` and ``document`` (or ``passage``)
  prompts, or no prefix when the model has none.

With none of them a request gets the model's ``default_prompt_name`` prompt, or no prefix.

``apply_prompt`` joins the prefix to each text exactly as sentence-transformers does (plain
concatenation), so everything after it sees one ordinary text: the token count billed includes
the prompt, and the result cache and coalescing, keyed on the text, keep prompts apart. A token-id
input has no text to put a prompt before: with a non-empty prefix it is a 422.
"""

from __future__ import annotations

from typing import Sequence

from appliance.protocol import Input
from gateway import errors
from gateway.backend import ModelCard

# input_type values -> the prompt names that serve them, first found wins
INPUT_TYPES: dict[str, tuple[str, ...]] = {
    "query": ("query",),
    "search_query": ("query",),
    "document": ("document", "passage"),
    "search_document": ("document", "passage"),
}


def prompt_for(card: ModelCard, *, prompt_name: str | None = None, instruction: str | None = None,
               input_type: str | None = None) -> str:  # fmt: skip
    """The prefix one request's texts get on ``card``'s model ("" for none); 422 for a bad choice."""
    given = [name for name, value in (("prompt_name", prompt_name), ("instruction", instruction),
                                      ("input_type", input_type)) if value is not None]  # fmt: skip
    if len(given) > 1:
        raise errors.InvalidField(f"send at most one of `prompt_name`, `instruction` and `input_type`, "
                                  f"not {' and '.join(f'`{name}`' for name in given)}")  # fmt: skip
    if prompt_name is not None:
        return named_prompt(card, prompt_name)
    if instruction is not None:
        return instruction
    if input_type is not None:
        return typed_prompt(card, input_type)
    return card.prompts.get(card.default_prompt_name, "") if card.default_prompt_name else ""


def named_prompt(card: ModelCard, name: str) -> str:
    if name not in card.prompts:
        known = ", ".join(repr(n) for n in sorted(card.prompts)) or "none"
        raise errors.InvalidField(f"`prompt_name` {name!r} is not a prompt of model {card.name!r} "
                                  f"(its prompts: {known}) - at `$.prompt_name`")  # fmt: skip
    return card.prompts[name]


def typed_prompt(card: ModelCard, input_type: str) -> str:
    names = INPUT_TYPES.get(input_type)
    if names is None:
        accepted = ", ".join(repr(t) for t in INPUT_TYPES)
        raise errors.InvalidField(f"`input_type` must be one of {accepted}, not {input_type!r} - at `$.input_type`")
    return next((card.prompts[n] for n in names if n in card.prompts), "")


def apply_prompt(prefix: str, items: Sequence[Input]) -> list[Input]:
    """``items`` with ``prefix`` before each text; unchanged (as a list) when ``prefix`` is ""."""
    if not prefix:
        return list(items)
    out: list[Input] = []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise errors.InvalidField(f"input {i} is a token-id list, which a prompt cannot be put before: "
                                      f"send text, or no prompt (the model's default prompt counts too)")  # fmt: skip
        out.append(prefix + item)
    return out
