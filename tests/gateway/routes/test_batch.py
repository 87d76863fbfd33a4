"""``gateway/routes/batch.py``: ``POST /api/embed/batch`` over a real server against the in-test
backend (``conftest.FakeBackend``): all groups go to the backend as one call and come back
regrouped, with ``cache_stats`` and ``X-Cache``, and the input limits count every group together.
"""

from __future__ import annotations

import numpy as np

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
