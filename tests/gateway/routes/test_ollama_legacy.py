"""``gateway/routes/ollama_legacy.py``: Ollama's older ``POST /api/embeddings`` over a real server
against the in-test backend (``fake_backend.FakeBackend``): one vector for one ``prompt``, the
empty prompt's empty embedding (nothing computed), the refusals, and the real ``ollama`` client's
``embeddings()``, unchanged.
"""

from __future__ import annotations

import numpy as np
import ollama
import pytest

from http_checks import MAX_CHARS, error_of, f32


def test_one_prompt_one_vector(server, backend):
    r = server.post("/api/embeddings", {"model": "mini", "prompt": "alpha", "options": {"temperature": 0},
                                        "keep_alive": "5m"})  # fmt: skip
    assert r.status == 200, r.body
    assert set(r.json()) == {"embedding"}
    np.testing.assert_array_equal(f32(r.json()["embedding"]), backend.vectors_for("mini", ["alpha"])[0])
    assert r.headers["X-Worker-ID"] == "0" and r.headers["X-Cache"] == "miss"
    assert [(c.kind, c.model, c.inputs, c.truncate) for c in backend.calls] == [("embed", "mini", ["alpha"], True)]


def test_model_left_out_is_the_main_model_and_truncate_is_passed(server, backend):
    assert len(server.post("/api/embeddings", {"prompt": "a"}).json()["embedding"]) == 8
    assert len(server.post("/api/embeddings", {"model": "static:latest", "prompt": "a", "truncate": False})
               .json()["embedding"]) == 6  # fmt: skip
    assert [(c.model, c.truncate) for c in backend.calls] == [("mini", True), ("static", False)]


@pytest.mark.parametrize("body", [{"model": "mini", "prompt": ""}, {"model": "mini"}])
def test_an_empty_prompt_answers_an_empty_embedding(server, backend, body):
    r = server.post("/api/embeddings", body)
    assert (r.status, r.json()) == (200, {"embedding": []})
    assert backend.calls == []


@pytest.mark.parametrize(
    "body, status, kind",
    [
        ({"model": "nope", "prompt": ""}, 404, "model_not_found"),  # the model is checked first, as Ollama does
        ({"model": "cross", "prompt": "a"}, 422, "unsupported"),
        ({"prompt": "x" * (MAX_CHARS + 1)}, 422, "input_too_long"),
        ({"prompt": ["a", "b"]}, 422, "invalid_field"),
        ({"prompt": "a", "options": {"nested": {"a": 1}}}, 422, "invalid_field"),
    ],
)
def test_refusals(server, backend, body, status, kind):
    error_of(server.post("/api/embeddings", body), status, kind)
    assert backend.calls == []


def test_ollama_client_embeddings(server, backend):
    client = ollama.Client(host=server.url)
    result = client.embeddings(model="mini", prompt="alpha beta")
    np.testing.assert_array_equal(f32(result.embedding), backend.vectors_for("mini", ["alpha beta"])[0])
    assert list(client.embeddings(model="mini", prompt="").embedding) == []


# ---- the request options (gateway/prompts.py, normalize, truncation direction) ----------------
def test_options_reach_the_backend(server, backend):
    r = server.post("/api/embeddings", {"prompt": "alpha", "instruction": "Represent: ", "normalize": False,
                                        "truncation_direction": "Left"})  # fmt: skip
    assert r.status == 200, r.body
    assert backend.calls[-1].inputs == ["Represent: alpha"]
    assert backend.options[-1] == {"normalize": False, "truncation_direction": "left"}
    server.post("/api/embeddings", {"prompt": "alpha"})
    assert backend.calls[-1].inputs == ["alpha"]  # the fake models have no default prompt
    assert backend.options[-1] == {"normalize": None, "truncation_direction": "right"}


@pytest.mark.parametrize("prompt", ["alpha", ""])  # a bad option is refused even with nothing to embed
@pytest.mark.parametrize("options, words", [
    ({"prompt_name": "query"}, "is not a prompt of model 'mini'"),
    ({"instruction": "x", "input_type": "query"}, "at most one of"),
    ({"input_type": "question"}, "Invalid enum value 'question' - at `$.input_type`"),
])  # fmt: skip
def test_bad_options_are_refused(server, backend, prompt, options, words):
    assert words in error_of(server.post("/api/embeddings", {"prompt": prompt, **options}), 422, "invalid_field")
    assert backend.calls == []
