"""Model runtimes, one module per kind, behind one interface (``base.Runtime``).

``load_runtime`` picks the module by ``ModelConfig.kind`` and imports it only then: a worker that
holds just a static model never pays for importing transformers (torch is imported by every
worker at boot, right after pinning, so its thread pools are sized to the slot).

    base.py           the interface, its errors, cosine scores
    tokenizer.py      tokenization rules every runtime shares (truncation, refusal, token ids)
    chunking.py       splitting a batch into length-sorted passes when padding costs more, and
                      its short rows apart (their own module at a reduced precision)
    precision.py      which dtype a torch model serves, the guard against fp32, the short rows' module
    hf.py             what the two torch runtimes share (dtype, padding, compiling, HF loading)
    transformer.py    sentence embedding models (transformers + sentence-transformers pooling)
    architectures.py  the HF model_types the transformer runtime loads, and the refusal of the rest
    cross_encoder.py  (query, document) pair scoring for rerank
    static.py         Model2Vec-style static embeddings (numpy only)
    prompts.py        a model's named prompts (config_sentence_transformers.json + config overrides)
"""

from __future__ import annotations

import importlib
from pathlib import Path

from appliance.config import ModelConfig, ModelKind
from workers.runtimes.base import (
    InputTooLong,
    InvalidInput,
    ModelLoadError,
    Runtime,
    Tokenized,
    cosine_scores,
    l2_normalize,
    loading,
    sigmoid,
)
from workers.runtimes.prompts import read_prompts
from workers.runtimes.tokenizer import TextTokenizer

MODULES: dict[ModelKind, str] = {
    "transformer": "workers.runtimes.transformer",
    "static": "workers.runtimes.static",
    "cross_encoder": "workers.runtimes.cross_encoder",
}

__all__ = [
    "InputTooLong",
    "InvalidInput",
    "ModelLoadError",
    "Runtime",
    "TextTokenizer",
    "Tokenized",
    "cosine_scores",
    "l2_normalize",
    "sigmoid",
    "load_runtime",
]


def load_runtime(model: ModelConfig, path: Path, device: str = "cpu") -> Runtime:
    """Load ``model`` from the local directory ``path`` onto ``device`` ("cpu", "cuda:0").

    Raises ``ModelLoadError`` (naming the model and the path) for anything that stops it loading.
    """
    path = Path(path)
    if model.kind not in MODULES:
        raise ModelLoadError(model.name, path, f"unknown model kind {model.kind!r} (known: {', '.join(MODULES)})")
    if not path.is_dir():
        raise ModelLoadError(model.name, path, "no such directory")
    prompts, default_prompt = loading(model.name, path, lambda: read_prompts(path, model))  # cheap: before the weights
    module = importlib.import_module(MODULES[model.kind])
    runtime: Runtime = module.load(model, path, device)
    runtime.prompts, runtime.default_prompt_name = prompts, default_prompt
    return runtime
