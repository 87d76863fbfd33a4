"""bench/loadgen/mix.py and apis.py: what each request sends, and how each answer is checked."""

from __future__ import annotations

import json

import pytest

from bench.loadgen import apis
from bench.loadgen.mix import Mix

CORPUS = [f"Sentence number {i} is here." for i in range(500)]


def test_a_request_depends_only_on_the_seed_and_its_number() -> None:
    mix = Mix(("a", "b"), batch=3, repeat=0.5, long=0.2, seed=9)
    assert [mix.request(CORPUS, i) for i in (5, 1, 3)] == [mix.request(CORPUS, i) for i in (5, 1, 3)]
    assert mix.request(CORPUS, 1) != Mix(("a", "b"), batch=3, repeat=0.5, long=0.2, seed=10).request(CORPUS, 1)


def test_single_and_batch_requests_walk_the_corpus() -> None:
    assert Mix(("m",)).request(CORPUS, 7).texts == [CORPUS[7]]
    assert Mix(("m",), batch=4).request(CORPUS, 2).texts == CORPUS[8:12]


def test_repeat_fraction_draws_from_the_hot_set_and_never_repeats_a_miss() -> None:
    mix = Mix(("m",), repeat=0.3, hot_set=16, seed=1)
    drawn = [mix.request(CORPUS, i).texts[0] for i in range(3000)]
    hot = [t for t in drawn if t.endswith("(hot)")]
    cold = [t for t in drawn if not t.endswith("(hot)")]
    assert len(hot) / len(drawn) == pytest.approx(0.3, abs=0.03)
    assert len(set(hot)) <= 16 and len(set(cold)) == len(cold)


def test_mixed_models_and_long_inputs() -> None:
    mix = Mix(("small", "large"), long=0.25, long_words=120, seed=2)
    requests = [mix.request(CORPUS, i) for i in range(2000)]
    share = sum(r.model == "large" for r in requests) / len(requests)
    assert share == pytest.approx(0.5, abs=0.05)
    long = [r for r in requests if len(r.texts[0].split()) >= 120]
    assert len(long) / len(requests) == pytest.approx(0.25, abs=0.04)


@pytest.mark.parametrize("bad", [dict(models=()), dict(batch=0), dict(repeat=1.5), dict(long=-0.1)])
def test_a_mix_refuses_impossible_settings(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="mix"):
        Mix(**{"models": ("m",), **bad})  # type: ignore[arg-type]


@pytest.mark.parametrize("api", apis.APIS)
def test_each_api_body_and_answer_check(api: str) -> None:
    sent = json.loads(apis.body(api, "m", ["x", "y"]))
    assert sent == ({"inputs": ["x", "y"]} if api == "tei" else {"model": "m", "input": ["x", "y"]})
    assert json.loads(apis.body(api, "m", ["x"])) in ({"inputs": "x"}, {"model": "m", "input": "x"})

    def answer(vectors: list[list[float]]) -> bytes:
        shaped: object = {"ollama": {"embeddings": vectors}, "tei": vectors,
                          "openai": {"data": [{"embedding": v, "index": i} for i, v in enumerate(vectors)]}}[api]  # fmt: skip
        return json.dumps(shaped).encode()

    checker = apis.Checker(api)
    assert checker.problem("m", ["x", "y"], 200, answer([[0.1] * 4, [0.2] * 4])) is None
    assert checker.dims == {"m": 4}  # learnt from the first good answer, then held to
    assert checker.problem("m", ["x"], 200, answer([[0.1] * 5])) == "dim"
    assert checker.problem("m", ["x", "y"], 200, answer([[0.1] * 4])) == "count"
    assert checker.problem("m", ["x"], 429, b'{"error": {}}') == "status-429"
    assert checker.problem("m", ["x"], 200, b"not json") == "body"
    assert apis.Checker(api, {"m": 8}).problem("m", ["x"], 200, answer([[0.1] * 4])) == "dim"


def test_an_unknown_api_is_named() -> None:
    with pytest.raises(ValueError, match="unknown api 'grpc'"):
        apis.route("grpc")
