"""An isolating request (``Embed.isolate``; ``Rerank.isolate``, its documents) tokenized input by input's fate: each input the
tokenizer refuses on its own is named in a ``Refusal``, the others are tokenized and computed,
and the request is answered with ONE ``Vectors`` (``Scores``) that carries both.

A runtime's ``tokenize`` is batched and stops at the first input it refuses, naming its index
(``InputTooLong``, ``InvalidInput``). ``tokenize_each`` tokenizes runs of inputs, starting with
the whole request; a run that stops at input ``bad`` is taken apart there:

1. the inputs before ``bad`` are a run of their own (usually all good: one more call);
2. ``bad`` is refused, its message naming its place in the request;
3. the inputs after ``bad`` are two runs, each half of what is left, so that many refusals cost
   about log2(n) batched calls per refusal rather than one call over every following input.

An error that names no input (index -1, ``TypeError`` for a request the model cannot do) is
raised, and so is anything about a rerank's query (tokenized apart, ``workers/loop.py``): it
fails the whole request, as without ``isolate``. Tokenizing is
microseconds an input against the forward pass's milliseconds, and nothing crosses a ring again.
"""

from __future__ import annotations

from typing import Callable

from appliance.protocol import FailureKind, Refusal
from workers.runtimes import InputTooLong, InvalidInput, Tokenized

# Tokenizes the request's inputs [lo, hi); an error's ``index`` counts from ``lo``.
TokenizeRun = Callable[[int, int], list[Tokenized]]


def tokenize_each(tokenize: TokenizeRun, count: int, refused: list[Refusal]) -> list[Tokenized]:
    """The tokenized inputs of ``[0, count)`` that were not refused, in order; each refused
    one is appended to ``refused``, in index order."""
    kept: list[Tokenized] = []
    tokenize_run(tokenize, 0, count, kept, refused)
    return kept


def tokenize_run(tokenize: TokenizeRun, lo: int, hi: int, kept: list[Tokenized], refused: list[Refusal]) -> None:
    if lo >= hi:
        return
    try:
        kept.extend(tokenize(lo, hi))
        return
    except (InputTooLong, InvalidInput) as exc:
        if exc.index < 0:
            raise  # names no input of the run (a rerank's query): the whole request fails
        bad = lo + exc.index
        exc.index = bad  # the message is built when read: it names the input's place in the request
        refusal = Refusal(bad, kind_of(exc), str(exc))
    tokenize_run(tokenize, lo, bad, kept, refused)  # step 1
    refused.append(refusal)  # step 2
    mid = (bad + 1 + hi) // 2  # step 3
    tokenize_run(tokenize, bad + 1, mid, kept, refused)
    tokenize_run(tokenize, mid, hi, kept, refused)


def kind_of(exc: InputTooLong | InvalidInput) -> FailureKind:
    return FailureKind.INPUT_TOO_LONG if isinstance(exc, InputTooLong) else FailureKind.INVALID_INPUT
