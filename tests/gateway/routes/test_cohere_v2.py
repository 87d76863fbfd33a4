"""``gateway/routes/cohere_v2.py``: Cohere's ``POST /v2/rerank`` over a real server against the
in-test backend (``fake_backend.FakeBackend``): the v2 answer's shape, order and ``top_n``,
``max_tokens_per_doc`` at and below the model's max length, the limits it shares with the other
rerank routes, and the real ``cohere`` client (``ClientV2.rerank``), unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from http_checks import MAX_CHARS, MAX_INPUTS, error_of

DOCS = ["red apple", "green pear", "blue sky", "yellow banana", "grey stone"]


def expected_order(backend: Any, query: str, docs: list[str]) -> list[int]:
    scores = backend.vectors_for("mini", docs) @ backend.vectors_for("mini", [query])[0]
    return list(np.argsort(-scores, kind="stable"))


def test_v2_answer_shape_order_and_top_n(server, backend):
    r = server.post("/v2/rerank", {"model": "mini", "query": "fruit", "documents": DOCS, "top_n": 3},
                    headers={"X-Request-ID": "v2-1"})  # fmt: skip
    doc = r.json()
    assert r.status == 200, r.body
    assert set(doc) == {"id", "results", "meta"} and doc["id"] == "v2-1"
    assert [x["index"] for x in doc["results"]] == expected_order(backend, "fruit", DOCS)[:3]
    assert all(set(x) == {"index", "relevance_score"} for x in doc["results"])
    scores = [x["relevance_score"] for x in doc["results"]]
    assert scores == sorted(scores, reverse=True)
    assert doc["meta"] == {"api_version": {"version": "2"}, "billed_units": {"search_units": 1},
                           "tokens": {"input_tokens": sum(len("fruit") + len(t) + 3 for t in DOCS),
                                      "output_tokens": 0}}  # fmt: skip
    assert [(c.kind, c.model, c.inputs, c.truncate) for c in backend.calls] == [("rerank", "mini", ["fruit", *DOCS], True)]
    every = server.post("/v2/rerank", {"query": "fruit", "documents": DOCS}).json()["results"]
    assert [x["index"] for x in every] == expected_order(backend, "fruit", DOCS)


def test_search_units_count_a_hundred_documents_each():
    from gateway.routes.cohere_v2 import search_units

    assert [search_units(n) for n in (1, 100, 101, 250)] == [1, 1, 2, 3]


def test_max_tokens_per_doc_at_or_above_the_model_length_is_served(server, backend):
    for limit in (128, 4096):  # the fake "mini" takes 128 tokens
        r = server.post("/v2/rerank", {"query": "q", "documents": ["a"], "max_tokens_per_doc": limit})
        assert r.status == 200, r.body


@pytest.mark.parametrize("limit, kind", [(127, "invalid_field"), (0, "invalid_field"), ("64", "invalid_field")])
def test_max_tokens_per_doc_below_the_model_length_is_refused(server, backend, limit, kind):
    message = error_of(server.post("/v2/rerank", {"query": "q", "documents": ["a"], "max_tokens_per_doc": limit}),
                       422, kind)  # fmt: skip
    assert "max_tokens_per_doc" in message
    assert backend.calls == []


@pytest.mark.parametrize(
    "body, status, kind",
    [
        ({"query": "", "documents": ["a"]}, 400, "empty_input"),
        ({"query": "q", "documents": []}, 400, "empty_input"),
        ({"query": "q", "documents": ["d"] * (MAX_INPUTS + 1)}, 422, "too_many_inputs"),
        ({"query": "q", "documents": ["d", "x" * (MAX_CHARS + 1)]}, 422, "input_too_long"),
        ({"query": "q", "documents": [{"text": "v1 form"}]}, 422, "invalid_field"),  # v2 takes strings only
        ({"query": "q", "documents": ["a"], "top_n": 0}, 422, "invalid_field"),
        ({"query": "q", "documents": ["a"], "model": "nope"}, 404, "model_not_found"),
        ({"documents": ["a"]}, 422, "invalid_field"),
    ],
)
def test_v2_refusals(server, backend, body, status, kind):
    error_of(server.post("/v2/rerank", body), status, kind)
    assert backend.calls == []


def test_v2_cross_encoder(server, backend):
    assert server.post("/v2/rerank", {"model": "cross", "query": "q", "documents": ["a", "b"]}).status == 200
    assert backend.calls[-1].model == "cross"


# ---- the real client, unchanged -------------------------------------------------------------
def test_cohere_client_v2_rerank(server, backend):
    import cohere

    client = cohere.ClientV2(base_url=server.url, api_key="unused", timeout=10)
    answer = client.rerank(model="mini", query="fruit", documents=DOCS, top_n=2, max_tokens_per_doc=4096)
    assert [r.index for r in answer.results] == expected_order(backend, "fruit", DOCS)[:2]
    assert answer.meta is not None and answer.meta.api_version is not None
    assert answer.meta.api_version.version == "2" and answer.meta.billed_units.search_units == 1
    assert backend.calls[-1].inputs == ["fruit", *DOCS]
