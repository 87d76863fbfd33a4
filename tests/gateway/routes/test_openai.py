"""``gateway/routes/openai.py``: OpenAI's ``POST /v1/embeddings`` over a real server against the
in-test backend (``fake_backend.FakeBackend``): the float and base64 answers, every input form
(text, texts, token ids), which mixes are refused, and the real ``openai`` SDK, unchanged. The
model list ``/v1/models`` is in ``test_system.py``; ``dimensions`` on both embed routes in
``tests/gateway/test_app.py``.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import openai
import pytest

from gateway import errors
from http_checks import error_of, f32, vectors_of


def test_openai_float_shape(server, backend):
    r = server.post("/v1/embeddings", {"model": "mini", "input": ["alpha", "beta"], "user": "u1"})
    doc = r.json()
    assert r.status == 200
    assert set(doc) == {"object", "data", "model", "usage"}
    assert (doc["object"], doc["model"]) == ("list", "mini")
    assert [(d["object"], d["index"]) for d in doc["data"]] == [("embedding", 0), ("embedding", 1)]
    np.testing.assert_array_equal(vectors_of("/v1/embeddings", doc), backend.vectors_for("mini", ["alpha", "beta"]))
    assert doc["usage"] == {"prompt_tokens": 13, "total_tokens": 13}


def test_openai_base64_is_raw_little_endian_float32(server, backend):
    r = server.post("/v1/embeddings", {"model": "mini", "input": ["alpha", "beta"], "encoding_format": "base64"})
    rows = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in r.json()["data"]]
    np.testing.assert_array_equal(np.stack(rows), backend.vectors_for("mini", ["alpha", "beta"]))


@pytest.mark.parametrize(
    "given, sent",
    [
        ([101, 2023, 102], [[101, 2023, 102]]),  # one token-id list is one input
        ([[101, 102], [7]], [[101, 102], [7]]),
        ("text", ["text"]),
    ],
)
def test_openai_input_forms(server, backend, given, sent):
    r = server.post("/v1/embeddings", {"model": "mini", "input": given})
    assert r.status == 200
    assert len(r.json()["data"]) == len(sent)
    assert backend.calls[-1].inputs == sent


@pytest.mark.parametrize(
    "given, path",
    [(["a", 1], "$.input"), ([[1], "a"], "$.input"), ([-1], "$.input[0]"), ([[1, "x"]], "$.input[0][1]")],
)
def test_openai_mixed_or_invalid_inputs_422(server, backend, given, path):
    r = server.post("/v1/embeddings", {"model": "mini", "input": given})
    assert path in error_of(r, 422, "invalid_field")
    assert backend.calls == []


# ---- the real SDK, unchanged ----------------------------------------------------------------
def openai_client(server: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=10)


def test_openai_sdk_default_is_base64(server, backend):
    raw = openai_client(server).embeddings.with_raw_response.create(model="mini", input=["alpha", "beta"])
    assert json.loads(raw.http_request.content)["encoding_format"] == "base64"
    assert isinstance(json.loads(raw.content)["data"][0]["embedding"], str)
    result = raw.parse()
    np.testing.assert_array_equal(f32([d.embedding for d in result.data]), backend.vectors_for("mini", ["alpha", "beta"]))
    assert (result.usage.prompt_tokens, result.model) == (13, "mini")


def test_openai_sdk_float_and_dimensions(server, backend):
    client = openai_client(server)
    result = client.embeddings.create(model="mini", input="alpha", encoding_format="float")
    np.testing.assert_array_equal(f32([result.data[0].embedding]), backend.vectors_for("mini", ["alpha"]))
    assert len(client.embeddings.create(model="mini", input="alpha", dimensions=4).data[0].embedding) == 4


def test_openai_sdk_sees_typed_errors(server, backend):
    with pytest.raises(openai.NotFoundError):
        openai_client(server).embeddings.create(model="nope", input="alpha")
    backend.fail = errors.QueueFull("full", retry_after=1)
    with pytest.raises(openai.RateLimitError):
        openai_client(server).embeddings.create(model="mini", input="alpha")
