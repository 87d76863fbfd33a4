"""``gateway/tokenization.py`` and ``gateway/model_files.py`` against the ``tokenizers`` library
itself, on the tiny random models' real directories: the same ids, TEI's byte offsets and token
texts, special tokens as each model kind adds them, decode, and one load per model."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from appliance.config import Config, ModelConfig
from gateway import errors
from gateway.backend import ModelCard
from appliance.model_layout import pooling_modes
from gateway.model_files import ModelFiles, read_model_files, tei_pooling
from gateway.tokenization import ModelTokenizer, Tokenizers, byte_offsets

TEXTS = ["Hello world, the quick brown fox.", "Paris is the CAPITAL of France", "naïve café déjà vu", "x"]


def reference(path: Path) -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def model(path: Path, kind: str = "transformer") -> ModelConfig:
    return ModelConfig(name="m", path=str(path), kind=kind, main=kind != "cross_encoder")  # type: ignore[arg-type]


def test_ids_offsets_and_texts_are_the_librarys(tiny_transformer: Path) -> None:
    ours = ModelTokenizer.load(read_model_files(model(tiny_transformer), ".state"))
    theirs = reference(tiny_transformer)
    for text, tokens in zip(TEXTS, ours.tokenize(TEXTS)):
        expected = theirs.encode(text)
        assert [t.id for t in tokens] == expected.ids
        assert [t.special for t in tokens] == [bool(m) for m in expected.special_tokens_mask]
        raw = text.encode()
        for token, (start, stop), name in zip(tokens, expected.offsets, expected.tokens):
            if token.special:
                assert (token.text, token.start, token.stop) == (name, None, None)
            else:  # TEI's offsets are UTF-8 bytes into the text as sent, its text that slice
                assert token.text == text[start:stop] == raw[token.start:token.stop].decode()


def test_special_tokens_can_be_left_out(tiny_transformer: Path) -> None:
    ours = ModelTokenizer.load(read_model_files(model(tiny_transformer), ".state"))
    [tokens] = ours.tokenize(["hello world"], add_special_tokens=False)
    assert [t.id for t in tokens] == reference(tiny_transformer).encode("hello world", add_special_tokens=False).ids
    assert not any(t.special for t in tokens)


def test_a_static_model_adds_no_special_tokens(tiny_static: Path) -> None:
    ours = ModelTokenizer.load(read_model_files(model(tiny_static, "static"), ".state"))
    [tokens] = ours.tokenize(["hello world"])
    assert [t.id for t in tokens] == reference(tiny_static).encode("hello world", add_special_tokens=False).ids


def test_lowercase_models_are_lowercased_first(tmp_path: Path, tiny_transformer: Path) -> None:
    # a tokenizer that keeps case, in a directory whose sentence_bert_config asks for lowercase
    shutil.copytree(tiny_transformer, tmp_path, dirs_exist_ok=True)
    spec = json.loads((tmp_path / "tokenizer.json").read_text())
    spec["normalizer"]["lowercase"] = False
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128, "do_lower_case": True}))
    files = read_model_files(model(tmp_path), ".state")
    assert files.lowercase
    [tokens] = ModelTokenizer.load(files).tokenize(["Paris CAPITAL"])
    assert [t.id for t in tokens] == reference(tmp_path).encode("paris capital").ids
    assert [t.text for t in tokens if not t.special] == ["Paris", "CAPITAL"]  # shown as sent


def test_decode_is_the_librarys(tiny_transformer: Path) -> None:
    ours = ModelTokenizer.load(read_model_files(model(tiny_transformer), ".state"))
    theirs = reference(tiny_transformer)
    batches = [theirs.encode(t).ids for t in TEXTS]
    assert ours.decode(batches) == [theirs.decode(ids) for ids in batches]
    assert ours.decode(batches, skip_special_tokens=False) == [theirs.decode(ids, skip_special_tokens=False)
                                                               for ids in batches]  # fmt: skip
    assert ours.unknown_id(batches) is None
    assert ours.unknown_id([[1, ours.vocab_size + 3]]) == ours.vocab_size + 3


def test_a_text_the_library_refuses_is_a_tokenizer_error(tiny_transformer: Path) -> None:
    ours = ModelTokenizer.load(read_model_files(model(tiny_transformer), ".state"))
    with pytest.raises(errors.TokenizerFailed):
        ours.tokenize(["lone \ud800 surrogate"])


def test_byte_offsets() -> None:
    assert byte_offsets("ab") == [0, 1, 2]
    assert byte_offsets("aé€😀") == [0, 1, 3, 6, 10]


def test_model_files_of_each_kind(tiny_transformer: Path, tiny_cross_encoder: Path, tiny_static: Path) -> None:
    files = read_model_files(model(tiny_transformer), ".state")
    assert (files.tokenizer_file, files.pooling, files.special_tokens) == (tiny_transformer / "tokenizer.json",
                                                                           "mean", True)  # fmt: skip
    assert read_model_files(model(tiny_cross_encoder, "cross_encoder"), ".state").labels == {"0": "LABEL_0"}
    assert not read_model_files(model(tiny_static, "static"), ".state").special_tokens
    assert tei_pooling(pooling_modes({"pooling_mode": "lasttoken"})) == "last_token"
    assert tei_pooling(pooling_modes({"pooling_mode": ["cls", "mean"]})) == "cls+mean"
    assert tei_pooling(pooling_modes({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})) == "cls"


def test_a_directory_without_tokenizer_json_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        read_model_files(model(tmp_path, "cross_encoder"), ".state")


def test_each_model_is_loaded_once(tiny_transformer: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = Config(models=[model(tiny_transformer)])
    card = ModelCard(name="m", kind="transformer", dim=32, max_length=128, main=True, workers=[0])
    cache = Tokenizers()
    loads: list[ModelFiles] = []
    load = ModelTokenizer.load

    def counted(files: ModelFiles) -> ModelTokenizer:
        loads.append(files)
        return load(files)

    monkeypatch.setattr(ModelTokenizer, "load", staticmethod(counted))

    async def many() -> list[ModelTokenizer]:
        return list(await asyncio.gather(*(cache.of(card, config) for _ in range(8))))

    found = asyncio.run(many())
    assert len(loads) == 1 and all(t is found[0] for t in found)
