"""``workers/refusals.py`` and the worker loop's isolating requests: an ``Embed`` with ``isolate``
is answered by ONE ``Vectors`` holding the good inputs' rows (as each computes alone) and a
``Refusal`` per refused input, named by its place in the record; a ``Rerank`` with ``isolate`` by
ONE ``Scores`` for its good documents (bi-encoder and cross-encoder) and its refused ones. Against
the real tokenizer in process, then a real worker process on a real channel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from appliance.config import ModelConfig
from appliance.protocol import Embed, Failed, FailureKind, Input, Ready, Refusal, Rerank, Scores, Vectors
from workers.refusals import tokenize_each
from workers.runtimes import Runtime, Tokenized, load_runtime
from worker_under_test import running_worker

LONG = "word " * 300  # over the tiny model's 128 tokens
BAD_IDS = [101, 99999, 102]  # a token id outside the vocabulary


def inputs_with_refusals(refused_at: set[int], count: int) -> list[Input]:
    """``count`` inputs; those at ``refused_at`` alternate too long and invalid."""
    out: list[Input] = []
    for i in range(count):
        if i in refused_at:
            out.append(LONG if i % 2 else BAD_IDS)
        else:
            out.append(f"sentence number {i} about vectors")
    return out


@pytest.fixture(scope="module")
def model(tiny_transformer: Path) -> ModelConfig:
    return ModelConfig(name="tiny", path=str(tiny_transformer), dtype="float32")  # compared at tight tolerance


@pytest.fixture(scope="module")
def runtime(model: ModelConfig) -> Runtime:
    return load_runtime(model, Path(model.path), "cpu")


def isolate(runtime: Runtime, inputs: list[Input]) -> tuple[list[Tokenized], list[Refusal]]:
    refused: list[Refusal] = []
    kept = tokenize_each(lambda lo, hi: runtime.tokenize(inputs[lo:hi], truncate=False), len(inputs), refused)
    return kept, refused


@pytest.mark.parametrize("refused_at", [set(), {0}, {9}, {0, 1, 2}, {3, 4, 8}, {1, 3, 5, 7, 9}, set(range(10))])
def test_each_input_is_tokenized_or_refused_by_its_place(runtime: Runtime, refused_at: set[int]) -> None:
    inputs = inputs_with_refusals(refused_at, 10)
    kept, refused = isolate(runtime, inputs)
    assert [r.index for r in refused] == sorted(refused_at)
    good = [item for i, item in enumerate(inputs) if i not in refused_at]
    assert kept == (runtime.tokenize(good, truncate=False) if good else [])
    for refusal in refused:
        # the message a worker without isolate sends, naming the same place
        expected = ("input_too_long", f"input {refusal.index} has ") if inputs[refusal.index] == LONG else \
            ("invalid_input", f"input {refusal.index}: token id 99999 is outside the vocabulary")  # fmt: skip
        assert (refusal.kind, refusal.message[: len(expected[1])]) == expected


def test_a_refused_query_still_fails_the_whole_request(runtime: Runtime) -> None:
    def tokenize(lo: int, hi: int) -> list[Tokenized]:
        from workers.runtimes import InputTooLong

        raise InputTooLong(-1, 300, 128)

    with pytest.raises(Exception, match="the query"):
        tokenize_each(tokenize, 3, [])


@pytest.mark.slow
def test_a_worker_answers_one_record_with_the_good_vectors_and_the_refusals(model: ModelConfig, runtime: Runtime,
                                                                            tmp_path: Path) -> None:  # fmt: skip
    refused_at = {2, 5, 8}
    inputs = inputs_with_refusals(refused_at, 10)
    good = [item for i, item in enumerate(inputs) if i not in refused_at]
    alone = np.concatenate([runtime.forward(runtime.tokenize([item], truncate=False)) for item in good])
    alone /= np.linalg.norm(alone, axis=1, keepdims=True)
    with running_worker([model], "primary", tmp_path) as worker:
        worker.wait_for(Ready)
        worker.send(Embed(1, "tiny", inputs, truncate=False, normalize=True, isolate=True))
        answer = worker.wait_for(Vectors, id=1)
        assert not [m for m in worker.inbox if isinstance(m, (Vectors, Failed)) and m.id == 1]  # one record
        worker.send(Embed(2, "tiny", inputs, truncate=False, normalize=True))  # without isolate, as before
        whole = worker.wait_for(Failed, id=2)
        worker.send(Embed(3, "tiny", [inputs[i] for i in sorted(refused_at)], truncate=False, isolate=True))
        none_left = worker.wait_for(Vectors, id=3)
    assert isinstance(answer, Vectors) and isinstance(whole, Failed) and isinstance(none_left, Vectors)
    assert answer.array().shape == (7, alone.shape[1])
    np.testing.assert_allclose(answer.array(), alone, rtol=0, atol=1e-5)
    assert answer.tokens == [t.length for t in runtime.tokenize(good, truncate=False)]
    assert [(r.index, r.kind) for r in answer.refused] == [(2, FailureKind.INVALID_INPUT),
                                                           (5, FailureKind.INPUT_TOO_LONG),
                                                           (8, FailureKind.INVALID_INPUT)]  # fmt: skip
    # the first refusal says what the whole record's failure says
    assert (whole.kind, whole.message, whole.index) == (answer.refused[0].kind, answer.refused[0].message, 2)
    assert none_left.tokens == [] and none_left.data == b"" and [r.index for r in none_left.refused] == [0, 1, 2]


@pytest.mark.slow
def test_a_worker_answers_an_isolating_rerank_with_the_good_scores(model: ModelConfig, tiny_cross_encoder: Path,
                                                                  tmp_path: Path) -> None:  # fmt: skip
    cross = ModelConfig(name="cross", path=str(tiny_cross_encoder), kind="cross_encoder", dtype="float32")
    documents = ["a short document", LONG, "another document", LONG + " again", "the last one"]
    good = [d for d in documents if not d.startswith("word")]
    with running_worker([model, cross], "primary", tmp_path) as worker:
        worker.wait_for(Ready)
        answers = {}
        for number, name in enumerate(["tiny", "cross"]):
            worker.send(Rerank(10 + number, name, "a query", documents, truncate=False, isolate=True))
            worker.send(Rerank(20 + number, name, "a query", good, truncate=False))
            answers[name] = (worker.wait_for(Scores, id=10 + number), worker.wait_for(Scores, id=20 + number))
        worker.send(Rerank(30, "tiny", LONG, documents, truncate=False, isolate=True))
        query_refused = worker.wait_for(Failed, id=30)
    for name, (isolated, plain) in answers.items():
        assert isinstance(isolated, Scores) and isinstance(plain, Scores)
        np.testing.assert_allclose(isolated.array(), plain.array(), rtol=0, atol=1e-5, err_msg=name)
        assert (isolated.tokens, isolated.query_tokens) == (plain.tokens, plain.query_tokens)
        assert [(r.index, r.kind) for r in isolated.refused] == [(1, FailureKind.INPUT_TOO_LONG),
                                                                 (3, FailureKind.INPUT_TOO_LONG)]  # fmt: skip
    assert isinstance(query_refused, Failed) and "the query" in query_refused.message
