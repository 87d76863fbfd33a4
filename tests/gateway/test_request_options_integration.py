"""Request options (prompts, ``normalize``, ``truncation_direction``, ``raw_scores``) in the real
appliance (subprocess, one worker, tiny random float32 models) over real HTTP, each answer held to
an independent computation: sentence-transformers encoding with the same prompt, normalisation or
tokenizer cutting side, and its ``CrossEncoder`` for the scores. And the result cache and
coalescing with options: the same text asked for in different ways gets different, correct
vectors, cached or not, alone or concurrently.
"""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from harness import Appliance, get, post, serving

pytestmark = pytest.mark.slow

E5, DEFAULTED, RAW, CROSS = "tiny-e5", "tiny-defaulted", "tiny-raw", "tiny-ce"
E5_PROMPTS = {"query": "query: ", "passage": "passage: "}
TEXTS = ["the quick brown fox jumps over the lazy dog", "paris is the capital of france"]
# far past the tiny models' 128 tokens, with numbered words so each end is different
LONG = " ".join(f"word{i}" for i in range(300))
ATOL = 1e-5


@pytest.fixture(scope="module")
def e5_dir(tmp_path_factory: pytest.TempPathFactory, tiny_transformer: Path) -> Path:
    """The tiny transformer with E5-style prompts in its sentence-transformers config."""
    path = Path(shutil.copytree(tiny_transformer, tmp_path_factory.mktemp("e5") / "model"))
    (path / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": E5_PROMPTS, "default_prompt_name": None}))
    return path


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory, e5_dir: Path, tiny_transformer: Path,
              tiny_cross_encoder: Path) -> Iterator[Appliance]:  # fmt: skip
    models = [
        {"name": E5, "path": str(e5_dir), "main": True, "dtype": "float32"},
        # the same files, with the config's prompt overrides and a default prompt
        {"name": DEFAULTED, "path": str(e5_dir), "dtype": "float32", "prompts": {"code": "code: "},
         "default_prompt_name": "query"},
        # a model that does not normalise by default (the config overrides its Normalize module)
        {"name": RAW, "path": str(tiny_transformer), "dtype": "float32", "normalize": False},
        {"name": CROSS, "path": str(tiny_cross_encoder), "kind": "cross_encoder", "dtype": "float32"},
    ]
    with serving(tmp_path_factory.mktemp("options"), models, workers=1) as running:
        yield running


# ---- the independent computations ---------------------------------------------------------------
@pytest.fixture(scope="module")
def st(e5_dir: Path) -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(e5_dir), device="cpu")


@pytest.fixture(scope="module")
def st_unnormalised(st: Any) -> Any:
    """The same transformer and pooling, without the Normalize module."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(modules=[st[0], st[1]], device="cpu")


@pytest.fixture(scope="module")
def st_left(e5_dir: Path) -> Any:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(e5_dir), device="cpu")
    model.tokenizer.truncation_side = "left"
    return model


@pytest.fixture(scope="module")
def cross_encoder(tiny_cross_encoder: Path) -> Any:
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(tiny_cross_encoder), device="cpu")


# ---- HTTP helpers ------------------------------------------------------------------------------------
def openai(appliance: Appliance, **body: Any) -> tuple[np.ndarray, dict[str, str], dict[str, Any]]:
    status, headers, answer = post(appliance.url + "/v1/embeddings", {"model": E5, **body})
    assert status == 200, answer
    return np.array([d["embedding"] for d in answer["data"]], dtype=np.float32), headers, answer


def ollama(appliance: Appliance, **body: Any) -> tuple[np.ndarray, dict[str, str]]:
    status, headers, answer = post(appliance.url + "/api/embed", {"model": E5, **body})
    assert status == 200, answer
    return np.array(answer["embeddings"], dtype=np.float32), headers


def refused(appliance: Appliance, path: str, body: dict[str, Any]) -> dict[str, Any]:
    status, _, answer = post(appliance.url + path, body)
    assert status == 422 and answer["error"]["type"] == "invalid_field", answer
    return answer["error"]


def tokens_of(st: Any, texts: list[str]) -> int:
    return sum(len(ids) for ids in st.tokenizer(texts, truncation=True, max_length=128)["input_ids"])


# ---- the model listing -------------------------------------------------------------------------------
def test_models_list_their_prompts_and_normalisation(appliance: Appliance) -> None:
    status, _, listing = get(appliance.url + "/v1/models")
    by_name = {m["id"]: m for m in listing["data"]}
    assert status == 200
    assert (by_name[E5]["prompts"], by_name[E5]["default_prompt_name"], by_name[E5]["normalize"]) == (
        E5_PROMPTS, "", True)
    assert by_name[DEFAULTED]["prompts"] == {**E5_PROMPTS, "code": "code: "}
    assert by_name[DEFAULTED]["default_prompt_name"] == "query"
    assert by_name[RAW]["normalize"] is False and by_name[RAW]["prompts"] == {}


# ---- prompts -----------------------------------------------------------------------------------------
def test_prompts_match_sentence_transformers(appliance: Appliance, st: Any) -> None:
    named, _, answer = openai(appliance, input=TEXTS, prompt_name="query")
    np.testing.assert_allclose(named, st.encode(TEXTS, prompt_name="query"), atol=ATOL)
    assert answer["usage"]["prompt_tokens"] == tokens_of(st, [f"query: {t}" for t in TEXTS])  # billed with the prompt
    typed, _ = ollama(appliance, input=TEXTS, input_type="search_document")  # no "document": "passage" serves
    np.testing.assert_allclose(typed, st.encode(TEXTS, prompt_name="passage"), atol=ATOL)
    told, _, _ = openai(appliance, input=TEXTS, instruction="Represent this sentence: ")
    np.testing.assert_allclose(told, st.encode(TEXTS, prompt="Represent this sentence: "), atol=ATOL)
    plain, _, _ = openai(appliance, input=TEXTS)
    np.testing.assert_allclose(plain, st.encode(TEXTS), atol=ATOL)  # no default prompt: none


def test_a_default_prompt_applies_unless_a_request_names_another(appliance: Appliance, st: Any) -> None:
    defaulted, _, _ = openai(appliance, model=DEFAULTED, input=TEXTS)
    np.testing.assert_allclose(defaulted, st.encode(TEXTS, prompt="query: "), atol=ATOL)
    code, _, _ = openai(appliance, model=DEFAULTED, input=TEXTS, prompt_name="code")
    np.testing.assert_allclose(code, st.encode(TEXTS, prompt="code: "), atol=ATOL)
    bare, _, _ = openai(appliance, model=DEFAULTED, input=TEXTS, instruction="")
    np.testing.assert_allclose(bare, st.encode(TEXTS), atol=ATOL)


def test_bad_prompt_choices_are_422_naming_what_is_wrong(appliance: Appliance) -> None:
    assert "'nope' is not a prompt of model 'tiny-e5'" in refused(
        appliance, "/v1/embeddings", {"input": "x", "prompt_name": "nope"})["message"]
    assert "at most one of" in refused(
        appliance, "/api/embed", {"input": "x", "prompt_name": "query", "input_type": "query"})["message"]
    assert "token-id list" in refused(appliance, "/v1/embeddings", {"input": [[5, 6, 7]], "prompt_name": "query"})[
        "message"]
    assert "token-id list" in refused(appliance, "/v1/embeddings", {"model": DEFAULTED, "input": [[5, 6, 7]]})[
        "message"]  # the default prompt counts too
    refused(appliance, "/api/embed", {"input": "x", "input_type": "classification"})
    refused(appliance, "/api/embed", {"input": "x", "truncation_direction": "up"})
    refused(appliance, "/api/embed", {"input": "x", "normalize": "yes"})
    assert openai(appliance, input=[[5, 6, 7]])[0].shape == (1, 32)  # token ids without a prompt still work


# ---- normalisation -----------------------------------------------------------------------------------
def test_normalize_off_and_on_match_sentence_transformers(appliance: Appliance, st_unnormalised: Any) -> None:
    unnormalised = st_unnormalised.encode(TEXTS)
    off, _ = ollama(appliance, input=TEXTS, normalize=False)
    np.testing.assert_allclose(off, unnormalised, atol=ATOL)
    assert not np.allclose(np.linalg.norm(off, axis=1), 1.0, atol=1e-3)
    raw, _, _ = openai(appliance, model=RAW, input=TEXTS)  # this model's default: not normalised
    np.testing.assert_allclose(raw, unnormalised, atol=ATOL)
    on, _, _ = openai(appliance, model=RAW, input=TEXTS, normalize=True)
    np.testing.assert_allclose(on, st_unnormalised.encode(TEXTS, normalize_embeddings=True), atol=ATOL)


def test_dimensions_renormalise_only_a_normalised_answer(appliance: Appliance, st: Any, st_unnormalised: Any) -> None:
    cut, _, _ = openai(appliance, input=TEXTS, dimensions=8)
    full = st.encode(TEXTS)[:, :8]
    np.testing.assert_allclose(cut, full / np.linalg.norm(full, axis=1, keepdims=True), atol=ATOL)
    raw_cut, _ = ollama(appliance, input=TEXTS, dimensions=8, normalize=False)
    np.testing.assert_allclose(raw_cut, st_unnormalised.encode(TEXTS)[:, :8], atol=ATOL)


# ---- truncation direction ---------------------------------------------------------------------------
def test_left_truncation_matches_sentence_transformers_cutting_left(appliance: Appliance, st: Any,
                                                                   st_left: Any) -> None:  # fmt: skip
    texts = [LONG, TEXTS[0]]
    left, _, answer = openai(appliance, input=texts, truncation_direction="left")
    np.testing.assert_allclose(left, st_left.encode(texts), atol=ATOL)
    assert answer["usage"]["prompt_tokens"] == 128 + tokens_of(st, TEXTS[:1])
    tei_spelling, _ = ollama(appliance, input=texts, truncation_direction="Left")
    np.testing.assert_allclose(tei_spelling, left, atol=0)
    right, _ = ollama(appliance, input=texts, truncation_direction="Right")
    np.testing.assert_allclose(right, st.encode(texts), atol=ATOL)
    assert not np.allclose(left[0], right[0], atol=1e-3) and np.allclose(left[1], right[1], atol=ATOL)


def test_batch_and_stream_take_the_options(appliance: Appliance, st_left: Any, st_unnormalised: Any) -> None:
    body = {"model": E5, "inputs": [[LONG], [TEXTS[0], TEXTS[1]]], "truncation_direction": "left",
            "prompt_name": "passage"}  # fmt: skip
    status, _, answer = post(appliance.url + "/api/embed/batch", body)
    assert status == 200, answer
    flat = [v for group in answer["batches"] for v in group]
    expected = st_left.encode([LONG, *TEXTS], prompt_name="passage")
    np.testing.assert_allclose(np.array(flat, dtype=np.float32), expected, atol=ATOL)
    skipping = post(appliance.url + "/api/embed/batch", {**body, "on_error": "skip", "normalize": False})[2]
    unnormalised = st_unnormalised.encode([f"passage: {t}" for t in TEXTS])
    np.testing.assert_allclose(np.array(skipping["batches"][1], dtype=np.float32), unnormalised, atol=ATOL)
    events = read_stream(appliance, {"model": E5, "inputs": [TEXTS], "input_type": "query", "normalize": False})
    rows = {item["index"]: item["embedding"] for name, data in events if name == "result" for item in data}
    np.testing.assert_allclose(np.array([rows[0], rows[1]], dtype=np.float32),
                               st_unnormalised.encode([f"query: {t}" for t in TEXTS]), atol=ATOL)


def read_stream(appliance: Appliance, body: dict[str, Any]) -> list[tuple[str, Any]]:
    request = urllib.request.Request(appliance.url + "/api/embed/stream", data=json.dumps(body).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read().decode()
    events = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if "event" in fields:
            events.append((fields["event"], json.loads(fields["data"])))
    assert events[-1][0] == "complete" and events[-1][1]["failed"] == 0, events
    return events


def test_a_job_keeps_the_options_it_was_submitted_with(appliance: Appliance, st_left: Any,
                                                       st_unnormalised: Any) -> None:  # fmt: skip
    body = {"model": E5, "inputs": [LONG, *TEXTS], "prompt_name": "query", "truncation_direction": "left"}
    status, _, accepted = post(appliance.url + "/v1/jobs", body)
    assert status == 202, accepted
    results = job_results(appliance, accepted["id"])
    np.testing.assert_allclose(results, st_left.encode([LONG, *TEXTS], prompt_name="query"), atol=ATOL)
    status, _, accepted = post(appliance.url + "/v1/jobs", {"model": E5, "inputs": TEXTS, "normalize": False,
                                                            "dimensions": 8})  # fmt: skip
    assert status == 202, accepted
    np.testing.assert_allclose(job_results(appliance, accepted["id"]), st_unnormalised.encode(TEXTS)[:, :8], atol=ATOL)
    refused(appliance, "/v1/jobs", {"model": E5, "inputs": TEXTS, "prompt_name": "nope"})


def job_results(appliance: Appliance, job_id: str, timeout: float = 60.0) -> np.ndarray:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = get(f"{appliance.url}/v1/jobs/{job_id}")[2]
        if job["status"] == "SUCCESS":
            items = get(f"{appliance.url}/v1/jobs/{job_id}/results")[2]["data"]
            return np.array([item["embedding"] for item in items], dtype=np.float32)
        assert job["status"] in ("PENDING", "PROCESSING"), job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not finished within {timeout}s")


# ---- rerank --------------------------------------------------------------------------------------------
def scores_by_index(results: list[dict[str, Any]], field: str = "score") -> np.ndarray:
    return np.array([r[field] for r in sorted(results, key=lambda r: r["index"])], dtype=np.float32)


def test_raw_scores_are_the_cross_encoders_logits(appliance: Appliance, cross_encoder: Any) -> None:
    import torch

    query, documents = "capital of france", ["paris is the capital of france", "dogs", "a river"]
    pairs = [(query, d) for d in documents]
    body = {"model": CROSS, "query": query, "documents": documents}
    status, _, probabilities = post(appliance.url + "/api/rerank", body)
    assert status == 200, probabilities
    np.testing.assert_allclose(scores_by_index(probabilities["results"]), cross_encoder.predict(pairs), atol=ATOL)
    logits = post(appliance.url + "/api/rerank", {**body, "raw_scores": True})[2]
    expected = cross_encoder.predict(pairs, activation_fn=torch.nn.Identity())
    np.testing.assert_allclose(scores_by_index(logits["results"]), expected, atol=ATOL)
    cosines = post(appliance.url + "/api/rerank", {**body, "model": E5})[2]["results"]
    same = post(appliance.url + "/api/rerank", {**body, "model": E5, "raw_scores": True})[2]["results"]
    assert same == cosines  # a bi-encoder's cosine: raw_scores changes nothing


def test_rerank_cuts_a_long_pair_from_the_side_asked(appliance: Appliance, cross_encoder: Any,
                                                     tiny_cross_encoder: Path) -> None:  # fmt: skip
    import torch
    from sentence_transformers import CrossEncoder

    left_model = CrossEncoder(str(tiny_cross_encoder), device="cpu")
    left_model.tokenizer.truncation_side = "left"
    query, documents = "capital of france", [LONG, "paris"]
    pairs = [(query, d) for d in documents]
    body = {"model": CROSS, "query": query, "documents": documents, "truncation_direction": "left"}
    status, _, answer = post(appliance.url + "/v1/rerank", body)
    assert status == 200, answer
    np.testing.assert_allclose(scores_by_index(answer["results"], "relevance_score"), left_model.predict(pairs),
                               atol=ATOL)  # fmt: skip
    # the tiny random cross-encoder's logits differ by ~1e-5 between the two cuts: compared raw and closely
    identity = torch.nn.Identity()
    for side, model in (("left", left_model), ("right", cross_encoder)):
        raw = post(appliance.url + "/api/rerank", {**body, "truncation_direction": side, "raw_scores": True})[2]
        np.testing.assert_allclose(scores_by_index(raw["results"]), model.predict(pairs, activation_fn=identity),
                                   atol=1e-6, err_msg=side)  # fmt: skip
    cuts = [model.predict(pairs[:1], activation_fn=identity)[0] for model in (left_model, cross_encoder)]
    assert abs(cuts[0] - cuts[1]) > 5e-6  # so the answers above told the two sides apart


# ---- the result cache and coalescing -----------------------------------------------------------------
def test_a_cached_vector_is_never_served_for_other_options(appliance: Appliance, st: Any, st_left: Any,
                                                          st_unnormalised: Any) -> None:  # fmt: skip
    text = f"cache me {LONG}"
    ways: list[tuple[dict[str, Any], np.ndarray]] = [
        ({}, st.encode([text])),
        ({"prompt_name": "query"}, st.encode([text], prompt_name="query")),
        ({"input_type": "document"}, st.encode([text], prompt_name="passage")),
        ({"normalize": False}, st_unnormalised.encode([text])),
        ({"truncation_direction": "left"}, st_left.encode([text])),
        ({"truncation_direction": "left", "normalize": False}, left_unnormalised(st_left, text)),
    ]
    for options, expected in ways:  # each is a miss, though the text is cached by then
        vectors, headers = ollama(appliance, input=[text], **options)
        assert headers["X-Cache"] == "miss", options
        np.testing.assert_allclose(vectors, expected, atol=ATOL, err_msg=str(options))
    for options, expected in ways:  # and each has its own entry now
        vectors, headers = ollama(appliance, input=[text], **options)
        assert headers["X-Cache"] == "hit", options
        np.testing.assert_allclose(vectors, expected, atol=ATOL, err_msg=str(options))
    explicit, headers = ollama(appliance, input=[text], normalize=True)  # the model's default, said out loud
    assert headers["X-Cache"] == "hit"
    np.testing.assert_allclose(explicit, st.encode([text]), atol=ATOL)


def left_unnormalised(st_left: Any, text: str) -> np.ndarray:
    """Cut from the left, not normalised: the left-cutting model's Normalize module left out."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(modules=[st_left[0], st_left[1]], device="cpu").encode([text])


def test_concurrent_identical_texts_with_different_options_are_not_merged(appliance: Appliance, st: Any,
                                                                         st_left: Any,
                                                                         st_unnormalised: Any) -> None:  # fmt: skip
    text = f"coalesce me {LONG}"
    ways: list[tuple[dict[str, Any], np.ndarray]] = [
        ({}, st.encode([text])),
        ({"prompt_name": "query"}, st.encode([text], prompt_name="query")),
        ({"normalize": False}, st_unnormalised.encode([text])),
        ({"truncation_direction": "left"}, st_left.encode([text])),
    ]
    requests = [ways[i % len(ways)] for i in range(4 * len(ways))]  # each way four times, interleaved
    with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(lambda way: ollama(appliance, input=[text], **way[0])[0], requests))
    for (options, expected), vectors in zip(requests, answers):
        np.testing.assert_allclose(vectors, expected, atol=ATOL, err_msg=str(options))
