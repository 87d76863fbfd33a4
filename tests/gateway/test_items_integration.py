"""``gateway/items.py`` in the real appliance (subprocess, one worker, the tiny random transformer
at float32, max length 128 tokens) over real HTTP: a batch with many inputs refused on their own
(``on_error: "skip"``, ``truncate: false``) is ONE record to the worker, none refused whole,
counted from the worker's own statistics; the good inputs get the vectors they get alone, the
refused ones their errors; a refused input is never cached, nor does it shift a vector onto another's key; and a
rerank job's chunk with refused documents is one record too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import time

import numpy as np
import pytest

from harness import Appliance, get, post, serving
from test_cache_integration import settled_items

pytestmark = pytest.mark.slow

MAIN = "tiny"
LONG = "word " * 300  # about 300 tokens: over the tiny model's 128 with truncate: false
REFUSED_AT = {1, 2, 7, 11, 12, 13, 20, 29, 38, 39}  # runs and singles, first and last places among them


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory, tiny_transformer: Path) -> Iterator[Appliance]:
    models = [{"name": MAIN, "path": str(tiny_transformer), "main": True, "dtype": "float32"}]
    with serving(tmp_path_factory.mktemp("items"), models, workers=1) as running:
        yield running


def inputs(tag: str) -> list[str]:
    return [f"{LONG} {i}" if i in REFUSED_AT else f"{tag} sentence {i} about search" for i in range(40)]


def skip_batch(appliance: Appliance, texts: list[str], **body: Any) -> dict[str, Any]:
    request = {"model": MAIN, "inputs": [texts[:25], texts[25:]], "truncate": False, "on_error": "skip", **body}
    status, _, answer = post(appliance.url + "/api/embed/batch", request)
    assert status == 200, answer
    return answer


def records_and_items(appliance: Appliance) -> tuple[int, int, int]:
    """The worker's records admitted (``requests``), records failed whole for one input
    (``refused_requests``) and inputs computed (``items``), so far. Once ``requests`` has settled
    (two reads more than a Stats period apart), the last read is fresh for every counter."""
    admitted = settled_items(appliance, counter="requests")
    (worker,) = get(appliance.url + "/stats")[2]["workers"]
    return admitted, worker["refused_requests"], worker["items"]


def check_items(answer: dict[str, Any], texts: list[str], alone: np.ndarray) -> None:
    """Each refused input answered with its error in its place, each good one with its vector."""
    items = [item for group in answer["batches"] for item in group]
    failed = {item["index"]: item["error"] for item in items if isinstance(item, dict)}
    assert set(failed) == REFUSED_AT
    for index, error in failed.items():
        assert error["type"] == "input_too_long" and error["message"].endswith(f"(input {index})"), error
    vectors = np.asarray(vectors_of(answer), dtype=np.float32)
    np.testing.assert_allclose(vectors, alone, rtol=0, atol=1e-5)


def vectors_of(answer: dict[str, Any]) -> list[list[float]]:
    return [item for group in answer["batches"] for item in group if not isinstance(item, dict)]


def test_many_refused_inputs_cost_one_record(appliance: Appliance) -> None:
    texts = inputs("once")
    good = [t for i, t in enumerate(texts) if i not in REFUSED_AT]
    records, refused, computed = records_and_items(appliance)
    answer = skip_batch(appliance, texts, use_cache=False)
    after = records_and_items(appliance)
    assert after == (records + 1, refused, computed + len(good))  # one record; each good input computed once
    alone = np.asarray([post(appliance.url + "/api/embed", {"model": MAIN, "input": [t]})[2]["embeddings"][0]
                        for t in good], dtype=np.float32)  # fmt: skip
    check_items(answer, texts, alone)
    assert answer["cache_stats"]["misses"] == len(good)
    # the first refusal reads as the whole request's failure without skip
    status, _, whole = post(appliance.url + "/api/embed/batch", {"model": MAIN, "inputs": [texts], "truncate": False})
    first = next(item for item in answer["batches"][0] if isinstance(item, dict))
    assert status == 422 and (whole["error"]["type"], whole["error"]["message"]) == (first["error"]["type"],
                                                                                     first["error"]["message"])


def test_a_batch_of_only_refused_and_blank_inputs_answers_every_error(appliance: Appliance) -> None:
    body = {"model": MAIN, "inputs": [[LONG, " "], [LONG + "!"]], "truncate": False, "on_error": "skip"}
    status, _, answer = post(appliance.url + "/api/embed/batch", body)
    assert status == 200, answer
    assert [[item["error"]["type"] for item in group] for group in answer["batches"]] == [
        ["input_too_long", "empty_input"], ["input_too_long"]]
    assert answer["cache_stats"] == {"hits": 0, "misses": 0, "hit_rate": 0.0}


def test_refused_inputs_are_not_cached_and_the_rest_are_cached_right(appliance: Appliance) -> None:
    texts = inputs("cached")
    good = [t for i, t in enumerate(texts) if i not in REFUSED_AT]
    status, _, plain = post(appliance.url + "/api/embed/batch", {"model": MAIN, "inputs": [good], "use_cache": False})
    assert status == 200
    first = skip_batch(appliance, texts)  # fills the cache with the good inputs' vectors
    records, refused, computed = records_and_items(appliance)
    again = skip_batch(appliance, texts)
    assert records_and_items(appliance) == (records + 1, refused, computed)  # only the refused were sent again
    assert again["cache_stats"] == {"hits": len(good), "misses": 0, "hit_rate": 1.0}
    assert vectors_of(again) == vectors_of(first)  # the very numbers, from the cache
    check_items(again, texts, np.asarray(plain["batches"][0], dtype=np.float32))  # each cached under its own key


def test_a_rerank_job_chunk_with_refused_documents_is_one_record(appliance: Appliance) -> None:
    documents = inputs("rerank")
    good = [i for i in range(len(documents)) if i not in REFUSED_AT]
    before = records_and_items(appliance)
    job = finished_job(appliance, {"model": MAIN, "task": "rerank", "query": "a search query", "inputs": documents,
                                   "truncate": False})  # fmt: skip
    assert job["status"] == "SUCCESS" and job["progress"]["failed"] == len(REFUSED_AT), job
    assert records_and_items(appliance)[:2] == (before[0] + 1, before[1])  # one chunk, one record, none refused
    status, _, page = get(f"{appliance.url}/v1/jobs/{job['id']}/results?limit=100")
    assert status == 200
    items = {item["index"]: item for item in page["data"]}
    for index in REFUSED_AT:
        error = items[index]["error"]
        assert error["type"] == "input_too_long" and error["message"].endswith(f"(input {index})"), error
    status, _, direct = post(appliance.url + "/v1/rerank", {"model": MAIN, "query": "a search query",
                                                            "documents": [documents[i] for i in good]})  # fmt: skip
    assert status == 200
    by_place = {good[r["index"]]: r["relevance_score"] for r in direct["results"]}
    np.testing.assert_allclose([items[i]["score"] for i in good], [by_place[i] for i in good], atol=1e-5)


def finished_job(appliance: Appliance, body: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    """The job ``body`` submits, once it has finished."""
    status, _, answer = post(appliance.url + "/v1/jobs", body)
    assert status == 202, answer
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = get(f"{appliance.url}/v1/jobs/{answer['id']}")[2]
        if job["status"] in ("SUCCESS", "FAILURE", "CANCELLED"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {answer['id']} not finished within {timeout}s")
