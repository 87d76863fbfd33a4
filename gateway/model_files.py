"""What the gateway reads from a served model's own directory: ``ModelFiles``.

The workers load and run models; the gateway needs a few facts about them that no worker message
carries and that TEI's routes expose: where the fast tokenizer (``tokenizer.json``) lives, whether
text is lowercased before it (sentence-transformers' ``do_lower_case``), whether the model adds
special tokens, its pooling (``GET /info``) and a cross-encoder's labels. They are read from the
directory the configuration resolves (``appliance.config.resolve_model_path``): a
sentence-transformers layout through ``appliance/model_layout.py``, the very reader the workers'
transformer runtime loads with, and the static and cross-encoder files by the rules of
``static.py`` and ``cross_encoder.py``; only JSON files are read, nothing is imported or run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.config import ModelConfig, resolve_model_path
from appliance.model_layout import read_layout

# the pooling modes TEI spells differently from sentence-transformers
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
    layout = read_layout(root)
    return ModelFiles(existing(layout.transformer_dir / "tokenizer.json"), lowercase=layout.lowercase,
                      pooling=tei_pooling(layout.pooling))  # fmt: skip


def tei_pooling(modes: tuple[str, ...]) -> str:
    """Pooling modes in TEI's words; several (concatenated) joined with "+"."""
    return "+".join(POOLING_WORDS.get(m, m) for m in modes)


def existing(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the gateway tokenizes with a model's fast tokenizer only")
    return path


def read_json(path: Path, default: Any = None) -> Any:
    if not path.is_file():
        return {} if default is None else default
    return json.loads(path.read_text())
