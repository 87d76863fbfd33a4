"""workers/distill.py: model2vec's distill, offline, into a directory our static runtime loads."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from appliance.config import ModelConfig
from workers.distill import INSTALL_HINT, DistillError, distill
from workers.runtimes import l2_normalize, load_runtime

TEXTS = ["The quick brown fox jumps over the lazy dog.", "paris is the capital of france", "short"]


@pytest.mark.slow
def test_distill_the_tiny_transformer_and_load_it_with_the_static_runtime(tiny_transformer: Path,
                                                                        tmp_path: Path) -> None:  # fmt: skip
    pytest.importorskip("model2vec.distill", reason=f"model2vec is not installed ({INSTALL_HINT})")
    from model2vec import StaticModel

    out = tmp_path / "models" / "tiny-static"
    out.mkdir(parents=True)
    (out / "stale-file").write_text("from an older distill")
    assert distill(tiny_transformer, out, pca_dims=16) == out
    assert not (out / "stale-file").exists(), "the old directory must be replaced, not merged"
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny-static"], "no temporary directories left"
    runtime = load_runtime(ModelConfig(name="tiny-static", path=str(out), kind="static"), out)
    assert runtime.normalize
    vectors = l2_normalize(runtime.forward(runtime.tokenize(TEXTS, truncate=True)))
    assert runtime.dim == 16 and vectors.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    reference = StaticModel.from_pretrained(str(out))
    # model2vec averages in fp16 (its storage dtype); the same mean taken in fp32 must match ours exactly
    table = np.asarray(reference.embedding, dtype=np.float32)
    means = np.stack([table[ids].mean(axis=0) for ids in reference.tokenize(TEXTS)])
    np.testing.assert_allclose(vectors, means / np.linalg.norm(means, axis=1, keepdims=True), atol=1e-6)
    fp16 = reference.encode(TEXTS).astype(np.float32)
    assert np.sum(vectors * fp16, axis=1).min() >= 0.999


def test_a_directory_without_a_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DistillError, match="no config.json"):
        distill(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_missing_model2vec_says_how_to_install_it(tiny_transformer: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setitem(sys.modules, "model2vec.distill", None)  # makes the import fail
    with pytest.raises(DistillError) as caught:
        distill(tiny_transformer, tmp_path / "out")
    assert INSTALL_HINT in str(caught.value) and not (tmp_path / "out").exists()
