"""Each way a request picks a prompt, through the transformer runtime and ``gateway/prompts.py``,
against sentence-transformers on the same tiny model at float32: a named prompt from
``config_sentence_transformers.json``, an ``input_type``, the model's ``default_prompt_name``, the
config's overrides of both, and a free instruction (sentence-transformers' ``prompt=``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from appliance.config import ModelConfig
from gateway.backend import ModelCard
from gateway.prompts import apply_prompt, prompt_for
from workers.runtimes import Runtime, load_runtime

TEXTS = ["The quick brown fox jumps over the lazy dog.", "capital of France", "short"]
PROMPTS = {"query": "query: ", "document": "passage: "}


@pytest.fixture(scope="module")
def prompted(tmp_path_factory: pytest.TempPathFactory, tiny_transformer: Path) -> Path:
    """The tiny transformer with E5-style prompts and ``query`` as its default."""
    path = Path(shutil.copytree(tiny_transformer, tmp_path_factory.mktemp("prompted") / "model"))
    (path / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": PROMPTS, "default_prompt_name": "query"}))  # fmt: skip
    return path


def load(path: Path, **fields: Any) -> tuple[Runtime, ModelCard]:
    runtime = load_runtime(ModelConfig(name="prompted", path=str(path), dtype="float32", **fields), path)
    info = runtime.info()
    card = ModelCard(name=info.name, kind=info.kind, dim=info.dim, max_length=info.max_length, main=True, workers=[0],
                     normalize=info.normalize, prompts=info.prompts, default_prompt_name=info.default_prompt_name)  # fmt: skip
    return runtime, card


def ours(runtime: Runtime, card: ModelCard, **choice: Any) -> np.ndarray:
    """What the gateway sends for the request's choice, embedded and normalised as the model does."""
    vectors = runtime.forward(runtime.tokenize(apply_prompt(prompt_for(card, **choice), TEXTS), truncate=True))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True) if card.normalize else vectors


@pytest.fixture(scope="module")
def reference(prompted: Path) -> Iterator[Any]:
    from sentence_transformers import SentenceTransformer

    yield SentenceTransformer(str(prompted), device="cpu")


def check(a: np.ndarray, b: np.ndarray) -> None:
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() >= 0.9999
    np.testing.assert_allclose(a, b, atol=2e-6)


@pytest.mark.parametrize("name", ["query", "document"])
def test_a_named_prompt(prompted: Path, reference: Any, name: str) -> None:
    runtime, card = load(prompted)
    check(ours(runtime, card, prompt_name=name), reference.encode(TEXTS, prompt_name=name))


@pytest.mark.parametrize(("input_type", "name"), [("search_query", "query"), ("document", "document")])
def test_an_input_type(prompted: Path, reference: Any, input_type: str, name: str) -> None:
    runtime, card = load(prompted)
    check(ours(runtime, card, input_type=input_type), reference.encode(TEXTS, prompt_name=name))


def test_the_default_prompt_name_applies_when_none_is_chosen(prompted: Path, reference: Any) -> None:
    runtime, card = load(prompted)
    assert card.default_prompt_name == "query"
    check(ours(runtime, card), reference.encode(TEXTS))  # sentence-transformers applies its default too
    without = reference.encode(TEXTS, prompt="")
    assert not np.allclose(ours(runtime, card), without, atol=1e-3)  # the prompt changed the vectors


def test_config_overrides_of_the_prompts_and_the_default(prompted: Path) -> None:
    from sentence_transformers import SentenceTransformer

    overrides = {"query": "Represent this question for retrieval: ", "code": "code: "}
    runtime, card = load(prompted, prompts=overrides, default_prompt_name="code")
    theirs = SentenceTransformer(str(prompted), device="cpu", prompts={**PROMPTS, **overrides},
                                 default_prompt_name="code")  # fmt: skip
    check(ours(runtime, card), theirs.encode(TEXTS))
    check(ours(runtime, card, prompt_name="query"), theirs.encode(TEXTS, prompt_name="query"))


def test_a_free_instruction(prompted: Path, reference: Any) -> None:
    runtime, card = load(prompted)
    instruction = "Instruct: find the passage that answers the question\nQuery: "
    check(ours(runtime, card, instruction=instruction), reference.encode(TEXTS, prompt=instruction))
