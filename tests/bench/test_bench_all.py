"""`appliance bench all --quick` on a tiny model: every scenario runs, every report file exists,
and every figure is a finite number."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.everything import ORDER

ROOT = Path(__file__).resolve().parents[2]
BOUND_S = 1500


@pytest.mark.slow
@pytest.mark.timeout(BOUND_S + 60)
def test_all_quick_writes_every_report_with_finite_figures(tiny_transformer: Path, tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "appliance.cli", "bench", "all", "--quick", "--quiet", "--results", str(tmp_path),
            "--model", "tiny", "--model-path", str(tiny_transformer)]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=BOUND_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    (root,) = tmp_path.iterdir()
    top = json.loads((root / "results.json").read_text())
    assert top["summary"]["outcomes"] == {name: 0 for name in ORDER}
    for folder in [root, *(root / name for name in ORDER)]:
        results = json.loads((folder / "results.json").read_text())
        for name in results["files"]:
            assert (folder / name).stat().st_size > 0, f"{folder.name}/{name} is empty"
        assert results["figures"], f"{folder.name} measured nothing"
        for name, entry in results["figures"].items():
            assert math.isfinite(entry["value"]) and entry["unit"], f"{folder.name}: {name} = {entry}"
        assert results["machine"]["cpu_model"] and results["versions"]["python"]
    assert {"throughput.png", "latency.png"} <= set(json.loads((root / "compare" / "results.json").read_text())["files"])
    assert set(top["figures"]) >= {"compare.appliance.c4.sentences_per_s", "compare.raw_limit_sps"}
