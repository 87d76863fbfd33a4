"""workers/runtimes/tokenizer.py's truncation direction, against transformers' own tokenizer cut
from the left and sentence-transformers encoding with ``truncation_side = "left"``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tiny_models
from appliance.config import ModelConfig
from workers.runtimes import Runtime, l2_normalize, load_runtime

# numbered words, so that which end was kept is plain to see
LONG = " ".join(f"word{i}" for i in range(200))
TEXTS = [LONG, "the quick brown fox", "model text vector search " * 40]


def load(path: Path, kind: str = "transformer") -> Runtime:
    return load_runtime(ModelConfig(name=f"test-{kind}", path=str(path), kind=kind, dtype="float32"), path)


@pytest.fixture(scope="module")
def tiny(tiny_transformer: Path) -> Runtime:
    return load(tiny_transformer)


@pytest.fixture(scope="module")
def cross(tiny_cross_encoder: Path) -> Runtime:
    return load(tiny_cross_encoder, "cross_encoder")


def hf_tokenizer(path: Path, side: str) -> object:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    tokenizer.truncation_side = side
    return tokenizer


@pytest.mark.parametrize("side", ["left", "right"])
def test_texts_are_cut_as_transformers_cuts_them_keeping_the_special_tokens(tiny: Runtime, tiny_transformer: Path,
                                                                            side: str) -> None:  # fmt: skip
    reference = hf_tokenizer(tiny_transformer, side)(TEXTS, truncation=True, max_length=tiny.max_length)["input_ids"]
    items = tiny.tokenize(TEXTS, truncate=True, direction=side)  # type: ignore[arg-type]
    assert [item.ids for item in items] == reference
    cls_id, sep_id = (tiny_models.vocabulary().index(t) for t in ("[CLS]", "[SEP]"))
    long = items[0]
    assert long.length == tiny.max_length and long.ids[0] == cls_id and long.ids[-1] == sep_id
    assert items[1].ids == tiny.tokenize(TEXTS[1:2], truncate=True)[0].ids  # short: nothing to cut


def test_left_keeps_the_end_and_right_the_beginning(tiny: Runtime) -> None:
    from tokenizers import Tokenizer

    decode = Tokenizer.from_str(tiny.tokenizer.full.to_str()).decode  # type: ignore[attr-defined]
    (left,) = tiny.tokenize([LONG], truncate=True, direction="left")
    (right,) = tiny.tokenize([LONG], truncate=True)
    assert decode(left.ids).replace(" ", "").endswith("word199")
    assert decode(right.ids).replace(" ", "").startswith("word0")
    assert "word199" not in decode(right.ids).replace(" ", "")


def test_token_ids_cut_left_keep_the_last_ids(tiny: Runtime) -> None:
    ids = list(range(5, 5 + 300))
    (left,) = tiny.tokenize([ids], truncate=True, direction="left")
    (right,) = tiny.tokenize([ids], truncate=True, direction="right")
    assert left.ids == ids[-128:] and right.ids == ids[:128]


def test_truncate_false_refuses_whatever_the_direction(tiny: Runtime) -> None:
    from workers.runtimes import InputTooLong

    with pytest.raises(InputTooLong):
        tiny.tokenize([LONG], truncate=False, direction="left")


def test_pairs_are_cut_from_the_side_asked(cross: Runtime, tiny_cross_encoder: Path) -> None:
    query, documents = "a query about the capital", [LONG, "paris"]
    for side in ("left", "right"):
        reference = hf_tokenizer(tiny_cross_encoder, side)([query] * 2, documents, truncation=True,
                                                           max_length=cross.max_length)["input_ids"]  # fmt: skip
        items = cross.tokenize_pairs(query, documents, truncate=True, direction=side)  # type: ignore[arg-type]
        assert [item.ids for item in items] == reference


def test_left_cut_vectors_match_sentence_transformers_cutting_left(tiny: Runtime, tiny_transformer: Path) -> None:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_transformer), device="cpu")
    model.tokenizer.truncation_side = "left"
    reference = model.encode(TEXTS, convert_to_numpy=True)
    ours = l2_normalize(tiny.forward(tiny.tokenize(TEXTS, truncate=True, direction="left")))
    np.testing.assert_allclose(ours, reference, atol=2e-6)
    right = l2_normalize(tiny.forward(tiny.tokenize(TEXTS, truncate=True)))
    assert not np.allclose(ours[0], right[0], atol=1e-3)
