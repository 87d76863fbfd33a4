"""workers/runtimes/prompts.py: a model's prompts from config_sentence_transformers.json, with the
config's overrides, as the worker reports them in ``ModelInfo``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from appliance.config import ModelConfig
from workers.runtimes import ModelLoadError, load_runtime
from workers.runtimes.prompts import FILE, read_prompts

E5 = {"prompts": {"query": "query: ", "document": "passage: "}, "default_prompt_name": None}


def model(path: Path, **fields: Any) -> ModelConfig:
    return ModelConfig(name="m", path=str(path), **fields)


def with_file(tmp_path: Path, stated: object) -> Path:
    (tmp_path / FILE).write_text(json.dumps(stated))
    return tmp_path


def test_no_file_means_no_prompts(tmp_path: Path) -> None:
    assert read_prompts(tmp_path, model(tmp_path)) == ({}, "")


def test_the_files_prompts_and_default(tmp_path: Path) -> None:
    path = with_file(tmp_path, {**E5, "default_prompt_name": "query", "__version__": {"x": "1"}})
    assert read_prompts(path, model(path)) == ({"query": "query: ", "document": "passage: "}, "query")


def test_the_config_adds_overrides_and_clears(tmp_path: Path) -> None:
    path = with_file(tmp_path, {**E5, "default_prompt_name": "query"})
    prompts, default = read_prompts(path, model(path, prompts={"query": "Q: ", "code": "code: "},
                                                default_prompt_name=""))  # fmt: skip
    assert prompts == {"query": "Q: ", "document": "passage: ", "code": "code: "} and default == ""
    assert read_prompts(path, model(path, default_prompt_name="document"))[1] == "document"


@pytest.mark.parametrize(("stated", "fields", "words"), [
    ({"prompts": ["query: "]}, {}, "`prompts` must map names to texts"),
    ({"prompts": {"query": 3}}, {}, "`prompts` must map names to texts"),
    ({"prompts": {}, "default_prompt_name": 1}, {}, "`default_prompt_name` must be a text"),
    (E5 | {"default_prompt_name": "nope"}, {}, "'nope' is not one of the model's prompts (document, query)"),
    (E5, {"default_prompt_name": "code"}, "'code' is not one of"),
    ([1, 2], {}, "must hold a JSON object"),
])  # fmt: skip
def test_malformed_prompts_are_refused_by_name(tmp_path: Path, stated: object, fields: dict[str, Any],
                                               words: str) -> None:  # fmt: skip
    path = with_file(tmp_path, stated)
    with pytest.raises(ValueError) as caught:
        read_prompts(path, model(path, **fields))
    assert words in str(caught.value)


def test_a_loaded_model_reports_its_prompts_and_a_bad_default_fails_the_load(tmp_path: Path,
                                                                            tiny_static: Path) -> None:  # fmt: skip
    path = shutil.copytree(tiny_static, tmp_path / "static")
    with_file(path, E5 | {"default_prompt_name": "document"})
    info = load_runtime(model(path, kind="static", prompts={"code": "code: "}), path).info()
    assert info.prompts == {"query": "query: ", "document": "passage: ", "code": "code: "}
    assert (info.default_prompt_name, info.normalize) == ("document", True)
    with pytest.raises(ModelLoadError, match="'missing' is not one of the model's prompts"):
        load_runtime(model(path, kind="static", default_prompt_name="missing"), path)
