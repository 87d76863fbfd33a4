"""workers/runtimes/precision.py: what ``dtype = "auto"`` picks, and the guard that checks a
reduced-precision model against its float32 answers before it serves.

Whether this CPU has native bf16 must not decide what these tests see: each test states the
CPU's capabilities (torch's detected flags) it runs under.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import tiny_models
from appliance.config import ModelConfig
from workers.runtimes import architectures, cross_encoder, precision, transformer
from workers.runtimes.precision import Agreement, agreement, auto_dtype, cpu_has_native_bf16, load_guarded

BF16_CPU = {"avx512_f": True, "avx512_bf16": True, "amx_bf16": False}
PLAIN_CPU = {"avx512_f": True, "avx2": True}


@pytest.fixture
def cpu_flags(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The capabilities torch reports, as the test sets them (a native-bf16 CPU by default)."""
    flags: dict[str, Any] = dict(BF16_CPU)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: flags)
    return flags


# ---- which dtype -------------------------------------------------------------------------------
@pytest.mark.parametrize(("flags", "native"), [(BF16_CPU, True), ({"amx_bf16": True}, True),
                                               (PLAIN_CPU, False), ({}, False)])  # fmt: skip
def test_native_bf16_is_read_from_the_cpu_flags(flags: dict[str, Any], native: bool) -> None:
    assert cpu_has_native_bf16(flags) is native


def test_auto_is_fp16_on_cuda_bf16_on_a_native_bf16_cpu_and_fp32_elsewhere() -> None:
    assert auto_dtype("cuda:0", PLAIN_CPU) == torch.float16
    assert auto_dtype("cpu", BF16_CPU) == torch.bfloat16
    assert auto_dtype("cpu", PLAIN_CPU) == torch.float32


def test_the_detection_reads_this_machine_without_failing() -> None:
    assert isinstance(cpu_has_native_bf16(), bool)


# ---- agreement ---------------------------------------------------------------------------------
def test_agreement_is_the_mean_and_lowest_row_cosine() -> None:
    reference = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=np.float32)
    candidate = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]], dtype=np.float32)
    found = agreement(reference, candidate)
    assert found.lowest == pytest.approx(2**-0.5) and found.mean == pytest.approx((2 + 2**-0.5) / 3)
    assert agreement(reference, reference) == Agreement(1.0, 1.0)


def test_scores_agree_as_one_vector() -> None:
    scores = np.array([3.0, -1.0, 0.5], dtype=np.float32)
    assert agreement(scores, scores * 2).lowest == pytest.approx(1.0)
    assert agreement(scores, -scores).lowest == pytest.approx(-1.0)


def test_a_low_mean_or_one_bad_row_fails() -> None:
    assert Agreement(0.99995, 0.9999).passes()
    assert not Agreement(0.99989, 0.9999).passes()
    assert not Agreement(0.99995, 0.99989).passes()  # every row is held to the product's 0.9999


def test_the_row_bound_is_what_the_product_promises() -> None:
    assert precision.MIN_ROW_COSINE == 0.9999 == precision.MIN_COSINE


# ---- the guard on real (tiny) models -----------------------------------------------------------
class Loads:
    """``load_at`` for the guard, counting the dtypes it was asked for."""

    def __init__(self, module: Any, model: ModelConfig, path: Path) -> None:
        self.module, self.model, self.path, self.asked = module, model, path, []

    def __call__(self, dtype: torch.dtype) -> Any:
        self.asked.append(dtype)
        return self.module._load(self.model, self.path, "cpu", dtype)


def transformer_loads(path: Path, dtype: str = "auto") -> Loads:
    return Loads(transformer, ModelConfig(name="tiny", path=str(path), dtype=dtype), path)


def test_auto_serves_bf16_when_it_agrees_with_fp32(tiny_transformer: Path, cpu_flags: dict[str, Any]) -> None:
    loads = transformer_loads(tiny_transformer)
    runtime, verdict = load_guarded(loads, "auto", "cpu")
    assert verdict.dtype == torch.bfloat16 and verdict.agreement.passes() and verdict.agreement.mean < 1.0
    assert runtime.dtype == "bfloat16" and next(runtime.module.parameters()).dtype == torch.bfloat16
    assert loads.asked == [torch.float32]  # loaded once, checked at fp32, cast down
    vectors = runtime.forward(runtime.sample(["a text", "another"]))
    assert vectors.dtype == np.float32 and vectors.shape == (2, runtime.dim)


def test_auto_keeps_no_short_rows_module_when_the_cast_alone_meets_the_bounds(
        tiny_transformer: Path, cpu_flags: dict[str, Any]) -> None:  # fmt: skip
    """Where every probe row is within the bounds at the reduced dtype (fp16 on a GPU, a model that
    drifts less), the short rows' split would only cost memory and a pass: it is dropped."""
    runtime, verdict = load_guarded(transformer_loads(tiny_transformer), "auto", "cpu", min_cosine=0.5,
                                    min_row_cosine=0.5)  # fmt: skip
    assert verdict.dtype == torch.bfloat16 and runtime.short is None and runtime.short_max_tokens == 0
    whole = runtime.forward(runtime.sample(["ok", "a text that is somewhat longer than twelve tokens, by a margin"]))
    assert whole.shape == (2, runtime.dim) and np.isfinite(whole).all()


def test_auto_falls_back_to_a_fresh_fp32_load_and_logs_the_figure(
        tiny_transformer: Path, cpu_flags: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    loads = transformer_loads(tiny_transformer)
    with caplog.at_level(logging.WARNING, logger=precision.log.name):
        runtime, verdict = load_guarded(loads, "auto", "cpu", min_cosine=1.01)  # a bound no model meets
    assert verdict.dtype == torch.float32 and runtime.dtype == "float32"
    assert next(runtime.module.parameters()).dtype == torch.float32
    assert loads.asked == [torch.float32, torch.float32]  # never cast back up: loaded afresh
    assert f"{verdict.agreement.mean:.6f}" in caplog.text and "serving float32" in caplog.text


def test_auto_on_a_cpu_without_native_bf16_loads_fp32_unchecked(tiny_transformer: Path,
                                                                cpu_flags: dict[str, Any]) -> None:  # fmt: skip
    cpu_flags.clear()
    cpu_flags.update(PLAIN_CPU)
    loads = transformer_loads(tiny_transformer)
    runtime, verdict = load_guarded(loads, "auto", "cpu")
    assert verdict.dtype == torch.float32 and verdict.agreement == Agreement() and loads.asked == [torch.float32]


def test_an_explicit_dtype_is_honoured_below_the_bound(tiny_transformer: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    loads = transformer_loads(tiny_transformer, "bfloat16")
    with caplog.at_level(logging.WARNING, logger=precision.log.name):
        runtime, verdict = load_guarded(loads, "bfloat16", "cpu", min_cosine=1.01)
    assert verdict.dtype == torch.bfloat16 and runtime.dtype == "bfloat16"
    assert "as configured" in caplog.text
    assert runtime.short is None  # configured, so computed at bf16 on every row, the short ones too


def test_float32_is_loaded_once_and_exact(tiny_transformer: Path, cpu_flags: dict[str, Any]) -> None:
    loads = transformer_loads(tiny_transformer, "float32")
    runtime, verdict = load_guarded(loads, "float32", "cpu")
    assert runtime.dtype == "float32" and loads.asked == [torch.float32] and verdict.agreement == Agreement()


def test_a_cross_encoder_is_guarded_on_its_scores(tiny_cross_encoder: Path, cpu_flags: dict[str, Any]) -> None:
    model = ModelConfig(name="tiny-ce", path=str(tiny_cross_encoder), kind="cross_encoder")
    runtime, verdict = load_guarded(Loads(cross_encoder, model, tiny_cross_encoder), "bfloat16", "cpu")
    assert runtime.dtype == "bfloat16" and -1.0 <= verdict.agreement.lowest <= 1.0
    scores = runtime.forward(runtime.tokenize_pairs("query", ["doc one", "doc two"], truncate=True))
    assert scores.dtype == np.float32 and scores.shape == (2,)


def test_the_runtime_loader_goes_through_the_guard(tiny_transformer: Path, cpu_flags: dict[str, Any]) -> None:
    from workers.runtimes import load_runtime

    served = load_runtime(ModelConfig(name="tiny", path=str(tiny_transformer)), tiny_transformer)
    assert served.dtype == "bfloat16" and served.info().dtype == "bfloat16"
    cpu_flags.clear()
    assert load_runtime(ModelConfig(name="tiny", path=str(tiny_transformer)), tiny_transformer).dtype == "float32"


def test_minilm_serves_bf16_by_default_where_the_cpu_has_it(minilm_path: Path, cpu_flags: dict[str, Any]) -> None:
    """The embedded model passes the guard: bf16 is what an AVX-512 BF16 or AMX box serves, every
    probe row within the product's bound (its shortest rows with fp32 activations)."""
    loads = Loads(transformer, ModelConfig(name="minilm", path=str(minilm_path)), minilm_path)
    runtime, verdict = load_guarded(loads, "auto", "cpu")
    assert verdict.dtype == torch.bfloat16, str(verdict.agreement)
    assert verdict.agreement.lowest >= precision.MIN_ROW_COSINE
    assert runtime.short is not None  # bf16 alone answers "ok" below the bound: the split is kept


def test_minilm_all_in_bf16_fails_the_row_bound_and_auto_serves_fp32(
        minilm_path: Path, cpu_flags: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    """Without its short rows' fp32 activations, bf16 MiniLM answers "ok" at cosine ~0.99984: below the
    bound, so ``auto`` keeps its promise by serving fp32, and says why."""
    monkeypatch.setattr(precision, "SHORT_MAX_TOKENS", 0)
    loads = Loads(transformer, ModelConfig(name="minilm", path=str(minilm_path)), minilm_path)
    with caplog.at_level(logging.WARNING, logger=precision.log.name):
        runtime, verdict = load_guarded(loads, "auto", "cpu")
    assert verdict.dtype == torch.float32 and runtime.dtype == "float32"
    assert verdict.agreement.mean >= precision.MIN_COSINE > verdict.agreement.lowest  # the mean alone would pass
    assert f"{verdict.agreement.lowest:.6f}" in caplog.text and "serving float32" in caplog.text


# ---- short rows: fp32 activations, bf16 matmuls ---------------------------------------------
def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_a_cast_runtime_computes_its_short_rows_with_fp32_activations(tiny_transformer: Path) -> None:
    exact = transformer._load(ModelConfig(name="tiny", path=str(tiny_transformer)), tiny_transformer, "cpu",
                              torch.float32)  # fmt: skip
    served = transformer._load(ModelConfig(name="tiny", path=str(tiny_transformer)), tiny_transformer, "cpu",
                               torch.float32)  # fmt: skip
    served.cast(torch.bfloat16, short_max_tokens=precision.SHORT_MAX_TOKENS)
    assert next(served.module.parameters()).dtype == torch.bfloat16 and served.dtype == "bfloat16"
    assert served.short is not None and next(served.short.parameters()).dtype == torch.float32  # the embeddings
    short_layer, cast_layer = served.short.model.encoder.layer[0], served.module.model.encoder.layer[0]
    assert isinstance(short_layer.intermediate.dense, precision.ReducedMatmul)
    assert short_layer.intermediate.dense.weight is cast_layer.intermediate.dense.weight  # held once, in bf16
    texts = ["ok", "a", "the quick brown fox", "word " * 40, "paris is the capital of france " * 3, "7"]
    batch = served.sample(texts)
    short = np.array([item.length <= precision.SHORT_MAX_TOKENS for item in batch])
    assert short.any() and not short.all()
    reference, found, everywhere = exact.forward(batch), served.forward(batch), served.forward_padded(batch)
    closeness, bf16_closeness = cosine_rows(reference, found), cosine_rows(reference, everywhere)
    assert (closeness[short] >= precision.MIN_ROW_COSINE).all()
    assert closeness[short].min() > bf16_closeness[short].min()  # closer than bf16 everywhere
    long_rows = [item for item, is_short in zip(batch, short) if not is_short]
    np.testing.assert_allclose(found[~short], served.forward_padded(long_rows), rtol=1e-6, atol=1e-6)


def test_a_cast_without_short_rows_holds_one_module(tiny_transformer: Path) -> None:
    runtime = transformer._load(ModelConfig(name="tiny", path=str(tiny_transformer)), tiny_transformer, "cpu",
                                torch.float32)  # fmt: skip
    module = runtime.module
    runtime.cast(torch.bfloat16)
    assert runtime.module is module and runtime.short is None and next(module.parameters()).dtype == torch.bfloat16


@pytest.mark.parametrize("model_type", list(architectures.SUPPORTED))
def test_every_architecture_serves_its_short_rows_through_reduced_matmuls(model_type: str, tmp_path: Path) -> None:
    """Whatever module names and layouts an architecture has, its linears swap and its short rows
    answer (within the bound on these tiny random models; not a claim about real ones)."""
    path = tiny_models.make_tiny_architecture(tmp_path / model_type, model_type)
    loaded = [transformer._load(ModelConfig(name="tiny", path=str(path)), path, "cpu", torch.float32) for _ in "ab"]
    reference, served = loaded
    served.cast(torch.bfloat16, short_max_tokens=precision.SHORT_MAX_TOKENS)
    assert served.short is not None
    assert any(isinstance(m, precision.ReducedMatmul) for m in served.short.modules())
    assert not any(isinstance(m, torch.nn.Linear) for m in served.short.modules())
    batch = served.sample(["ok", "the dog", "word " * 30])
    assert [item.length <= precision.SHORT_MAX_TOKENS for item in batch] == [True, True, False]
    assert (cosine_rows(reference.forward(batch), served.forward(batch)) >= precision.MIN_ROW_COSINE).all()
