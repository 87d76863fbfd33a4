"""bench/data/build_corpus.py: the shipped corpus is what the script builds from Debian's KJV."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from bench.corpus import CORPUS_FILE

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "data" / "build_corpus.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_corpus", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.usefixtures("bible_installed")
def test_the_shipped_corpus_is_the_one_the_script_builds() -> None:
    built = load_script().build()
    assert built == CORPUS_FILE.read_text(encoding="utf-8").splitlines()
    assert len(built) == 5000 and len(set(built)) == 5000


def test_a_verse_is_kept_only_as_one_prose_sentence() -> None:
    script = load_script()
    assert script.is_sentence("And God said, Let there be light: and there was light.")
    assert not script.is_sentence("And he said,")  # runs on into the next verse
    assert not script.is_sentence("Jesus wept.")  # two words: too short to embed meaningfully
