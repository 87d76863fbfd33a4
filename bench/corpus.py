"""The bench corpus: 5,000 real English sentences shipped in ``bench/data/corpus.txt``.

They are verses of the King James Bible (public domain), chosen by ``bench/data/build_corpus.py``
from Debian's ``bible-kjv`` package: one sentence of prose each, 3..60 words, lengths from a few
tokens to ~100 (what length-sorted batching needs to show its effect). Being a file in the
repository, the corpus is the same on every machine and Python version, so runs compare.
"""

from __future__ import annotations

import functools
import random
from pathlib import Path

CORPUS_FILE = Path(__file__).with_name("data") / "corpus.txt"


def sentences(n: int | None = None, seed: int = 0) -> list[str]:
    """``n`` sentences (all of them when None), in an order fixed by ``seed``."""
    pool = list(_pool())
    random.Random(seed).shuffle(pool)
    if n is None:
        return pool
    if n > len(pool):
        raise ValueError(f"the corpus holds {len(pool)} sentences, {n} were asked for")
    return pool[:n]


@functools.lru_cache(maxsize=1)
def _pool() -> tuple[str, ...]:
    return tuple(line for line in CORPUS_FILE.read_text(encoding="utf-8").splitlines() if line)
