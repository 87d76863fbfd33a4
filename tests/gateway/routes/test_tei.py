"""``gateway/routes/tei.py`` and ``gateway/tei.py`` over a real server against the in-test backend
(``fake_backend.FakeBackend``): TEI's answer shapes, its input forms, which model each route
takes, and every request error in TEI's ``{error, error_type}`` with TEI's status, while the other
dialects keep their own shape. The numbers against sentence-transformers and ``tokenizers`` are
``tests/gateway/test_tei_integration.py``'s, over a real appliance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from fake_backend import TEST_CONFIG
from gateway import errors
from gateway.admission import Admission
from gateway.tei import TEI_ERRORS
from http_checks import MAX_CHARS, MAX_INPUTS, error_of, f32


def tei_error_of(reply: Any, status: int, kind: str) -> str:
    """Assert TEI's error shape; return its message."""
    assert reply.status == status, reply.body
    assert reply.headers["Content-Type"].startswith("application/json")
    body = reply.json()
    assert set(body) == {"error", "error_type"} and body["error_type"] == kind, body
    return str(body["error"])


@pytest.mark.parametrize("route", ["/embed", "/"])
def test_embed_answers_a_matrix(server, backend, route):
    r = server.post(route, {"inputs": ["alpha", "beta"]})
    assert r.status == 200, r.body
    np.testing.assert_array_equal(f32(r.json()), backend.vectors_for("mini", ["alpha", "beta"]))
    one = server.post(route, {"inputs": "alpha"}).json()
    np.testing.assert_array_equal(f32(one), backend.vectors_for("mini", ["alpha"]))
    assert backend.calls[-1].truncate is False  # TEI's default: refuse a too long input, do not cut it


def test_embed_input_forms(server, backend):
    assert server.post("/embed", {"inputs": [5, 6, 7]}).status == 200
    assert backend.calls[-1].inputs == [[5, 6, 7]]  # one token-id list is one input
    assert server.post("/embed", {"inputs": ["alpha", [5, 6]]}).status == 200
    assert backend.calls[-1].inputs == ["alpha", [5, 6]]  # a batch may mix texts and id lists, as TEI's does
    tei_error_of(server.post("/embed", {"inputs": ["alpha", 5]}), 422, "Validation")
    server.post("/embed", {"inputs": "alpha", "truncate": True, "model": "static"})
    assert (backend.calls[-1].model, backend.calls[-1].truncate) == ("static", True)


def test_options_reach_the_backend(server, backend):
    server.post("/embed", {"inputs": ["alpha"]})
    assert backend.options[-1] == {"normalize": True, "truncation_direction": "right"}  # TEI's defaults
    server.post("/embed", {"inputs": ["alpha"], "normalize": False, "truncate": True, "truncation_direction": "Left"})
    assert backend.options[-1] == {"normalize": False, "truncation_direction": "left"}
    server.post("/rerank", {"query": "q", "texts": ["a"], "raw_scores": True, "truncation_direction": "left"})
    assert backend.options[-1] == {"raw_scores": True, "truncation_direction": "left"}
    # the fake models have no prompts: any name is refused, listing none
    message = tei_error_of(server.post("/embed", {"inputs": ["a"], "prompt_name": "query"}), 422, "Validation")
    assert "query" in message


def test_embed_dimensions_cut_and_renormalise(server, backend):
    r = server.post("/embed", {"inputs": ["alpha"], "dimensions": 4})
    full = backend.vectors_for("mini", ["alpha"])[:, :4]
    np.testing.assert_allclose(f32(r.json()), full / np.linalg.norm(full), rtol=1e-6)
    raw = server.post("/embed", {"inputs": ["alpha"], "dimensions": 4, "normalize": False})
    np.testing.assert_array_equal(f32(raw.json()), full)  # cut only: the answer is not normalised
    tei_error_of(server.post("/embed", {"inputs": ["alpha"], "dimensions": 9}), 422, "Validation")


def test_rerank_takes_the_first_cross_encoder(server, backend):
    texts = ["red apple", "green pear", "blue sky"]
    r = server.post("/rerank", {"query": "fruit", "texts": texts})
    ranks = r.json()
    assert r.status == 200 and backend.calls[-1].model == "cross"
    scores = backend.vectors_for("cross", texts) @ backend.vectors_for("cross", ["fruit"])[0]
    assert [x["index"] for x in ranks] == list(np.argsort(-scores, kind="stable"))
    assert all(set(x) == {"index", "score"} for x in ranks)
    with_text = server.post("/rerank", {"query": "fruit", "texts": texts, "return_text": True, "model": "mini"})
    assert backend.calls[-1].model == "mini"
    assert [x["text"] for x in with_text.json()] == [texts[x["index"]] for x in with_text.json()]


def test_info_describes_the_main_model(server, backend):
    r = server.get("/info")
    info = r.json()
    assert r.status == 200
    assert info["model_id"] == "mini" and info["model_type"] == {"embedding": {"pooling": "mean"}}
    assert (info["max_input_length"], info["max_client_batch_size"]) == (128, MAX_INPUTS)
    assert (info["max_batch_tokens"], info["max_batch_requests"]) == (TEST_CONFIG.max_batch_tokens,
                                                                      TEST_CONFIG.max_batch_size)  # fmt: skip
    assert info["auto_truncate"] is False and info["tokenization_workers"] == 2
    assert {info["model_sha"], info["sha"], info["docker_label"]} == {None}
    backend.ready = False
    tei_error_of(server.get("/info"), 503, "Unhealthy")


def test_tokenize_needs_a_model_directory(server, backend):
    # the fake backend's models have none: refused in TEI's shape, not a 500
    tei_error_of(server.post("/tokenize", {"inputs": "alpha"}), 422, "Validation")
    tei_error_of(server.post("/decode", {"ids": [1, 2]}), 422, "Validation")


@pytest.mark.parametrize(
    "route, body, status, kind",
    [
        ("/embed", {"inputs": []}, 400, "Empty"),
        ("/embed", {"inputs": ["", ""]}, 400, "Empty"),
        ("/embed", {"inputs": ["a"] * (MAX_INPUTS + 1)}, 413, "Validation"),
        ("/embed", {"inputs": ["x" * (MAX_CHARS + 1)]}, 413, "Validation"),
        ("/embed", {"inputs": 3}, 422, "Validation"),
        ("/embed", {"inputs": ["a"], "normalize": "yes"}, 422, "Validation"),
        ("/embed", {"inputs": ["a"], "truncation_direction": "Middle"}, 422, "Validation"),
        ("/embed", {"inputs": ["a"], "model": "nope"}, 404, "Validation"),
        ("/embed", {"inputs": ["a"], "model": "cross"}, 422, "Validation"),
        ("/", {"texts": ["a"]}, 422, "Validation"),
        ("/rerank", {"query": "", "texts": ["a"]}, 400, "Empty"),
        ("/rerank", {"query": "q", "texts": []}, 400, "Empty"),
        ("/rerank", {"query": "q", "texts": ["a"] * (MAX_INPUTS + 1)}, 413, "Validation"),
        ("/tokenize", {"inputs": []}, 400, "Empty"),
        ("/decode", {"ids": []}, 400, "Empty"),
        ("/decode", {"ids": [1, [2]]}, 422, "Validation"),
        ("/decode", {"ids": [-1]}, 422, "Validation"),
    ],
)
def test_request_errors_in_tei_shape(server, backend, route, body, status, kind):
    tei_error_of(server.post(route, body), status, kind)


def test_malformed_and_too_large_bodies(server, backend):
    tei_error_of(server.post("/embed", raw=b"{not json"), 400, "Validation")
    tei_error_of(server.post("/embed", raw=b'{"inputs": "' + b"x" * (70 * 1024) + b'"}'), 413, "Validation")
    chunks = [b'{"inputs": "', *([b"x" * 8192] * 10), b'"}']  # no Content-Length: aiohttp's own 413
    tei_error_of(server.post("/embed", chunks=chunks), 413, "Validation")


@pytest.mark.parametrize(
    "failure, status, kind",
    [
        (errors.QueueFull("full", retry_after=1.0), 429, "Overloaded"),
        (errors.WorkerLost("gone", retry_after=1.0), 503, "Unhealthy"),
        (errors.Overloaded("out of memory", retry_after=1.0), 424, "Backend"),
        (errors.DeadlineExceeded("late"), 504, "Backend"),
        (errors.InputTooLong("input 0 has 300 tokens"), 413, "Validation"),
    ],
)
def test_backend_failures_in_tei_shape(server, backend, failure, status, kind):
    backend.fail = failure
    for route, body in [("/embed", {"inputs": ["a"]}), ("/rerank", {"query": "q", "texts": ["a"]})]:
        reply = server.post(route, body)
        tei_error_of(reply, status, kind)
        assert ("Retry-After" in reply.headers) == (failure.retry_after is not None)


def test_not_ready_and_draining_are_unhealthy(server, backend):
    backend.ready = False
    tei_error_of(server.post("/embed", {"inputs": ["a"]}), 503, "Unhealthy")
    backend.ready, backend.draining = True, True
    tei_error_of(server.post("/rerank", {"query": "q", "texts": ["a"]}), 503, "Unhealthy")


def test_every_request_error_has_a_tei_answer():
    types = {cls.type for cls in vars(errors).values()
             if isinstance(cls, type) and issubclass(cls, errors.ApiError) and cls is not errors.ApiError}  # fmt: skip
    # the key check's 401 runs before any route; an internal error is the app wrapper's 500
    assert types - set(TEI_ERRORS) == {errors.Unauthorized.type, errors.Internal.type}


def test_other_dialects_keep_their_error_shape(server, backend):
    error_of(server.post("/v1/embeddings", {"input": []}), 400, "empty_input")
    error_of(server.post("/api/embed", {"input": []}), 400, "empty_input")


def test_post_root_needs_the_key_and_get_root_stays_the_page(tmp_path: Path, start_server):
    keys = tmp_path / "keys"
    keys.write_text("sk-tei\n")
    config = msgspec.structs.replace(TEST_CONFIG, api_keys_file=str(keys))
    server, _ = start_server(config, Admission.from_config(config))
    error_of(server.post("/", {"inputs": "alpha"}), 401, "unauthorized")
    error_of(server.post("/embed", {"inputs": "alpha"}), 401, "unauthorized")
    assert server.post("/", {"inputs": "alpha"}, headers={"Authorization": "Bearer sk-tei"}).status == 200
    page = server.get("/")
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")


def test_a_spent_rate_is_overloaded(start_server):
    config = msgspec.structs.replace(TEST_CONFIG, rate_limit_rpm=2)
    server, _ = start_server(config, Admission.from_config(config))
    assert server.post("/embed", {"inputs": "alpha"}).status == 200
    tei_error_of(server.post("/tokenize", {"inputs": "alpha"}), 422, "Validation")  # charged, then refused
    refused = server.post("/decode", {"ids": [1]})
    tei_error_of(refused, 429, "Overloaded")
    assert int(refused.headers["Retry-After"]) >= 1


def test_model_type_of_each_kind(tiny_transformer: Path, tiny_cross_encoder: Path, tmp_path: Path):
    from appliance.config import Config, ModelConfig
    from gateway.backend import ModelCard
    from gateway.routes.tei import model_type

    config = Config(models=[ModelConfig(name="e", path=str(tiny_transformer), main=True),
                            ModelConfig(name="c", path=str(tiny_cross_encoder), kind="cross_encoder"),
                            ModelConfig(name="gone", path=str(tmp_path / "nothing"), kind="cross_encoder")])  # fmt: skip

    def card(name: str, kind: str) -> ModelCard:
        return ModelCard(name=name, kind=kind, dim=0, max_length=128, main=False, workers=[])  # type: ignore[arg-type]

    assert msgspec.to_builtins(model_type(card("e", "transformer"), config)) == {"embedding": {"pooling": "mean"}}
    reranker = {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}}
    assert msgspec.to_builtins(model_type(card("c", "cross_encoder"), config)) == reranker
    assert msgspec.to_builtins(model_type(card("gone", "cross_encoder"), config)) == reranker  # no files: defaults
