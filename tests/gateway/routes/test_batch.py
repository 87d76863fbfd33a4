"""``gateway/routes/batch.py``: ``POST /api/embed/batch`` over a real server against the in-test
backend (``fake_backend.FakeBackend``): all groups go to the backend as one call and come back
regrouped, with ``cache_stats`` and ``X-Cache``, and the input limits count every group together.
With ``on_error: "skip"`` each input the backend refuses (as a worker does, naming its index) is
answered as an error in its place and the rest are served; request errors still fail it.
"""

from __future__ import annotations

import numpy as np

from gateway import errors
from http_checks import error_of, f32


def test_batch_is_one_backend_call_regrouped(server, backend):
    groups = [["a", "b"], [], ["c", "a", "d"]]
    r = server.post("/api/embed/batch", {"model": "mini", "inputs": groups, "batch_size": 2})
    doc = r.json()
    assert r.status == 200 and set(doc) == {"model", "batches", "cache_stats"}
    assert [c.inputs for c in backend.calls] == [["a", "b", "c", "a", "d"]]
    assert [len(g) for g in doc["batches"]] == [2, 0, 3]
    for group, got in zip(groups, doc["batches"]):
        if group:
            np.testing.assert_array_equal(f32(got), backend.vectors_for("mini", group))
    assert doc["cache_stats"] == {"hits": 0, "misses": 5, "hit_rate": 0.0}


def test_batch_cache_stats_and_header(server, backend):
    backend.cache_hits = 2
    r = server.post("/api/embed/batch", {"inputs": [["a", "b"], ["c", "d", "e"]]})
    assert r.json()["cache_stats"] == {"hits": 2, "misses": 3, "hit_rate": 0.4}
    assert r.headers["X-Cache"] == "partial"


def test_batch_limits_count_every_group(server, backend):
    r = server.post("/api/embed/batch", {"inputs": [["x"] * 6] * 3})
    assert "18" in error_of(r, 422, "too_many_inputs")


# ---- on_error: "skip" -----------------------------------------------------------------------
def refuse(backend, monkeypatch, prefixes=("long", "bad")):
    """Make ``backend`` answer as a worker does for inputs it cannot take: an input starting with
    "long" is too long, one starting with "bad" invalid, the first one found failing the whole
    call with its index in ``Part.failure_text``'s form. Returns the list of every call's inputs."""
    real, sent = backend.embed, []

    async def embed(model, inputs, **options):
        sent.append(list(inputs))
        for i, item in enumerate(inputs):
            if item.startswith("long") and "long" in prefixes:
                raise errors.InputTooLong(f"input {i} has 300 tokens, more than the model's max length 128 "
                                          f"(send truncate=true to cut it) (input {i})")  # fmt: skip
            if item.startswith("bad") and "bad" in prefixes:
                raise errors.InvalidField(f"input {i}: token id 99999 is outside the vocabulary (input {i})")
        return await real(model, inputs, **options)

    monkeypatch.setattr(backend, "embed", embed)
    return sent


def items_of(doc):
    return [item for group in doc["batches"] for item in group]


def test_on_error_defaults_to_fail_the_whole_request(server, backend, monkeypatch):
    sent = refuse(backend, monkeypatch)
    r = server.post("/api/embed/batch", {"inputs": [["a", "long one"], ["b"]]})
    assert "(input 1)" in error_of(r, 422, "input_too_long")
    assert sent == [["a", "long one", "b"]]


def test_skip_answers_each_refused_input_in_its_place(server, backend, monkeypatch):
    sent = refuse(backend, monkeypatch)
    groups = [["a", "long one"], [], ["b", "bad id", "c"]]
    r = server.post("/api/embed/batch", {"inputs": groups, "on_error": "skip"})
    doc = r.json()
    assert r.status == 200 and set(doc) == {"model", "batches", "cache_stats"}
    assert [len(g) for g in doc["batches"]] == [2, 0, 3]
    a, long_one, b, bad, c = items_of(doc)
    np.testing.assert_array_equal(f32([a, b, c]), backend.vectors_for("mini", ["a", "b", "c"]))
    assert long_one["index"] == 1 and long_one["error"]["type"] == "input_too_long"
    assert bad["index"] == 3 and bad["error"]["type"] == "invalid_field"
    # each message names the input's place in the request, not in the call that found it
    assert long_one["error"]["message"].endswith("(input 1)") and bad["error"]["message"].endswith("(input 3)")
    assert set(long_one) == {"index", "error"} and set(long_one["error"]) == {"type", "message"}
    # one round per refused input, each without the inputs set aside before
    assert sent == [["a", "long one", "b", "bad id", "c"], ["a", "b", "bad id", "c"], ["a", "b", "c"]]
    assert doc["cache_stats"] == {"hits": 0, "misses": 3, "hit_rate": 0.0}


def test_skip_sets_blank_texts_aside_without_asking_the_backend(server, backend):
    backend.cache_hits = 1
    r = server.post("/api/embed/batch", {"inputs": [["", "a"], ["  \n", "b"]], "on_error": "skip"})
    blank, a, space, b = items_of(r.json())
    assert (blank["index"], blank["error"]["type"]) == (0, "empty_input")
    assert (space["index"], space["error"]["type"]) == (2, "empty_input")
    np.testing.assert_array_equal(f32([a, b]), backend.vectors_for("mini", ["a", "b"]))
    assert [c.inputs for c in backend.calls] == [["a", "b"]]
    assert r.json()["cache_stats"] == {"hits": 1, "misses": 1, "hit_rate": 0.5}
    assert r.headers["X-Cache"] == "partial"


def test_skip_with_nothing_servable_answers_every_failure(server, backend, monkeypatch):
    sent = refuse(backend, monkeypatch)
    r = server.post("/api/embed/batch", {"inputs": [[" ", "long"]], "on_error": "skip"})
    assert r.status == 200
    assert [item["error"]["type"] for item in items_of(r.json())] == ["empty_input", "input_too_long"]
    assert sent == [["long"]]
    assert r.json()["cache_stats"] == {"hits": 0, "misses": 0, "hit_rate": 0.0}
    assert r.headers["X-Cache"] == "miss" and r.headers["X-Worker-ID"] == "none"


def test_skip_still_fails_for_request_errors(server, backend):
    backend.fail = errors.QueueFull("worker queue full; retry", retry_after=1.0)
    r = server.post("/api/embed/batch", {"inputs": [["a", "b"]], "on_error": "skip"})
    error_of(r, 429, "queue_full")
    assert len(backend.calls) == 1


def test_skip_fails_when_the_error_names_no_input(server, backend):
    backend.fail = errors.InputTooLong("the query has 300 tokens")
    r = server.post("/api/embed/batch", {"inputs": [["a", "b"]], "on_error": "skip"})
    error_of(r, 422, "input_too_long")
    assert len(backend.calls) == 1


def test_skip_keeps_the_request_limits(server, backend):
    r = server.post("/api/embed/batch", {"inputs": [["a", "x" * 1001]], "on_error": "skip"})
    assert "inputs[1]" in error_of(r, 422, "input_too_long")
    error_of(server.post("/api/embed/batch", {"inputs": [["", ""]], "on_error": "skip"}), 400, "empty_input")
    assert backend.calls == []


def test_on_error_takes_only_fail_or_skip(server, backend):
    assert "on_error" in error_of(server.post("/api/embed/batch", {"inputs": [["a"]], "on_error": "ignore"}),
                                  422, "invalid_field")  # fmt: skip
