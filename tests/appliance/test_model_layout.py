"""``appliance/model_layout.py``: a sentence-transformers directory read from its JSON files alone,
as both the workers and the gateway read it (real directories written by the test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.model_layout import NO_LIMIT, UnsupportedLayout, pooling_modes, read_layout

ROOT = Path(__file__).resolve().parents[2]


def write(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_a_plain_directory_is_its_own_transformer_with_mean_pooling(tmp_path: Path) -> None:
    layout = read_layout(tmp_path)
    assert (layout.transformer_dir, layout.pooling, layout.normalize) == (tmp_path, ("mean",), False)
    assert (layout.max_seq_length, layout.lowercase) == (NO_LIMIT, False)


def test_modules_json_names_the_transformer_pooling_and_normalize(tmp_path: Path) -> None:
    write(tmp_path / "modules.json", [
        {"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ])  # fmt: skip
    write(tmp_path / "1_Pooling" / "config.json", {"pooling_mode": ["cls", "mean"]})
    write(tmp_path / "0_Transformer" / "sentence_bert_config.json", {"max_seq_length": 128, "do_lower_case": True})
    layout = read_layout(tmp_path)
    assert layout.transformer_dir == tmp_path / "0_Transformer"
    assert (layout.pooling, layout.normalize, layout.max_seq_length, layout.lowercase) == (("cls", "mean"), True,
                                                                                           128, True)  # fmt: skip


def test_legacy_flags_concatenate_in_sentence_transformers_order() -> None:
    flags = {"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True, "pooling_mode_max_tokens": False}
    assert pooling_modes(flags) == ("cls", "mean")
    assert pooling_modes({}) == ("mean",)


def test_what_cannot_be_reproduced_exactly_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "modules.json", [{"path": "", "type": "sentence_transformers.models.Dense"}])
    with pytest.raises(UnsupportedLayout, match="Dense"):
        read_layout(tmp_path)
    with pytest.raises(UnsupportedLayout, match="unsupported pooling mode 'median'"):
        pooling_modes({"pooling_mode": "median"})


def test_reading_a_layout_imports_no_torch() -> None:
    """The gateway reads layouts; torch must stay in the workers."""
    probe = "import sys, appliance.model_layout; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], cwd=ROOT, timeout=60).returncode == 0
