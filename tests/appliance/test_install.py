"""`appliance install-systemd` (appliance/install.py) into a temporary prefix, as a real process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from appliance.install import CONFIG_FILE, ENV_FILE, STATE_DIR, UNIT


def install_systemd(prefix: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "appliance.cli", "install-systemd", "--prefix", str(prefix), *flags]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def files_under(root: Path) -> list[Path]:
    return sorted(root.rglob("*"))


def test_dry_run_prints_every_step_and_writes_nothing(tmp_path: Path) -> None:
    prefix = tmp_path / "root"
    done = install_systemd(prefix, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"dry run: write {prefix / UNIT} (ExecStart: {sys.prefix}/bin/python)",
        f"dry run: write {prefix / ENV_FILE}",
        f"dry run: write {prefix / CONFIG_FILE}",
        f"dry run: create {prefix / STATE_DIR}",
        f"skip systemctl daemon-reload and enable: --prefix {prefix} is not /",
    ]
    assert not prefix.exists()


def test_install_writes_the_files_and_skips_systemctl(tmp_path: Path) -> None:
    prefix = tmp_path / "root"
    done = install_systemd(prefix)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == f"skip systemctl daemon-reload and enable: --prefix {prefix} is not /"
    unit = (prefix / UNIT).read_text()
    assert f"ExecStart={sys.prefix}/bin/python -m appliance.cli serve --config /etc/appliance/appliance.toml\n" in unit
    assert "/opt/appliance/.venv" not in unit
    assert (prefix / ENV_FILE).read_text() == (Path(__file__).parents[2] / "systemd" / "appliance.env").read_text()
    assert (prefix / CONFIG_FILE).read_text().startswith("# appliance.toml")
    assert (prefix / STATE_DIR).is_dir()


def test_a_second_install_keeps_the_operators_files(tmp_path: Path) -> None:
    prefix = tmp_path / "root"
    assert install_systemd(prefix).returncode == 0
    (prefix / ENV_FILE).write_text("APPLIANCE_PORT=9000\n")
    (prefix / CONFIG_FILE).write_text("port = 9000\n")
    done = install_systemd(prefix)
    assert done.returncode == 0, done.stderr
    assert f"keep {prefix / ENV_FILE} (already present)" in done.stdout.splitlines()
    assert (prefix / ENV_FILE).read_text() == "APPLIANCE_PORT=9000\n"
    assert (prefix / CONFIG_FILE).read_text() == "port = 9000\n"


def test_the_written_config_file_is_valid(tmp_path: Path) -> None:
    from appliance.config import load_config

    assert install_systemd(tmp_path).returncode == 0
    load_config(tmp_path / CONFIG_FILE, environ={})
