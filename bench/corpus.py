"""A fixed corpus of real English sentences for benchmarks, built offline and deterministically.

Source: the docstrings and message strings of this Python's standard library, taken from the
constants of its compiled source (compiled, never imported or run; the C compiler is ~3x faster
than building an AST). Each string is dedented and split into paragraphs, code-looking
paragraphs are dropped, the rest is split into sentences, kept when they read like prose (3..60
words, mostly letters, a capital first and a full stop last), deduplicated in file order, then
shuffled with a seeded RNG. Same Python version, same corpus: files are sorted and constants are
visited in code order.
Sentence lengths vary from a few tokens to ~100, which is what length-sorted batching needs to
show its effect.
"""

from __future__ import annotations

import functools
import inspect
import random
import re
import sysconfig
from pathlib import Path
from types import CodeType
from typing import Iterator

MIN_WORDS, MAX_WORDS = 3, 60
# Packages whose docstrings are library prose; tests, GUIs and vendored tools are left out.
PACKAGES = ("asyncio", "collections", "concurrent", "email", "html", "http", "importlib", "json", "logging",
            "multiprocessing", "sqlite3", "unittest", "urllib", "wsgiref", "xml", "xmlrpc", "zoneinfo")  # fmt: skip
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_CODE_HINTS = (">>>", "...", "::", "==", "->", "=", "{", "}", "[", "]", "\\", "$", "#", "|", "`", "*")


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
    seen: dict[str, None] = {}
    for path in source_files():
        for doc in strings(path):
            for sentence in split_sentences(doc):
                seen.setdefault(sentence, None)
    return tuple(seen)


def source_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(root.glob("*.py"))
    for package in PACKAGES:
        files.extend(sorted((root / package).rglob("*.py")))
    return files


def strings(path: Path) -> Iterator[str]:
    """Every string constant of a source file, depth first in code order, dedented like a docstring."""
    try:
        code = compile(path.read_text(encoding="utf-8"), str(path), "exec", dont_inherit=True)
    except (SyntaxError, ValueError, UnicodeDecodeError, OSError):
        return
    stack: list[CodeType] = [code]
    while stack:
        current = stack.pop()
        for const in current.co_consts:
            if isinstance(const, str) and " " in const:
                yield inspect.cleandoc(const)
        stack.extend(reversed([c for c in current.co_consts if isinstance(c, CodeType)]))


def split_sentences(doc: str) -> Iterator[str]:
    for paragraph in re.split(r"\n\s*\n", doc):
        lines = paragraph.splitlines()
        # indented lines are examples, signatures or parameter tables, not prose
        if not lines or any(line.startswith((" ", "\t")) for line in lines):
            continue
        text = " ".join(line.strip() for line in lines)
        for sentence in _SENTENCE_END.split(text):
            if is_prose(sentence):
                yield sentence


def is_prose(sentence: str) -> bool:
    words = sentence.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return False
    if not (sentence[0].isupper() and sentence[-1] in ".!?") or any(h in sentence for h in _CODE_HINTS):
        return False
    letters = sum(c.isalpha() for c in sentence)
    return letters >= 0.8 * (len(sentence) - sentence.count(" "))
