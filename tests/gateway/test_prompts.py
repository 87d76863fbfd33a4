"""``gateway/prompts.py``: which prefix a request's texts get, and how it is put before them."""

from __future__ import annotations

from typing import Any

import pytest

from gateway import errors
from gateway.backend import ModelCard
from gateway.prompts import apply_prompt, prompt_for


def card(prompts: dict[str, str] | None = None, default: str = "") -> ModelCard:
    return ModelCard(name="m", kind="transformer", dim=8, max_length=16, main=True, workers=[0],
                     prompts=prompts or {}, default_prompt_name=default)  # fmt: skip


E5 = card({"query": "query: ", "passage": "passage: ", "code": "code: "})
WITH_DOCUMENT = card({"query": "Q: ", "document": "D: ", "passage": "P: "}, default="query")


@pytest.mark.parametrize(("model", "options", "prefix"), [
    (E5, {}, ""),
    (WITH_DOCUMENT, {}, "Q: "),  # the model's default prompt
    (E5, {"prompt_name": "code"}, "code: "),
    (WITH_DOCUMENT, {"prompt_name": "passage"}, "P: "),
    (E5, {"instruction": "Represent this sentence: "}, "Represent this sentence: "),
    (WITH_DOCUMENT, {"instruction": ""}, ""),  # an explicit empty instruction overrides the default
    (E5, {"input_type": "query"}, "query: "),
    (E5, {"input_type": "search_query"}, "query: "),
    (E5, {"input_type": "document"}, "passage: "),  # no "document" prompt: "passage" serves
    (E5, {"input_type": "search_document"}, "passage: "),
    (WITH_DOCUMENT, {"input_type": "document"}, "D: "),  # "document" first
    (card(), {"input_type": "query"}, ""),  # a model without prompts: no prefix
    (card({"query": "q: "}), {"input_type": "document"}, ""),
])  # fmt: skip
def test_the_prefix_a_request_gets(model: ModelCard, options: dict[str, Any], prefix: str) -> None:
    assert prompt_for(model, **options) == prefix


@pytest.mark.parametrize(("options", "words"), [
    ({"prompt_name": "query", "instruction": "x"}, "not `prompt_name` and `instruction`"),
    ({"instruction": "x", "input_type": "query"}, "not `instruction` and `input_type`"),
    ({"prompt_name": "q", "instruction": "x", "input_type": "query"}, "`prompt_name` and `instruction` and `input_type`"),
    ({"prompt_name": "nope"}, "'nope' is not a prompt of model 'm' (its prompts: 'code', 'passage', 'query')"),
    ({"input_type": "classification"}, "`input_type` must be one of 'query', 'search_query', 'document'"),
])  # fmt: skip
def test_bad_choices_are_422_invalid_field_naming_what_is_wrong(options: dict[str, Any], words: str) -> None:
    with pytest.raises(errors.InvalidField) as caught:
        prompt_for(E5, **options)
    assert words in caught.value.message and caught.value.status == 422


def test_a_model_without_prompts_says_so() -> None:
    with pytest.raises(errors.InvalidField, match=r"its prompts: none"):
        prompt_for(card(), prompt_name="query")


def test_the_prefix_is_joined_as_sentence_transformers_joins_it() -> None:
    assert apply_prompt("query: ", ["a", "", "b c"]) == ["query: a", "query: ", "query: b c"]
    items: list[Any] = ["a", [1, 2]]
    assert apply_prompt("", items) == items and apply_prompt("", items) is not items  # no prefix: as sent


def test_token_ids_take_no_prompt() -> None:
    with pytest.raises(errors.InvalidField, match="input 1 is a token-id list"):
        apply_prompt("query: ", ["text", [1, 2, 3]])
