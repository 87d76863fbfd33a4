"""A model's named prompts: what its sentence-transformers files say, with the config's overrides.

sentence-transformers keeps them in ``config_sentence_transformers.json`` at the top of the model
directory::

    {"prompts": {"query": "query: ", "document": "passage: "}, "default_prompt_name": null}

A prompt is text put in front of an input before it is tokenized (the gateway does that: it is
plain text, so the token count, the result cache and coalescing all see it). The worker only
reads them here and reports them in ``ModelInfo``. ``ModelConfig.prompts`` adds to and overrides
the file's by name; ``ModelConfig.default_prompt_name`` replaces the file's default ("" clears it).
A default that names no prompt is a load error, as it is in sentence-transformers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from appliance.config import ModelConfig

FILE = "config_sentence_transformers.json"


def read_prompts(path: Path, model: ModelConfig) -> tuple[dict[str, str], str]:
    """(prompts, default prompt name) of the model in ``path`` with ``model``'s overrides.
    Raises ValueError naming the file or the key for anything malformed."""
    stated = read_file(path / FILE)
    prompts = {**file_prompts(stated), **(model.prompts or {})}
    default = model.default_prompt_name if model.default_prompt_name is not None else file_default(stated)
    if default and default not in prompts:
        known = ", ".join(sorted(prompts)) or "none"
        raise ValueError(f"default_prompt_name {default!r} is not one of the model's prompts ({known})")
    return prompts, default


def read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    stated = json.loads(path.read_text())
    if not isinstance(stated, dict):
        raise ValueError(f"{path.name} must hold a JSON object")
    return stated


def file_prompts(stated: dict[str, Any]) -> dict[str, str]:
    prompts = stated.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()):
        raise ValueError(f"{FILE}: `prompts` must map names to texts")
    return dict(prompts)


def file_default(stated: dict[str, Any]) -> str:
    default = stated.get("default_prompt_name")
    if default is not None and not isinstance(default, str):
        raise ValueError(f"{FILE}: `default_prompt_name` must be a text or null")
    return default or ""
