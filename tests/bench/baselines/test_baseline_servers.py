"""bench/baselines: each design as a real server on a tiny model, answering the appliance's vectors
through OpenAI's API, refusing bad input with JSON errors, driven by the load generator."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from bench.baselines import DESIGNS
from bench.baselines.launch import running
from bench.baselines.model import embed, load
from bench.loadgen import Mix, Target, closed_loop

TEXTS = ["the quick brown fox jumps", "a lazy dog", "paris is the capital of france"]


def post(url: str, body: bytes) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url + "/v1/embeddings", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.mark.slow
@pytest.mark.parametrize("design", DESIGNS)
def test_each_design_serves_the_appliance_forward_pass(design: str, tiny_transformer: Path) -> None:
    expected = embed(load("tiny", str(tiny_transformer)), TEXTS)
    with running(design, model="tiny", model_path=str(tiny_transformer)) as url:
        status, answer = post(url, json.dumps({"model": "tiny", "input": TEXTS}).encode())
        assert status == 200
        rows = np.array([item["embedding"] for item in answer["data"]], dtype=np.float32)  # type: ignore[index]
        np.testing.assert_allclose(rows, expected, atol=1e-5)
        assert post(url, b"{not json")[1]["error"]["type"] == "invalid_request_error"  # type: ignore[index]
        assert post(url, b'{"model": "tiny", "input": []}')[0] == 400
        status, missing = post(url, b'{"model": "other", "input": "x"}')
        assert (status, missing["error"]["type"]) == (404, "model_not_found")  # type: ignore[index]
        corpus = tuple(TEXTS * 10)
        result = asyncio.run(closed_loop(Target(url, "openai", dims={"tiny": 32}),
                                         lambda i: Mix(("tiny",), batch=2).request(corpus, i), concurrency=4,
                                         seconds=0.5, warmup=0.2))  # fmt: skip
        assert result.point.requests > 0 and result.failures == {}
