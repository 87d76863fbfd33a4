"""pyproject.toml's aiohttp floor: no release below it may carry a known 2025 server advisory."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
# CVE-2025-53643 was fixed in 3.12.14, CVE-2025-69223..69230 in 3.13.3.
FIRST_WITH_EVERY_2025_FIX = (3, 13, 3)


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def test_the_aiohttp_floor_has_every_2025_security_fix_and_stays_below_4() -> None:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    (spec,) = [d for d in dependencies if re.match(r"aiohttp\s*[<>=!~]", d)]
    floor = re.search(r">=\s*([\d.]+)", spec)
    assert floor is not None, spec
    assert version(floor.group(1)) >= FIRST_WITH_EVERY_2025_FIX, spec
    assert re.search(r"<\s*4\b", spec), spec
    assert version(importlib.metadata.version("aiohttp")) >= version(floor.group(1))  # what runs here too
