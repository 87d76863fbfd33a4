"""``gateway/openapi.py``: the document built from what ``build_app`` registered is valid OpenAPI
3.1 (schemathesis loads it and checks it against the 3.1 meta-schema), describes every route the
app serves, takes its schemas from msgspec, resolves every reference, and marks exactly the open
paths open.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
from typing import Any, Iterator

import msgspec
import pytest
import schemathesis
from aiohttp import web

from fake_backend import TEST_CONFIG, FakeBackend
from gateway import responses, schemas, stats
from gateway.admission import OPEN_PATHS, is_open
from gateway.app import build_app
from gateway.openapi import API_DESCRIPTION, ApiDescription
from gateway.route_docs import HTML, PROMETHEUS, SCHEMA_REF, TEXT, RouteDoc, json_answer


@pytest.fixture(scope="module")
def app() -> web.Application:
    return build_app(TEST_CONFIG, FakeBackend())


@pytest.fixture(scope="module")
def doc(app: web.Application) -> dict[str, Any]:
    return json.loads(app[API_DESCRIPTION].encoded())


def served(app: web.Application) -> set[tuple[str, str]]:
    """(method, path) of every route the app's router holds, less HEAD (aiohttp adds one per GET)
    and the catch-all (``*``, ``UNMATCHED_PATH``)."""
    found = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method not in ("HEAD", "*"):
            found.add((route.method.lower(), path))
    return found


def refs_in(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs_in(value)


def lookup(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for key in ref[2:].split("/"):
        node = node[key]
    return node


def test_the_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    assert doc["openapi"] == "3.1.0"
    schemathesis.openapi.from_dict(doc).validate()  # the OpenAPI 3.1 meta-schema, via jsonschema_rs


def test_the_validation_is_not_a_no_op(doc: dict[str, Any]) -> None:
    broken = {**doc, "paths": {"/health": {"get": {"responses": {"200": {"content": "no"}}}}}}
    with pytest.raises(Exception):
        schemathesis.openapi.from_dict(broken).validate()


def test_every_registered_route_is_documented(app: web.Application, doc: dict[str, Any]) -> None:
    assert app[API_DESCRIPTION].undocumented() == []
    documented = {(method, path) for path, item in doc["paths"].items() for method in item}
    assert documented == served(app)


def test_every_reference_resolves(doc: dict[str, Any]) -> None:
    refs = set(refs_in(doc))
    assert refs, "the document should share its schemas through components"
    for ref in refs:
        assert lookup(doc, ref) is not None, ref


def test_open_paths_are_open_and_the_rest_need_the_key(doc: dict[str, Any]) -> None:
    assert doc["security"] == [{"apiKey": []}]
    assert doc["components"]["securitySchemes"]["apiKey"] == {**doc["components"]["securitySchemes"]["apiKey"],
                                                              "type": "http", "scheme": "bearer"}  # fmt: skip
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if is_open(method.upper(), path):
                assert op["security"] == [] and "401" not in op["responses"], path
            else:
                assert "security" not in op and "401" in op["responses"], path
    assert {"/openapi.json", "/docs", "/health", "/ready"} <= set(doc["paths"]) & OPEN_PATHS


@pytest.mark.parametrize("kind", [schemas.OllamaEmbed, schemas.OpenAIEmbed, schemas.BatchEmbed, schemas.Rerank,
                                  schemas.CohereRerank, schemas.JobSubmit, responses.OpenAIEmbedResponse,
                                  responses.JobView, responses.ErrorBody, stats.SystemStats])  # fmt: skip
def test_schemas_are_msgspecs_own(doc: dict[str, Any], kind: type) -> None:
    _, expected = msgspec.json.schema_components([kind], ref_template=SCHEMA_REF)
    for name, schema in expected.items():
        assert doc["components"]["schemas"][name] == schema, name


def test_request_bodies_and_answers_name_the_structs_the_routes_use(doc: dict[str, Any]) -> None:
    def body(path: str) -> str:
        return doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]

    def answer(path: str, method: str = "get", status: str = "200") -> str:
        return doc["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]["$ref"]

    assert body("/api/embed").endswith("/OllamaEmbed") and answer("/api/embed", "post").endswith("/OllamaEmbedResponse")
    assert body("/v1/jobs").endswith("/JobSubmit") and answer("/v1/jobs", "post", "202").endswith("/JobAccepted")
    assert answer("/stats").endswith("/SystemStats")
    assert lookup(doc, doc["paths"]["/api/embed"]["post"]["responses"]["422"]["$ref"])["content"][
        "application/json"]["schema"]["$ref"].endswith("/ErrorBody")  # fmt: skip


def test_statuses_headers_and_content_types(doc: dict[str, Any]) -> None:
    paths = doc["paths"]
    embed = paths["/v1/embeddings"]["post"]["responses"]
    assert set(embed) == {"200", "400", "401", "404", "408", "413", "422", "429", "503", "504"}
    assert "Retry-After" in lookup(doc, embed["429"]["$ref"])["headers"]
    assert paths["/v1/jobs"]["post"]["responses"]["202"]["headers"]["Location"]["required"] is True
    assert set(paths["/v1/jobs/{job_id}/results"]["get"]["responses"]["200"]["content"]) == {
        "application/json", "application/x-ndjson", "application/x-npy"}
    events = paths["/api/embed/stream"]["post"]["responses"]["200"]["content"]["text/event-stream"]["schema"]["oneOf"]
    assert [e["properties"]["event"]["const"] for e in events] == ["result", "error", "progress", "complete"]
    assert "text/html" in paths["/docs"]["get"]["responses"]["200"]["content"]
    for item in paths.values():
        for op in item.values():
            for answer in op["responses"].values():
                answer = lookup(doc, answer["$ref"]) if "$ref" in answer else answer
                assert "X-Request-ID" in answer["headers"]


def test_path_parameters_come_from_the_path(doc: dict[str, Any]) -> None:
    params = doc["paths"]["/v1/jobs/{job_id}"]["get"]["parameters"]
    assert params == [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}]
    operation_ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(operation_ids) == len(set(operation_ids))


def test_version_comes_from_the_package_metadata(doc: dict[str, Any]) -> None:
    assert doc["info"]["version"] == importlib.metadata.version("inference-appliance")


def test_the_document_is_built_once_per_app(app: web.Application) -> None:
    description = app[API_DESCRIPTION]
    assert description.encoded() is description.encoded()


def test_a_route_without_a_doc_is_served_and_reported_undocumented() -> None:
    description = ApiDescription(version="1.2.3")
    description.record("GET", "/documented", RouteDoc("a documented route", "t", content=json_answer(responses.Status)))
    description.record("GET", "/plain", None)
    assert description.undocumented() == ["GET /plain"]
    document = description.document()
    assert set(document["paths"]) == {"/documented"} and document["info"]["version"] == "1.2.3"
    assert [t["name"] for t in document["tags"]] == ["t"]


def test_a_text_route_is_described_in_one_line() -> None:
    """How the metrics and status-page routes are described: a media type and a literal schema."""
    description = ApiDescription(version="1")
    description.record("GET", "/metrics", RouteDoc("Prometheus metrics", "operations", content={PROMETHEUS: TEXT}))
    description.record("GET", "/", RouteDoc("The status page", "operations", content={HTML: TEXT}))
    document = description.document()
    schemathesis.openapi.from_dict(document).validate()
    assert document["paths"]["/metrics"]["get"]["responses"]["200"]["content"] == {"text/plain": {"schema": TEXT}}
    assert document["paths"]["/"]["get"]["operationId"] == "get_root"


def test_aiohttp_path_patterns_become_openapi_templates() -> None:
    description = ApiDescription(version="1")
    description.record("GET", r"/things/{thing_id:\d+}", RouteDoc("a thing", "t"))
    document = description.document()
    assert list(document["paths"]) == ["/things/{thing_id}"]
    assert re.fullmatch(r"get_things_by_thing_id", document["paths"]["/things/{thing_id}"]["get"]["operationId"])
