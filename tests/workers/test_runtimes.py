"""workers/runtimes: the three model runtimes against independent references.

Tiny random models (built per session by ``tiny_models``) check the contract quickly; the real
MiniLM is checked against sentence-transformers itself. A runtime answers unnormalised vectors and
raw logits; ``served`` applies the model's default norm as the worker loop does.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tiny_models
from appliance.config import ModelConfig
from appliance.protocol import ModelInfo
from bench.corpus import sentences
from workers.runtimes import (
    InputTooLong,
    InvalidInput,
    ModelLoadError,
    Runtime,
    Tokenized,
    cosine_scores,
    l2_normalize,
    load_runtime,
    sigmoid,
)

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "short",
    "",
    "Paris is the capital of France, and the river that runs through the city is long.",
    "model text vector search query document embedding rank score " * 3,
]
REPO = Path(__file__).resolve().parents[2]


def load(path: Path, kind: str = "transformer", **fields: Any) -> Runtime:
    """float32 unless a test asks otherwise: these tests hold the runtimes to their references'
    float32 answers (``auto`` may pick bf16 on this CPU; ``tests/workers/runtimes/test_precision.py``)."""
    fields.setdefault("dtype", "float32")
    return load_runtime(ModelConfig(name=f"test-{kind}", path=str(path), kind=kind, **fields), path)


def served(runtime: Runtime, items: list[Tokenized]) -> np.ndarray:
    """The vectors a request that leaves ``normalize`` out gets: the model's default applied."""
    vectors = runtime.forward(items)
    return l2_normalize(vectors) if runtime.normalize else vectors


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def tiny(tiny_transformer: Path) -> Runtime:
    return load(tiny_transformer)


@pytest.fixture(scope="module")
def static(tiny_static: Path) -> Runtime:
    return load(tiny_static, "static")


@pytest.fixture(scope="module")
def cross(tiny_cross_encoder: Path) -> Runtime:
    return load(tiny_cross_encoder, "cross_encoder")


# ---- transformer ------------------------------------------------------------------------------
@pytest.mark.parametrize(("pooling", "normalize"), [("mean", True), ("cls", True), ("max", False),
                                                     (["mean", "max"], True), ("lasttoken", False)])  # fmt: skip
def test_tiny_transformer_matches_sentence_transformers(tmp_path: Path, pooling: str | list[str],
                                                        normalize: bool) -> None:  # fmt: skip
    from sentence_transformers import SentenceTransformer

    path = tiny_models.make_tiny_transformer(tmp_path, pooling=pooling, normalize=normalize)
    runtime = load(path)
    reference = SentenceTransformer(str(path), device="cpu").encode(TEXTS, convert_to_numpy=True)
    assert runtime.normalize == normalize
    ours = served(runtime, runtime.tokenize(TEXTS, truncate=True))
    assert ours.dtype == np.float32 and ours.shape == reference.shape == (len(TEXTS), runtime.dim)
    np.testing.assert_allclose(ours, reference, atol=2e-6)
    norms = np.linalg.norm(ours, axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5) == normalize


def test_padding_to_the_batch_longest_row_does_not_change_vectors(tiny: Runtime) -> None:
    items = tiny.tokenize(TEXTS, truncate=True)
    together = tiny.forward(items)
    alone = np.concatenate([tiny.forward([item]) for item in items])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert tiny.forward([]).shape == (0, tiny.dim)


def test_max_length_is_the_smallest_stated_limit(tmp_path: Path) -> None:
    path = tiny_models.make_tiny_transformer(tmp_path, max_length=16)
    assert load(path).max_length == 16
    assert load(path, max_length=8).max_length == 8
    assert load(path, max_length=1000).max_length == 16
    config = json.loads((path / "sentence_bert_config.json").read_text())
    (path / "sentence_bert_config.json").write_text(json.dumps({**config, "max_seq_length": 12}))
    assert load(path).max_length == 12


def test_truncation_cuts_to_max_length_and_keeps_the_special_tokens(tiny: Runtime) -> None:
    long_text = " ".join(["word"] * 500)
    (item,) = tiny.tokenize([long_text], truncate=True)
    cls_id, sep_id = (tiny_models.vocabulary().index(t) for t in ("[CLS]", "[SEP]"))
    assert item.length == len(item.ids) == tiny.max_length == 128
    assert item.ids[0] == cls_id and item.ids[-1] == sep_id and item.type_ids is None


@pytest.mark.parametrize("kind", ["transformer", "static"])
def test_truncate_false_refuses_a_long_input_naming_its_index(kind: str, tiny_transformer: Path,
                                                              tiny_static: Path) -> None:  # fmt: skip
    runtime = load(tiny_transformer if kind == "transformer" else tiny_static, kind, max_length=20)
    inputs = ["fine", "also fine", " ".join(["word"] * 30), "fine again"]
    with pytest.raises(InputTooLong) as caught:
        runtime.tokenize(inputs, truncate=False)
    assert (caught.value.index, caught.value.max_length) == (2, 20) and caught.value.length > 20
    assert "input 2 " in str(caught.value) and "20" in str(caught.value)
    caught.value.index = -1  # the bi-encoder rerank renumbers: -1 is the query
    assert str(caught.value).startswith("the query")
    assert [t.length for t in runtime.tokenize(inputs, truncate=True)][2] == 20


def test_token_id_input_is_used_as_given(tiny: Runtime) -> None:
    (from_text,) = tiny.tokenize(["the quick brown fox"], truncate=True)
    items = tiny.tokenize([from_text.ids, "the quick brown fox", [7, 8, 9]], truncate=True)
    assert items[0].ids == from_text.ids and items[2].ids == [7, 8, 9]  # nothing added
    vectors = tiny.forward(items)
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)
    too_long = list(range(5, 5 + 200))
    assert tiny.tokenize([too_long], truncate=True)[0].ids == too_long[:128]
    with pytest.raises(InputTooLong) as caught:
        tiny.tokenize(["ok", too_long], truncate=False)
    assert caught.value.index == 1


@pytest.mark.parametrize(("bad", "words"), [([1, 2, 100_000], "100000"), ([-1], "-1"), ([], "empty"),
                                            ([1.5], "integers"), (3.0, "float")])  # fmt: skip
def test_invalid_token_ids_are_refused_naming_the_index(tiny: Runtime, static: Runtime, bad: object,
                                                        words: str) -> None:  # fmt: skip
    for runtime in (tiny, static):
        with pytest.raises(ValueError) as caught:
            runtime.tokenize(["fine", [3, 4], bad], truncate=True)
        assert isinstance(caught.value, InvalidInput) and caught.value.index == 2
        assert "input 2" in str(caught.value) and words in str(caught.value)


@pytest.mark.slow
def test_minilm_matches_sentence_transformers_on_100_sentences(minilm_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    texts = sentences(100, seed=7)
    texts[:4] = [" ".join(sentences(40, seed=i)) for i in range(4)]  # far past 256 tokens: truncated
    texts[4] = ""
    runtime = load(minilm_path)
    assert (runtime.dim, runtime.max_length, runtime.dtype) == (384, 256, "float32")
    items = runtime.tokenize(texts, truncate=True)
    assert max(t.length for t in items) == 256 and min(t.length for t in items) == 2
    ours = np.concatenate([served(runtime, items[i : i + 16]) for i in range(0, len(items), 16)])
    reference = SentenceTransformer(str(minilm_path), device="cpu").encode(texts, batch_size=16)
    assert cosine_rows(ours, reference).min() >= 0.99999
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_compiled_model_gives_the_eager_vectors(tiny_transformer: Path, tiny: Runtime) -> None:
    compiled = load(tiny_transformer, compile=True)
    compiled.warmup()
    for batch in (TEXTS[:1], TEXTS, TEXTS[1:4]):  # one row, several widths: no recompiles needed
        items = tiny.tokenize(batch, truncate=True)
        np.testing.assert_allclose(compiled.forward(items), tiny.forward(items), atol=1e-5)


def test_bfloat16_weights_stay_close_to_float32(tiny_transformer: Path, tiny: Runtime) -> None:
    half = load(tiny_transformer, dtype="bfloat16")
    assert half.dtype == "bfloat16" and half.info().dtype == "bfloat16"
    items = tiny.tokenize(TEXTS, truncate=True)
    out = half.forward(items)
    assert out.dtype == np.float32 and cosine_rows(out, tiny.forward(items)).min() > 0.99


def test_info_describes_the_runtime(tiny: Runtime, static: Runtime, cross: Runtime) -> None:
    assert tiny.info() == ModelInfo("test-transformer", "transformer", 32, 128, "cpu", "float32", True)
    assert static.info() == ModelInfo("test-static", "static", 16, 512, "cpu", "float32", True)
    assert cross.info() == ModelInfo("test-cross_encoder", "cross_encoder", 0, 128, "cpu", "float32", False)
    for runtime in (tiny, static, cross):
        runtime.warmup()


# ---- static -----------------------------------------------------------------------------------
def test_static_vector_is_the_normalised_mean_of_its_token_vectors(static: Runtime, tiny_static: Path) -> None:
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    table = load_file(str(tiny_static / "model.safetensors"))["embeddings"]
    tokenizer = Tokenizer.from_file(str(tiny_static / "tokenizer.json"))
    texts = [t for t in TEXTS if t]
    expected = np.stack([table[tokenizer.encode(t, add_special_tokens=False).ids].mean(axis=0) for t in texts])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(served(static, static.tokenize(texts, truncate=True)), expected, atol=1e-6)


def test_static_drops_unknown_tokens_and_an_empty_input_is_a_zero_vector(static: Runtime) -> None:
    items = static.tokenize(["\u2713\u2713", "", "fox"], truncate=True)
    assert [t.length for t in items] == [0, 0, 1] and all(t.type_ids is None for t in items)
    vectors = served(static, items)
    assert not vectors[:2].any() and math.isclose(float(np.linalg.norm(vectors[2])), 1.0, rel_tol=1e-6)


def test_static_matches_model2vec(tiny_static: Path, static: Runtime) -> None:
    model2vec = pytest.importorskip("model2vec", reason="model2vec is the reference here; it is a build-time tool")
    reference = model2vec.StaticModel.from_pretrained(str(tiny_static)).encode(TEXTS)
    np.testing.assert_allclose(served(static, static.tokenize(TEXTS, truncate=True)), reference, atol=1e-6)


@pytest.mark.slow
def test_the_distilled_minilm_static(minilm_path: Path, tmp_path: Path) -> None:
    """The default static model: the one `make serve` built, else distilled here (about a minute)."""
    path = REPO / ".state" / "models" / "minilm-static"
    if not (path / "model.safetensors").is_file():
        from workers.distill import distill

        path = distill(minilm_path, tmp_path / "minilm-static", pca_dims=256)
    runtime = load(path, "static")
    a, b, c = served(runtime, runtime.tokenize(["The cat sat on the mat.", "A cat was sitting on a rug.",
                                                "Quarterly revenue grew by four percent."], truncate=True))  # fmt: skip
    assert runtime.dim == 256 and float(a @ b) > float(a @ c)


# ---- cross-encoder ----------------------------------------------------------------------------
def test_cross_encoder_gives_one_logit_per_pair(cross: Runtime, tiny_cross_encoder: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    query, documents = "a query about the capital of france", ["paris is the capital", "dogs", "x " * 300]
    items = cross.tokenize_pairs(query, documents, truncate=True)
    assert all(t.type_ids is not None and len(t.type_ids) == t.length for t in items)
    logits = cross.forward(items)
    scores = sigmoid(logits)
    assert logits.shape == (3,) and logits.dtype == np.float32 and ((scores > 0) & (scores < 1)).all()
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_cross_encoder))
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_cross_encoder)).eval()
    features = tokenizer([query] * 3, documents, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.inference_mode():
        expected = model(**features).logits[:, 0]
    np.testing.assert_allclose(logits, expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(scores, torch.sigmoid(expected).numpy(), atol=1e-6)


def test_cross_encoder_refuses_a_long_pair_and_embedding(cross: Runtime) -> None:
    with pytest.raises(InputTooLong) as caught:
        cross.tokenize_pairs("query", ["fine", "word " * 200], truncate=False)
    assert caught.value.index == 1 and caught.value.max_length == 128
    with pytest.raises(TypeError):
        cross.tokenize(["text"], truncate=True)


def test_embedders_refuse_pairs(tiny: Runtime, static: Runtime) -> None:
    for runtime in (tiny, static):
        with pytest.raises(TypeError, match="does not score"):
            runtime.tokenize_pairs("q", ["d"], truncate=True)


# ---- load errors ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["transformer", "static", "cross_encoder"])
def test_a_bad_path_raises_model_load_error_naming_model_and_path(kind: str, tmp_path: Path) -> None:
    for path in (tmp_path / "does-not-exist", tmp_path):  # missing, and present but empty
        with pytest.raises(ModelLoadError) as caught:
            load_runtime(ModelConfig(name="my-model", path=str(path), kind=kind), path)
        assert "'my-model'" in str(caught.value) and str(path) in str(caught.value)


def test_an_unsupported_sentence_transformers_module_is_a_load_error(tmp_path: Path) -> None:
    path = tiny_models.make_tiny_transformer(tmp_path)
    modules = json.loads((path / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (path / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelLoadError, match="Dense"):
        load(path)


def test_a_multi_label_classifier_is_not_taken_as_a_cross_encoder(tmp_path: Path) -> None:
    from transformers import BertForSequenceClassification

    path = tiny_models.make_tiny_cross_encoder(tmp_path)
    BertForSequenceClassification(tiny_models.bert_config(128, num_labels=3)).save_pretrained(path)
    with pytest.raises(ModelLoadError, match="one output label"):
        load(path, "cross_encoder")


# ---- bi-encoder rerank ------------------------------------------------------------------------
def test_cosine_scores() -> None:
    query = np.array([3.0, 4.0], dtype=np.float32)
    docs = np.array([[6.0, 8.0], [-3.0, -4.0], [4.0, -3.0], [0.0, 0.0]], dtype=np.float32)
    scores = cosine_scores(query, docs)
    assert scores.dtype == np.float32
    np.testing.assert_allclose(scores, [1.0, -1.0, 0.0, 0.0], atol=1e-6)
    assert cosine_scores(query, docs[:0]).shape == (0,)
