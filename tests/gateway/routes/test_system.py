"""``gateway/routes/system.py``: liveness and readiness (``/health`` stays 200 while the process is
up, ``/ready`` and every work route answer 503 with ``Retry-After`` while loading or draining) and
the model lists, OpenAI's ``/v1/models`` and Ollama's ``/api/tags``, over a real server against
the in-test backend (``fake_backend.FakeBackend``).
"""

from __future__ import annotations

import pytest

from http_checks import POST_BODIES, error_of


# ---- readiness ------------------------------------------------------------------------------
@pytest.mark.parametrize("ready, draining", [(True, False), (False, False), (True, True), (False, True)])
def test_health_is_200_while_the_process_is_up(server, backend, ready, draining):
    backend.ready, backend.draining = ready, draining
    r = server.get("/health")
    assert (r.status, r.json()) == (200, {"status": "ok"})


def test_ready(server, backend):
    assert (server.get("/ready").status, server.get("/ready").json()) == (200, {"status": "ready"})
    backend.ready = False
    r = server.get("/ready")
    error_of(r, 503, "not_ready")
    assert int(r.headers["Retry-After"]) >= 1
    backend.ready, backend.draining = True, True
    error_of(server.get("/ready"), 503, "draining")


@pytest.mark.parametrize("route", list(POST_BODIES))
@pytest.mark.parametrize("flags, kind", [({"ready": False}, "not_ready"), ({"draining": True}, "draining")])
def test_work_is_refused_while_not_ready_or_draining(server, backend, route, flags, kind):
    backend.__dict__.update(flags)
    r = server.post(route, POST_BODIES[route])
    error_of(r, 503, kind)
    assert int(r.headers["Retry-After"]) >= 1
    assert backend.calls == []


# ---- model lists ----------------------------------------------------------------------------
def test_openai_model_list(server, backend):
    doc = server.get("/v1/models").json()
    assert doc["object"] == "list"
    assert [(m["id"], m["object"], m["dimensions"], m["kind"]) for m in doc["data"]] == [
        ("mini", "model", 8, "transformer"),
        ("static", "model", 6, "static"),
        ("cross", "model", 0, "cross_encoder"),
    ]
    first = doc["data"][0]
    assert (first["max_length"], first["workers"], first["main"], first["owned_by"]) == (128, [0, 1], True, "appliance")
    assert isinstance(first["created"], int)


def test_ollama_tags(server, backend):
    doc = server.get("/api/tags").json()
    assert [(m["name"], m["model"], m["dimensions"], m["workers"]) for m in doc["models"]] == [
        ("mini", "mini", 8, [0, 1]),
        ("static", "static", 6, [0]),
        ("cross", "cross", 0, [0]),
    ]
    assert doc["models"][0]["details"]["family"] == "transformer"
