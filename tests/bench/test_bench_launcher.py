"""bench/launcher.py: the child's environment; a real appliance from a config file, whose ``with``
is left by an exception while it cannot answer SIGTERM, and still nothing is left running or in
/dev/shm. And the package rule the launcher lives by: helpers never import scenarios."""

from __future__ import annotations

import ast
import signal
from pathlib import Path

import psutil
import pytest

from bench import launcher
from bench.__main__ import SCENARIOS

BENCH = Path(launcher.__file__).resolve().parent


def test_the_child_sees_no_gpu_unless_the_caller_names_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # what this shell sees is not what the child gets
    env = launcher.child_env(4321, tmp_path, [{"name": "m"}], 3, {"APPLIANCE_CACHE_BYTES": "0"})
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert (env["APPLIANCE_PORT"], env["APPLIANCE_WORKERS"], env["APPLIANCE_CACHE_BYTES"]) == ("4321", "3", "0")
    assert env["APPLIANCE_STATE_DIR"] == str(tmp_path / "state") and env["APPLIANCE_MODELS"] == '[{"name": "m"}]'
    assert env["HF_HUB_OFFLINE"] == "1"
    chosen = launcher.child_env(4321, tmp_path, None, 1, {"CUDA_VISIBLE_DEVICES": "1"})
    assert chosen["CUDA_VISIBLE_DEVICES"] == "1"  # a benchmark on a GPU host passes its own
    assert "APPLIANCE_MODELS" not in chosen  # None: the config file's models, or the defaults


def test_helpers_never_import_scenarios() -> None:
    scenarios = set(SCENARIOS.values())
    for path in BENCH.glob("*.py"):
        module = f"bench.{path.stem}"
        if module in scenarios or path.stem == "__main__":
            continue
        imported = {node.module for node in ast.walk(ast.parse(path.read_text()))
                    if isinstance(node, ast.ImportFrom) and node.module}  # fmt: skip
        assert not imported & scenarios, f"{module} (a helper) imports the scenario {imported & scenarios}"


@pytest.mark.slow
def test_a_failing_with_body_still_stops_everything_and_unlinks_its_segments(
    tmp_path: Path, tiny_transformer: Path
) -> None:
    config = tmp_path / "appliance.toml"  # models from the config file: none in the environment
    config.write_text(f'[[models]]\nname = "tiny"\npath = "{tiny_transformer}"\nmain = true\n')
    port = str(launcher.free_port())  # a caller's port is used as given
    with pytest.raises(RuntimeError, match="the test failed"):
        with launcher.running(None, config=config, workdir=tmp_path, workers=2, env={"APPLIANCE_PORT": port},
                              stop_timeout=1.0) as appliance:  # fmt: skip
            assert appliance.url == f"http://127.0.0.1:{port}"
            assert b'"tiny"' in (launcher.fetch(appliance.url + "/v1/models", {}) or b"")
            processes = [psutil.Process(pid) for pid in (appliance.pid, *appliance.worker_pids())]
            segments = launcher.segments_of(appliance.pid)
            assert len(processes) >= 3 and segments  # the appliance, two workers, their rings
            appliance.process.send_signal(signal.SIGSTOP)  # it cannot answer SIGTERM: the bound must act
            raise RuntimeError("the test failed")
    assert appliance.forced and appliance.process.returncode == -signal.SIGKILL
    assert not [p.pid for p in processes if launcher.still_running(p)]
    assert appliance.leftover is not None and set(segments) <= set(appliance.leftover.segments)
    assert launcher.segments_of(appliance.pid) == []  # found, reported, then unlinked
