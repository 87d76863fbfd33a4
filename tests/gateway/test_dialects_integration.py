"""``POST /v2/rerank``, ``POST /api/embeddings`` and the quantised ``encoding_format``s on the real
appliance (subprocess, one worker, tiny float32 models) with the real ``cohere`` and ``ollama``
clients: each answer agrees with what the older routes compute for the same texts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from gateway.quantize import quantize
from harness import Appliance, post, serving

pytestmark = pytest.mark.slow

MAIN, CROSS, PROMPTED = "tiny", "tiny-ce", "tiny-prompted"
DOCS = ["Paris is the capital of France", "bananas are yellow", "the river runs through the city", "a lazy dog"]


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory, tiny_transformer: Path,
              tiny_cross_encoder: Path) -> Iterator[Appliance]:  # fmt: skip
    models = [
        {"name": MAIN, "path": str(tiny_transformer), "main": True, "dtype": "float32"},
        {"name": CROSS, "path": str(tiny_cross_encoder), "kind": "cross_encoder", "dtype": "float32"},
        # the same model given prompts, and a default one, by the config
        {"name": PROMPTED, "path": str(tiny_transformer), "dtype": "float32",
         "prompts": {"query": "query: ", "document": "passage: "}, "default_prompt_name": "query"},
    ]
    with serving(tmp_path_factory.mktemp("dialects"), models, workers=1) as running:
        yield running


def embed(appliance: Appliance, texts: list[str]) -> np.ndarray:
    status, _, body = post(appliance.url + "/api/embed", {"model": MAIN, "input": texts})
    assert status == 200, body
    return np.array(body["embeddings"], dtype=np.float32)


@pytest.mark.parametrize("model", [MAIN, CROSS])
def test_cohere_client_v2_rerank_agrees_with_v1(appliance: Appliance, model: str) -> None:
    import cohere

    client = cohere.ClientV2(base_url=appliance.url, api_key="unused", timeout=30)
    answer = client.rerank(model=model, query="capital of France", documents=DOCS, top_n=3)
    status, _, v1 = post(appliance.url + "/v1/rerank", {"model": model, "query": "capital of France",
                                                        "documents": DOCS, "top_n": 3})  # fmt: skip
    assert status == 200
    assert [(r.index, r.relevance_score) for r in answer.results] == [
        (r["index"], r["relevance_score"]) for r in v1["results"]]  # fmt: skip
    assert answer.meta.api_version.version == "2" and answer.meta.billed_units.search_units == 1
    if model == MAIN:  # a bi-encoder's scores are the cosines of the embedded texts
        vectors = embed(appliance, ["capital of France", *DOCS])
        expected = vectors[1:] @ vectors[0]
        np.testing.assert_allclose([r.relevance_score for r in answer.results],
                                   np.sort(expected)[::-1][:3], atol=1e-5)  # fmt: skip


def test_ollama_client_embeddings_is_the_embed_vector(appliance: Appliance) -> None:
    import ollama

    client = ollama.Client(host=appliance.url, timeout=30)
    one = client.embeddings(model=MAIN, prompt="the quick brown fox")
    np.testing.assert_array_equal(np.array(one.embedding, dtype=np.float32), embed(appliance, ["the quick brown fox"])[0])
    assert list(client.embeddings(model=MAIN, prompt="").embedding) == []


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
def test_quantised_openai_answers_are_the_float_answer_quantised(appliance: Appliance, precision: str) -> None:
    url = appliance.url + "/v1/embeddings"
    status, _, floats = post(url, {"model": MAIN, "input": DOCS, "dimensions": 20})
    assert status == 200
    status, _, ints = post(url, {"model": MAIN, "input": DOCS, "dimensions": 20, "encoding_format": precision})
    assert status == 200, ints
    expected = quantize(np.array([d["embedding"] for d in floats["data"]], dtype=np.float32), precision)  # type: ignore[arg-type]
    np.testing.assert_array_equal(np.array([d["embedding"] for d in ints["data"]]), expected)


def test_ollama_embeddings_puts_the_prompt_before_the_text(appliance: Appliance) -> None:
    def embedding(body: dict) -> list[float]:
        status, _, answer = post(appliance.url + "/api/embeddings", {"model": PROMPTED, **body})
        assert status == 200, answer
        return answer["embedding"]

    default = embedding({"prompt": "the quick brown fox"})
    assert default == embedding({"prompt": "query: the quick brown fox", "instruction": ""})  # "" = no prompt
    assert default == embedding({"prompt": "the quick brown fox", "input_type": "search_query"})
    assert embedding({"prompt": "the quick brown fox", "prompt_name": "document"}) == embedding(
        {"prompt": "passage: the quick brown fox", "instruction": ""})  # fmt: skip
    assert default != embedding({"prompt": "the quick brown fox", "instruction": ""})
