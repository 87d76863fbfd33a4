"""The TEI dialect on the real appliance (subprocess, one worker, tiny random models at float32)
over real HTTP, every number checked against an independent computation: sentence-transformers
for vectors and scores, the ``tokenizers`` library for ``/tokenize`` and ``/decode``; and a real
TEI client from PyPI, ``huggingface_hub``'s ``InferenceClient``, posting where it posts.

The main model has no Normalize module and two sentence-transformers prompts, so that TEI's
``normalize`` (default on) and ``prompt_name`` each change the answer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

import tiny_models
from harness import Appliance, get, post, serving

pytestmark = pytest.mark.slow

MAIN, CROSS = "tiny", "tiny-ce"
PROMPTS = {"query": "query: ", "document": "passage: "}
TEXTS = ["the quick brown fox", "Paris is the capital of France", "a dog"]
LONG = " ".join(["water"] * 200)  # 202 tokens with [CLS] and [SEP]: over the model's 128
MAX_LENGTH = 128


@pytest.fixture(scope="module")
def main_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tiny_models.make_tiny_transformer(tmp_path_factory.mktemp("tei-main"), normalize=False)
    (path / "config_sentence_transformers.json").write_text(json.dumps({"prompts": PROMPTS}))
    return path


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory, main_model: Path,
              tiny_cross_encoder: Path) -> Iterator[Appliance]:  # fmt: skip
    models = [
        {"name": MAIN, "path": str(main_model), "main": True, "dtype": "float32"},
        {"name": CROSS, "path": str(tiny_cross_encoder), "kind": "cross_encoder", "dtype": "float32"},
    ]
    limits = {"APPLIANCE_MAX_INPUTS": "64", "APPLIANCE_MAX_INPUT_CHARS": "5000"}
    with serving(tmp_path_factory.mktemp("tei"), models, workers=1, env=limits) as running:
        yield running


@pytest.fixture(scope="module")
def reference(main_model: Path) -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(main_model), device="cpu")


def embed(appliance: Appliance, body: dict[str, Any], route: str = "/embed") -> np.ndarray:
    status, _, answer = post(appliance.url + route, body)
    assert status == 200, answer
    return np.asarray(answer, dtype=np.float32)


def tei_error(reply: tuple[int, dict[str, str], Any], status: int, kind: str) -> None:
    assert (reply[0], reply[2]["error_type"]) == (status, kind), reply
    assert set(reply[2]) == {"error", "error_type"}


def test_embed_is_sentence_transformers(appliance: Appliance, reference: Any) -> None:
    normalized = reference.encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(embed(appliance, {"inputs": TEXTS}), normalized, atol=1e-5)
    np.testing.assert_allclose(embed(appliance, {"inputs": TEXTS[1]}, "/"), normalized[1:2], atol=1e-5)
    raw = reference.encode(TEXTS, normalize_embeddings=False)
    np.testing.assert_allclose(embed(appliance, {"inputs": TEXTS, "normalize": False}), raw, atol=1e-5)


def test_dimensions(appliance: Appliance, reference: Any) -> None:
    cut = reference.encode(TEXTS, normalize_embeddings=True)[:, :8]
    np.testing.assert_allclose(embed(appliance, {"inputs": TEXTS, "dimensions": 8}),
                               cut / np.linalg.norm(cut, axis=1, keepdims=True), atol=1e-5)  # fmt: skip
    raw = reference.encode(TEXTS, normalize_embeddings=False)[:, :8]
    np.testing.assert_allclose(embed(appliance, {"inputs": TEXTS, "dimensions": 8, "normalize": False}), raw,
                               atol=1e-5)  # fmt: skip


def test_prompt_name(appliance: Appliance, reference: Any) -> None:
    expected = reference.encode(TEXTS, prompt_name="query", normalize_embeddings=True)
    assert not np.allclose(expected, reference.encode(TEXTS, normalize_embeddings=True), atol=1e-3)  # it tells
    np.testing.assert_allclose(embed(appliance, {"inputs": TEXTS, "prompt_name": "query"}), expected, atol=1e-5)
    tei_error(post(appliance.url + "/embed", {"inputs": TEXTS, "prompt_name": "nope"}), 422, "Validation")


def test_truncation(appliance: Appliance, reference: Any) -> None:
    tei_error(post(appliance.url + "/embed", {"inputs": [LONG]}), 413, "Validation")  # TEI: refused unless asked
    right = reference.encode([LONG], normalize_embeddings=True)  # sentence-transformers cuts on the right
    np.testing.assert_allclose(embed(appliance, {"inputs": [LONG], "truncate": True}), right, atol=1e-5)
    tail = LONG + " dog fox " * 20
    reference.tokenizer.truncation_side = "left"
    try:
        left = reference.encode([tail], normalize_embeddings=True)
    finally:
        reference.tokenizer.truncation_side = "right"
    assert not np.allclose(left, reference.encode([tail], normalize_embeddings=True), atol=1e-3)  # it tells
    for spelling in ("Left", "left"):
        got = embed(appliance, {"inputs": [tail], "truncate": True, "truncation_direction": spelling})
        np.testing.assert_allclose(got, left, atol=1e-5)


def test_token_ids_are_their_text(appliance: Appliance, main_model: Path) -> None:
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(main_model / "tokenizer.json")).encode(TEXTS[0]).ids
    np.testing.assert_allclose(embed(appliance, {"inputs": ids}), embed(appliance, {"inputs": TEXTS[0]}), atol=1e-6)
    both = embed(appliance, {"inputs": [TEXTS[1], ids]})
    np.testing.assert_allclose(both[1], embed(appliance, {"inputs": TEXTS[0]})[0], atol=1e-6)


def test_rerank_is_the_cross_encoder(appliance: Appliance, tiny_cross_encoder: Path) -> None:
    import torch
    from sentence_transformers import CrossEncoder

    query, texts = "capital of France", ["Paris is in France", "Bananas are yellow", "the capital city"]
    model = CrossEncoder(str(tiny_cross_encoder), device="cpu")
    pairs = [(query, t) for t in texts]
    status, _, ranks = post(appliance.url + "/rerank", {"query": query, "texts": texts, "return_text": True})
    assert status == 200, ranks
    expected = model.predict(pairs)  # one label: sigmoid of the logit
    assert [r["index"] for r in ranks] == list(np.argsort(-expected, kind="stable"))
    np.testing.assert_allclose([r["score"] for r in ranks], np.sort(expected)[::-1], atol=1e-5)
    assert [r["text"] for r in ranks] == [texts[r["index"]] for r in ranks]
    raw = post(appliance.url + "/rerank", {"query": query, "texts": texts, "raw_scores": True})[2]
    logits = model.predict(pairs, activation_fn=torch.nn.Identity())
    np.testing.assert_allclose([r["score"] for r in sorted(raw, key=lambda r: r["index"])], logits, atol=1e-5)


def test_rerank_with_the_main_model_is_cosine(appliance: Appliance, reference: Any) -> None:
    query, texts = "capital of France", ["Paris is in France", "Bananas are yellow"]
    status, _, ranks = post(appliance.url + "/rerank", {"query": query, "texts": texts, "model": MAIN})
    assert status == 200, ranks
    vectors = reference.encode([query, *texts], normalize_embeddings=True)
    cosines = vectors[1:] @ vectors[0]
    np.testing.assert_allclose([r["score"] for r in sorted(ranks, key=lambda r: r["index"])], cosines, atol=1e-5)


def test_tokenize_and_decode_are_the_tokenizers(appliance: Appliance, main_model: Path) -> None:
    from tokenizers import Tokenizer

    library = Tokenizer.from_file(str(main_model / "tokenizer.json"))
    status, _, tokens = post(appliance.url + "/tokenize", {"inputs": TEXTS})
    assert status == 200, tokens
    for text, row in zip(TEXTS, tokens):
        expected = library.encode(text)
        assert [t["id"] for t in row] == expected.ids
        assert [t["special"] for t in row] == [bool(m) for m in expected.special_tokens_mask]
        assert [t["text"] for t in row] == [name if special else text[a:b] for name, special, (a, b)
                                            in zip(expected.tokens, expected.special_tokens_mask, expected.offsets)]
        assert all((t["start"] is None) == t["special"] for t in row)
    bare = post(appliance.url + "/tokenize", {"inputs": "a dog", "add_special_tokens": False})[2]
    assert [t["id"] for t in bare[0]] == library.encode("a dog", add_special_tokens=False).ids
    prompted = post(appliance.url + "/tokenize", {"inputs": "a dog", "prompt_name": "query"})[2]
    assert [t["id"] for t in prompted[0]] == library.encode("query: a dog").ids
    ids = [library.encode(t).ids for t in TEXTS]
    assert post(appliance.url + "/decode", {"ids": ids})[2] == [library.decode(i) for i in ids]
    assert post(appliance.url + "/decode", {"ids": ids[0], "skip_special_tokens": False})[2] == [
        library.decode(ids[0], skip_special_tokens=False)]
    tei_error(post(appliance.url + "/decode", {"ids": [library.get_vocab_size() + 5]}), 422, "Validation")


def test_info(appliance: Appliance) -> None:
    status, _, info = get(appliance.url + "/info")
    assert status == 200, info
    assert (info["model_id"], info["model_dtype"], info["max_input_length"]) == (MAIN, "float32", MAX_LENGTH)
    assert info["model_type"] == {"embedding": {"pooling": "mean"}}
    assert info["max_client_batch_size"] == 64 and info["auto_truncate"] is False
    assert info["tokenization_workers"] == 1 and info["version"]


def test_huggingface_hub_inference_client(appliance: Appliance, reference: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import InferenceClient, constants

    # the suite is offline (HF_HUB_OFFLINE), which the client applies to every URL; with a URL as its
    # model it reaches only the appliance
    monkeypatch.setattr(constants, "is_offline_mode", lambda: False)
    client = InferenceClient(model=appliance.url, timeout=30)
    vectors = client.feature_extraction(TEXTS[1])
    np.testing.assert_allclose(vectors, reference.encode([TEXTS[1]], normalize_embeddings=True), atol=1e-5)
    raw = client.feature_extraction(TEXTS[1], normalize=False, prompt_name="query")
    expected = reference.encode([TEXTS[1]], prompt_name="query", normalize_embeddings=False)
    np.testing.assert_allclose(raw, expected, atol=1e-5)
