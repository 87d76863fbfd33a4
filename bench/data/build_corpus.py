"""Builds ``corpus.txt``: 5,000 verses of the King James Bible (1611, public domain), one a line.

Source: Debian's ``bible-kjv`` package (``apt-get install bible-kjv``; its ``bible-kjv-text``
dependency holds the text, read through the ``bible`` program), so the build needs no network.
Verses are kept when they read as one sentence of prose for an embedder: 3..60 words, a capital
first and a full stop, question or exclamation mark last. Duplicates go, a seeded draw picks
5,000, and they are written in the book's order (stable diffs). Verse lengths run from a few
tokens to ~100, which is what length-sorted batching needs to show its effect.

    python bench/data/build_corpus.py            # rewrites bench/data/corpus.txt
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).with_name("corpus.txt")
SIZE = 5000
SEED = 1611
MIN_WORDS, MAX_WORDS = 3, 60
WHOLE_BOOK = "Gen1:1-Rev22:21"
_VERSE = re.compile(r"^\S+\d+:\d+ (.+)$")  # "Ge1:1 In the beginning ..."


def verses() -> list[str]:
    if shutil.which("bible") is None:
        raise SystemExit("the `bible` program is missing: apt-get install bible-kjv")
    text = subprocess.run(["bible", "-f", WHOLE_BOOK], capture_output=True, text=True, check=True,
                          timeout=120).stdout  # fmt: skip
    return [m.group(1).strip() for m in map(_VERSE.match, text.splitlines()) if m]


def is_sentence(verse: str) -> bool:
    return MIN_WORDS <= len(verse.split()) <= MAX_WORDS and verse[0].isupper() and verse[-1] in ".!?"


def build() -> list[str]:
    kept = list(dict.fromkeys(v for v in verses() if is_sentence(v)))
    chosen = sorted(random.Random(SEED).sample(range(len(kept)), SIZE))
    return [kept[i] for i in chosen]


def main() -> int:
    lines = build()
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{OUT}: {len(lines)} verses", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
