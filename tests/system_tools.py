"""Commands from Debian packages that some tests need (``wrk``, ``chromium``, ``promtool``,
``systemd-analyze``): found on PATH, else installed with apt-get when this machine allows (root),
else the test FAILS: a skipped test proves nothing. The fixtures over this are in ``conftest.py``;
tests import it by this module's name (``import conftest`` would find whichever conftest came first).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

# Debian's chromium in a container: no sandbox (no user namespaces), no GPU, and nothing that
# reaches out on its own (the test box may have no network at all).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip


def debian_tool(command: str, package: str | None = None) -> str:
    """The path of ``command`` (from the Debian package ``package``, by default the command's own
    name), installed when missing; fails the calling test when it cannot be had."""
    package = package or command
    path = shutil.which(command) or (install_debian_package(package) and shutil.which(command))
    if not path:
        pytest.fail(f"{command} is not installed and could not be installed (apt-get install {package}, as root)")
    return path


def install_debian_package(package: str) -> bool:
    """apt-get install ``package``; False when this machine does not allow it or it fails."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
        try:
            subprocess.run(command, env=env, capture_output=True, timeout=600, check=True)
        except (OSError, subprocess.SubprocessError):
            return False
    return True
