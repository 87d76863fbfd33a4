"""The model architectures the transformer runtime serves, by HF ``config.model_type``.

Only architectures a test builds a tiny random model of, and checks against sentence-transformers
at float32, are listed (``tests/workers/test_architectures.py``): any other ``model_type`` fails
at load with a ``ModelLoadError`` that names it and lists these, rather than loading into a model
whose pooling, padding or position ids nobody has checked.

Encoders (bidirectional): ``bert``, ``roberta``, ``xlm-roberta``, ``camembert``, ``distilbert``,
``electra``, ``mpnet``, ``deberta-v2``, ``modernbert``. Decoders (causal; served with last-token
pooling by the models that use them): ``qwen2``, ``qwen3``, ``gemma3_text``. The runtime pads on
the right; a causal model's real tokens never attend to padding, so its rows do not depend on
their batch.

Attention runs through torch's ``scaled_dot_product_attention`` (``sdpa``) where transformers
implements it for the architecture, else its ``eager`` code (``mpnet``, ``deberta-v2``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from workers.runtimes.base import ModelLoadError

Attention = Literal["sdpa", "eager"]

# model_type -> the attention implementation asked of transformers
SUPPORTED: dict[str, Attention] = {
    "bert": "sdpa",
    "roberta": "sdpa",
    "xlm-roberta": "sdpa",
    "camembert": "sdpa",
    "distilbert": "sdpa",
    "electra": "sdpa",
    "mpnet": "eager",
    "deberta-v2": "eager",
    "modernbert": "sdpa",
    "qwen2": "sdpa",
    "qwen3": "sdpa",
    "gemma3_text": "sdpa",
}


def unsupported(model_type: str) -> str:
    """Why a model of ``model_type`` is not loaded, naming what is."""
    return f"model_type {model_type!r} is not supported by the transformer runtime; supported: {', '.join(SUPPORTED)}"


def model_type_of(model: str, path: Path, transformer_dir: Path) -> str:
    """``config.json``'s ``model_type``; a ``ModelLoadError`` naming ``model`` and ``path`` unless it
    is listed. Read as plain JSON before transformers sees it, so that a ``trust_remote_code``
    model gets this refusal rather than transformers' request to run its code. No ``config.json``:
    "" (transformers then says what is missing)."""
    config_file = transformer_dir / "config.json"
    if not config_file.is_file():
        return ""
    model_type = str(json.loads(config_file.read_text()).get("model_type", ""))
    if model_type not in SUPPORTED:
        raise ModelLoadError(model, path, unsupported(model_type))
    return model_type
