"""What a sentence-transformers model directory says about itself, from its JSON files alone.

``modules.json`` names the Transformer module's directory, the pooling (``1_Pooling/config.json``)
and whether a ``Normalize`` module follows; the Transformer's ``sentence_bert_config.json`` gives
``max_seq_length`` and ``do_lower_case``. A plain Hugging Face directory (no ``modules.json``) is
its own Transformer with mean pooling. Nothing here imports torch or runs model code: the workers'
transformer runtime builds its model from a ``SentenceLayout``, and the gateway reads the same one
for what TEI's ``/info`` and ``/tokenize`` expose, so the two sides cannot read a directory apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NO_LIMIT = 1_000_000  # no length limit known (yet): min() with any real one picks the real one
# sentence-transformers' pooling modes, in the order it concatenates the legacy flags
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


class UnsupportedLayout(ValueError):
    """A module or pooling mode that cannot be reproduced exactly: a load error, not a guess."""


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


@dataclass(frozen=True, slots=True)
class SentenceLayout:
    """What a sentence-transformers directory says about pooling; plain HF defaults otherwise."""

    transformer_dir: Path
    pooling: tuple[str, ...] = ("mean",)
    normalize: bool = False
    max_seq_length: int = NO_LIMIT
    lowercase: bool = False


def read_layout(path: Path) -> SentenceLayout:
    """Parse ``modules.json`` and the Transformer's ``sentence_bert_config.json``."""
    modules = json.loads((path / "modules.json").read_text()) if (path / "modules.json").is_file() else []
    transformer_dir, pooling, normalize = path, ("mean",), False
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        where = path / module.get("path", "")
        if kind == "Transformer":
            transformer_dir = where
        elif kind == "Pooling":
            pooling = pooling_modes(read_json(where / "config.json"))
        elif kind == "Normalize":
            normalize = True
        else:
            raise UnsupportedLayout(f"unsupported sentence-transformers module {module.get('type')!r} in modules.json")
    st = read_json(transformer_dir / "sentence_bert_config.json")
    max_seq = int(st.get("max_seq_length") or NO_LIMIT)
    return SentenceLayout(transformer_dir, pooling, normalize, max_seq, bool(st.get("do_lower_case", False)))


def pooling_modes(config: dict[str, Any]) -> tuple[str, ...]:
    """Both config styles: ``pooling_mode: "mean" | [...]`` (concatenated in the order listed) and
    the legacy ``pooling_mode_*_tokens`` flags (concatenated in sentence-transformers' fixed order)."""
    mode = config.get("pooling_mode")
    if mode is None:
        modes = tuple(m for key, m in _LEGACY_POOLING_KEYS.items() if config.get(key))
    else:
        modes = (mode,) if isinstance(mode, str) else tuple(mode)
    for m in modes:
        if m not in POOLING_MODES:
            raise UnsupportedLayout(f"unsupported pooling mode {m!r} (supported: {', '.join(POOLING_MODES)})")
    return modes or ("mean",)
