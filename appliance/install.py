"""`appliance install-systemd`: the unit, its env and config files, the state directory.

Each step is a small function that returns a ``Step``: one line that says what it does and the
action that does it (``None`` when there is nothing to do, the line saying why). ``install``
prints every line and, unless it is a dry run, does the action. ``--prefix`` is a staging root
(like ``DESTDIR``): files go under it, but what they name (the venv, /var/lib/appliance,
/etc/appliance) are the paths of the machine that will run the service.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

SOURCES = Path(__file__).resolve().parent.parent / "systemd"  # the unit and env file as shipped
UNIT = "etc/systemd/system/appliance.service"
ENV_FILE = "etc/default/appliance"
CONFIG_FILE = "etc/appliance/appliance.toml"
STATE_DIR = "var/lib/appliance"
SHIPPED_VENV = "/opt/appliance/.venv"  # the venv the shipped unit's ExecStart names

CONFIG_TEXT = """\
# appliance.toml: the appliance's config file (appliance.service passes it with --config).
# Layers, later wins: defaults < this file < APPLIANCE_* in /etc/default/appliance < flags.
# Every key, its default and its meaning: `appliance check --config /etc/appliance/appliance.toml`.
# host = "127.0.0.1"
# port = 11435
# workers = "auto"
# memory_floor = "256MiB"
# worker_rss_limit = 0
"""


@dataclass(frozen=True)
class Step:
    description: str
    action: Callable[[], None] | None = None  # None: nothing to do; the description says why


def install(prefix: Path, *, dry_run: bool, venv: Path, systemctl: str | None, out: Callable[[str], None] = print) -> int:
    """Print every step and, unless ``dry_run``, do it; the exit code."""
    for step in plan(prefix, venv, systemctl):
        out(f"{'dry run: ' if dry_run and step.action else ''}{step.description}")
        if step.action and not dry_run:
            try:
                step.action()
            except (OSError, subprocess.CalledProcessError) as exc:
                out(f"appliance: failed: {exc}")
                return 1
    return 0


def plan(prefix: Path, venv: Path, systemctl: str | None) -> list[Step]:
    return [
        unit_step(prefix / UNIT, venv),
        keep_or_write(prefix / ENV_FILE, (SOURCES / "appliance.env").read_text()),
        keep_or_write(prefix / CONFIG_FILE, CONFIG_TEXT),
        state_dir_step(prefix / STATE_DIR),
        *systemctl_steps(prefix, systemctl),
    ]


def unit_text(venv: Path) -> str:
    """The shipped unit with ExecStart on ``venv``'s python."""
    text = (SOURCES / "appliance.service").read_text()
    if f"ExecStart={SHIPPED_VENV}/bin/python " not in text:
        raise RuntimeError(f"{SOURCES / 'appliance.service'}: ExecStart no longer names {SHIPPED_VENV}")
    return text.replace(SHIPPED_VENV, str(venv))


def unit_step(path: Path, venv: Path) -> Step:
    """Always written: an upgrade must get the new unit (and the venv it runs from)."""
    text = unit_text(venv)
    return Step(f"write {path} (ExecStart: {venv}/bin/python)", lambda: write(path, text, 0o644))


def keep_or_write(path: Path, text: str) -> Step:
    """The operator's file once it exists: never overwritten."""
    if path.exists():
        return Step(f"keep {path} (already present)")
    return Step(f"write {path}", lambda: write(path, text, 0o644))


def state_dir_step(path: Path) -> Step:
    # systemd owns it at start (StateDirectory=, chowned to the dynamic user, moved under
    # /var/lib/private); made here so a staged tree is complete and `appliance check` finds it
    if path.is_dir():
        return Step(f"keep {path} (already present)")
    return Step(f"create {path}", lambda: path.mkdir(mode=0o750, parents=True, exist_ok=True))


def systemctl_steps(prefix: Path, systemctl: str | None) -> list[Step]:
    if prefix.resolve() != Path("/"):
        return [Step(f"skip systemctl daemon-reload and enable: --prefix {prefix} is not /")]
    if systemctl is None:
        return [Step("skip systemctl daemon-reload and enable: systemctl not found")]
    return [Step(f"{systemctl} daemon-reload", lambda: run([systemctl, "daemon-reload"])),
            Step(f"{systemctl} enable appliance", lambda: run([systemctl, "enable", "appliance"]))]  # fmt: skip


def write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def run(command: list[str]) -> None:
    subprocess.run(command, check=True, timeout=120)


def main(prefix: str, dry_run: bool) -> int:
    return install(Path(prefix), dry_run=dry_run, venv=Path(sys.prefix), systemctl=shutil.which("systemctl"))
