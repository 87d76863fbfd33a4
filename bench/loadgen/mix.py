"""Request mixes: which model and which texts request number ``i`` sends, fixed by a seed.

A mix is plain data (it crosses into the load generator's own process). Every request draws from
its own generator seeded with (seed, i), so a request's content does not depend on how many
requests came before it or in which order they were sent:

- ``batch`` texts per request (1: single sentences; N: batch-N);
- ``repeat``: the fraction of texts drawn from a hot set of ``hot_set`` texts; the others are
  fresh, tagged with the request number when ``repeat`` > 0, so a miss is never a hit by chance;
- ``models``: each request names one, drawn uniformly (mixed models);
- ``long``: the fraction of texts made long by joining corpus sentences up to ``long_words`` words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np


class Request(NamedTuple):
    model: str
    texts: list[str]


@dataclass(frozen=True)
class Mix:
    models: tuple[str, ...]
    batch: int = 1
    repeat: float = 0.0
    hot_set: int = 64
    long: float = 0.0
    long_words: int = 300
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.models or self.batch < 1 or self.hot_set < 1 or self.long_words < 1:
            raise ValueError(f"a mix needs a model, batch >= 1, hot_set >= 1 and long_words >= 1: {self}")
        if not (0.0 <= self.repeat <= 1.0 and 0.0 <= self.long <= 1.0):
            raise ValueError(f"a mix's repeat and long are fractions in 0..1: {self}")

    def request(self, corpus: Sequence[str], i: int) -> Request:
        rng = np.random.default_rng((self.seed, i))
        model = self.models[int(rng.integers(len(self.models)))] if len(self.models) > 1 else self.models[0]
        return Request(model, [self.text(corpus, rng, i, k) for k in range(self.batch)])

    def text(self, corpus: Sequence[str], rng: np.random.Generator, i: int, k: int) -> str:
        if self.repeat and rng.random() < self.repeat:
            return f"{corpus[int(rng.integers(min(self.hot_set, len(corpus))))]} (hot)"
        position = (i * self.batch + k) % len(corpus)
        long = self.long and rng.random() < self.long
        text = long_text(corpus, position, self.long_words) if long else corpus[position]
        return f"{text} ({self.seed}-{i}-{k})" if self.repeat else text


def long_text(corpus: Sequence[str], start: int, words: int) -> str:
    """Consecutive corpus sentences from ``start``, joined until ``words`` words."""
    parts: list[str] = []
    count = 0
    while count < words:
        sentence = corpus[(start + len(parts)) % len(corpus)]
        parts.append(sentence)
        count += len(sentence.split())
    return " ".join(parts)
