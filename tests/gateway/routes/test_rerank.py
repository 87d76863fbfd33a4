"""``gateway/routes/rerank.py``: ``POST /api/rerank`` and Cohere's ``POST /v1/rerank`` over a real
server against the in-test backend (``fake_backend.FakeBackend``): results sorted by score and cut
by ``top_k``/``top_n``, both answer shapes, the limits on query and documents, and reranking with
a cross-encoder.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from http_checks import MAX_CHARS, MAX_INPUTS, error_of


def expected_order(backend: Any, query: str, docs: list[str]) -> list[int]:
    scores = backend.vectors_for("mini", docs) @ backend.vectors_for("mini", [query])[0]
    return list(np.argsort(-scores, kind="stable"))


def test_api_rerank_sorted_by_score_with_top_k(server, backend):
    docs = [f"document {i}" for i in range(7)]
    r = server.post("/api/rerank", {"model": "mini", "query": "which one?", "documents": docs, "top_k": 4})
    doc = r.json()
    assert r.status == 200 and doc["model"] == "mini"
    assert [x["index"] for x in doc["results"]] == expected_order(backend, "which one?", docs)[:4]
    assert [x["document"] for x in doc["results"]] == [docs[x["index"]] for x in doc["results"]]
    scores = [x["score"] for x in doc["results"]]
    assert scores == sorted(scores, reverse=True)
    all_docs = server.post("/api/rerank", {"query": "which one?", "documents": docs}).json()["results"]
    assert len(all_docs) == 7


def test_cohere_rerank_shape(server, backend):
    docs: list[Any] = ["red apple", {"text": "green pear", "title": "ignored"}, "blue sky"]
    texts = ["red apple", "green pear", "blue sky"]
    r = server.post(
        "/v1/rerank", {"model": "mini", "query": "fruit", "documents": docs, "top_n": 2}, headers={"X-Request-ID": "rr-1"}
    )
    doc = r.json()
    assert r.status == 200 and set(doc) == {"id", "results", "meta"}
    assert doc["id"] == "rr-1"
    assert [x["index"] for x in doc["results"]] == expected_order(backend, "fruit", texts)[:2]
    assert all(set(x) == {"index", "relevance_score"} for x in doc["results"])
    assert doc["meta"]["tokens"]["input_tokens"] == sum(len("fruit") + len(t) + 3 for t in texts)
    assert backend.calls[-1].inputs == ["fruit", *texts]
    with_docs = server.post("/v1/rerank", {"query": "fruit", "documents": docs, "return_documents": True}).json()
    assert [x["document"] for x in with_docs["results"]] == [{"text": texts[x["index"]]} for x in with_docs["results"]]


@pytest.mark.parametrize("route", ["/api/rerank", "/v1/rerank"])
@pytest.mark.parametrize(
    "query, documents, status, kind",
    [
        ("", ["a"], 400, "empty_input"),
        ("q", [], 400, "empty_input"),
        ("q", ["", ""], 400, "empty_input"),
        ("q", ["d"] * (MAX_INPUTS + 1), 422, "too_many_inputs"),
        ("q", ["d", "x" * (MAX_CHARS + 1)], 422, "input_too_long"),
        ("x" * (MAX_CHARS + 1), ["d"], 422, "input_too_long"),
    ],
)
def test_rerank_limits(server, backend, route, query, documents, status, kind):
    error_of(server.post(route, {"query": query, "documents": documents}), status, kind)
    assert backend.calls == []


def test_cross_encoder_reranks(server, backend):
    assert server.post("/v1/rerank", {"model": "cross", "query": "q", "documents": ["a"]}).status == 200
    assert backend.calls[-1].model == "cross"
