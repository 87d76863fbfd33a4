"""What the gateway reads from a served model's own directory: ``ModelFiles``.

The workers load and run models; the gateway needs a few facts about them that no worker message
carries and that TEI's routes expose: where the fast tokenizer (``tokenizer.json``) lives, whether
text is lowercased before it (sentence-transformers' ``do_lower_case``), whether the model adds
special tokens, its pooling (``GET /info``) and a cross-encoder's labels. They are read from the
directory the configuration resolves (``appliance.config.resolve_model_path``), by the same rules
the workers' runtimes follow (``workers/runtimes/transformer.py`` ``read_layout``,
``static.py``, ``cross_encoder.py``); only JSON files are read, nothing is imported or run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.config import ModelConfig, resolve_model_path

# sentence-transformers' legacy pooling flags, in the order it concatenates them, as TEI names them
LEGACY_POOLING = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "last_token",
}
# the newer ``pooling_mode`` words that TEI spells differently
POOLING_WORDS = {"lasttoken": "last_token"}


@dataclass(frozen=True, slots=True)
class ModelFiles:
    """The facts above, for one model."""

    tokenizer_file: Path
    lowercase: bool = False
    special_tokens: bool = True  # a static (model2vec) model adds none
    pooling: str = "mean"  # TEI's word; several modes (concatenated) joined with "+"
    labels: dict[str, str] = field(default_factory=dict)  # a cross-encoder's id2label


def read_model_files(model: ModelConfig, state_dir: str) -> ModelFiles:
    """The facts for ``model``; ``FileNotFoundError`` when its directory has no ``tokenizer.json``."""
    root = resolve_model_path(model.path, state_dir)
    if model.kind == "static":
        return ModelFiles(existing(root / "tokenizer.json"), special_tokens=False)
    if model.kind == "cross_encoder":
        labels = read_json(root / "config.json").get("id2label") or {"0": "LABEL_0"}
        return ModelFiles(existing(root / "tokenizer.json"), labels={str(k): str(v) for k, v in labels.items()})
    transformer_dir, pooling = sentence_layout(root)
    lowercase = bool(read_json(transformer_dir / "sentence_bert_config.json").get("do_lower_case", False))
    return ModelFiles(existing(transformer_dir / "tokenizer.json"), lowercase=lowercase, pooling=pooling)


def sentence_layout(root: Path) -> tuple[Path, str]:
    """(the Transformer module's directory, the pooling) from ``modules.json``; a plain HF
    directory is its own Transformer with mean pooling, as the worker runs it."""
    modules = read_json(root / "modules.json", default=[])
    transformer_dir, pooling = root, "mean"
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        where = root / module.get("path", "")
        if kind == "Transformer":
            transformer_dir = where
        elif kind == "Pooling":
            pooling = pooling_word(read_json(where / "config.json"))
    return transformer_dir, pooling


def pooling_word(config: dict[str, Any]) -> str:
    mode = config.get("pooling_mode")
    if mode is None:
        modes = [word for key, word in LEGACY_POOLING.items() if config.get(key)]
    else:
        modes = [mode] if isinstance(mode, str) else list(mode)
    return "+".join(POOLING_WORDS.get(m, m) for m in modes) or "mean"


def existing(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the gateway tokenizes with a model's fast tokenizer only")
    return path


def read_json(path: Path, default: Any = None) -> Any:
    if not path.is_file():
        return {} if default is None else default
    return json.loads(path.read_text())
