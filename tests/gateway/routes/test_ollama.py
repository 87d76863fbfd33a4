"""``gateway/routes/ollama.py``: Ollama's ``POST /api/embed`` over a real server against the in-test
backend (``fake_backend.FakeBackend``): the answer's shape, the single-string and ``truncate`` forms,
vectors printed as float32, the main model when none is named, and the real ``ollama`` client,
unchanged. The model list ``/api/tags`` is in ``test_system.py``.
"""

from __future__ import annotations

import re

import numpy as np
import ollama
import pytest

from http_checks import f32

NUMBER = re.compile(rb"-?\d+\.\d+(?:e[-+]?\d+)?|-?\d+e[-+]?\d+")


def test_ollama_embed_returns_one_vector_per_input_in_order(server, backend):
    texts = ["alpha", "beta", "alpha"]
    r = server.post("/api/embed", {"model": "mini", "input": texts})
    doc = r.json()
    assert r.status == 200
    assert set(doc) == {"model", "embeddings", "total_duration", "load_duration", "prompt_eval_count"}
    assert doc["model"] == "mini"
    np.testing.assert_array_equal(f32(doc["embeddings"]), backend.vectors_for("mini", texts))
    assert doc["prompt_eval_count"] == sum(len(t) + 2 for t in texts)
    assert isinstance(doc["total_duration"], int) and 0 < doc["total_duration"] < 10**10
    assert doc["load_duration"] == 0
    assert [c.inputs for c in backend.calls] == [texts]


def test_ollama_single_string_and_truncate_flag(server, backend):
    r = server.post("/api/embed", {"model": "mini", "input": "alpha"})
    np.testing.assert_array_equal(f32(r.json()["embeddings"]), backend.vectors_for("mini", ["alpha"]))
    server.post("/api/embed", {"model": "mini", "input": "alpha", "truncate": False})
    assert [(c.inputs, c.truncate) for c in backend.calls] == [(["alpha"], True), (["alpha"], False)]


def test_vectors_print_as_float32_not_double(server, backend):
    body = server.post("/api/embed", {"model": "mini", "input": ["alpha", "beta"]}).body
    numbers = NUMBER.findall(body)
    expected = backend.vectors_for("mini", ["alpha", "beta"]).ravel()
    assert len(numbers) == expected.size
    # str() of a numpy float32 is its shortest round-tripping decimal; the double repr differs
    assert [float(n) for n in numbers] == [float(str(x)) for x in expected]


def test_model_left_out_is_the_main_model_and_latest_tag_is_accepted(server, backend):
    assert server.post("/api/embed", {"input": "a"}).json()["model"] == "mini"
    assert server.post("/api/embed", {"model": "static:latest", "input": "a"}).json()["model"] == "static"
    assert [c.model for c in backend.calls] == ["mini", "static"]
    assert len(server.post("/api/embed", {"model": "static", "input": "a"}).json()["embeddings"][0]) == 6


# ---- the real client, unchanged -------------------------------------------------------------
def test_ollama_client_embed_and_list(server, backend):
    client = ollama.Client(host=server.url)
    result = client.embed(model="mini", input=["alpha", "beta"])
    np.testing.assert_array_equal(f32(result.embeddings), backend.vectors_for("mini", ["alpha", "beta"]))
    assert (result.model, result.prompt_eval_count) == ("mini", 13)
    assert len(client.embed(model="mini", input="alpha", dimensions=5).embeddings[0]) == 5
    assert [m.model for m in client.list().models] == ["mini", "static", "cross"]
    with pytest.raises(ollama.ResponseError) as raised:
        client.embed(model="nope", input="alpha")
    assert raised.value.status_code == 404
