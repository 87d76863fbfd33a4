"""``workers/runtimes/architectures.py`` through the transformer runtime: a tiny random model of
every listed architecture (``tiny_models.make_tiny_architecture``) gives sentence-transformers'
vectors at float32, the pooling modes not covered in ``test_runtimes.py`` match too, a causal
model's rows do not depend on their batch, and an unlisted ``model_type`` is a clear load error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tiny_models
from appliance.config import ModelConfig
from workers.runtimes import ModelLoadError, Runtime, load_runtime
from workers.runtimes.architectures import SUPPORTED

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "short",
    "",
    "Paris is the capital of France, and the river that runs through the city is long.",
    "model text vector search query document embedding rank score " * 6,  # cut at max_length
]


def load(path: Path, **fields: Any) -> Runtime:
    """float32: the vectors are held to sentence-transformers' float32 answers."""
    return load_runtime(ModelConfig(name="arch", path=str(path), kind="transformer", dtype="float32", **fields), path)


def reference(path: Path, texts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu").encode(texts, convert_to_numpy=True)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_every_listed_architecture_has_a_tiny_model() -> None:
    assert set(tiny_models.ARCHITECTURES) == set(SUPPORTED)


@pytest.mark.parametrize("model_type", tiny_models.ARCHITECTURES)
def test_architecture_matches_sentence_transformers(tmp_path: Path, model_type: str) -> None:
    path = tiny_models.make_tiny_architecture(tmp_path, model_type)
    runtime = load(path)
    ours = runtime.forward(runtime.tokenize(TEXTS, truncate=True))
    theirs = reference(path, TEXTS)
    assert ours.dtype == np.float32 and ours.shape == theirs.shape == (len(TEXTS), runtime.dim)
    assert cosines(ours, theirs).min() >= 0.9999
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


@pytest.mark.parametrize("pooling", ["mean_sqrt_len_tokens", "weightedmean"])
def test_pooling_mode_matches_sentence_transformers(tmp_path: Path, pooling: str) -> None:
    path = tiny_models.make_tiny_transformer(tmp_path, pooling=pooling, normalize=False)
    runtime = load(path)
    ours = runtime.forward(runtime.tokenize(TEXTS, truncate=True))
    np.testing.assert_allclose(ours, reference(path, TEXTS), atol=2e-6)


@pytest.mark.parametrize("model_type", tiny_models.DECODERS)
def test_a_causal_model_row_does_not_depend_on_its_batch(tmp_path: Path, model_type: str) -> None:
    runtime = load(tiny_models.make_tiny_architecture(tmp_path, model_type))
    items = runtime.tokenize(TEXTS, truncate=True)
    together = runtime.forward(items)
    alone = np.concatenate([runtime.forward([item]) for item in items])
    np.testing.assert_allclose(together, alone, atol=1e-5)


@pytest.mark.parametrize("model_type", ["nomic_bert", "t5", ""])
def test_an_unlisted_model_type_is_a_load_error_naming_it_and_the_supported(tmp_path: Path, model_type: str) -> None:
    path = tiny_models.make_tiny_transformer(tmp_path)
    config = json.loads((path / "config.json").read_text())
    # nomic_bert ships its own code (auto_map): refused before transformers asks to run it
    (path / "config.json").write_text(json.dumps({**config, "model_type": model_type,
                                                  "auto_map": {"AutoModel": "modeling_nomic.NomicModel"}}))  # fmt: skip
    with pytest.raises(ModelLoadError) as caught:
        load(path)
    message = str(caught.value)
    assert f"model_type {model_type!r} is not supported by the transformer runtime" in message
    assert "supported: bert, roberta" in message and "'arch'" in message and str(path) in message
