"""Fixtures for the HTTP contract tests over ``fake_backend``: a module-wide server and backend
reset for every test, and extra servers with their own config."""

from __future__ import annotations

from typing import Callable, Iterator

import pytest

from appliance.config import Config
from fake_backend import TEST_CONFIG, FakeBackend, ServerThread
from gateway.admission import Admission
from gateway.app import build_app


@pytest.fixture(scope="module")
def module_backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def backend(module_backend: FakeBackend) -> Iterator[FakeBackend]:
    """The module server's backend, reset to healthy defaults for every test."""
    fresh = FakeBackend()
    module_backend.__dict__.update(fresh.__dict__)
    yield module_backend


@pytest.fixture(scope="module")
def module_server(module_backend: FakeBackend) -> Iterator[ServerThread]:
    server = ServerThread(build_app(TEST_CONFIG, module_backend)).start()
    yield server
    server.stop()


@pytest.fixture
def server(module_server: ServerThread, backend: FakeBackend) -> ServerThread:
    return module_server


@pytest.fixture
def start_server() -> Iterator[Callable[..., tuple[ServerThread, FakeBackend]]]:
    """Start extra servers with their own config (and backend, and optionally admission); all stop
    after the test."""
    started: list[ServerThread] = []

    def start(config: Config, admission: Admission | None = None) -> tuple[ServerThread, FakeBackend]:
        backend = FakeBackend()
        started.append(ServerThread(build_app(config, backend, admission)).start())
        return started[-1], backend

    yield start
    for s in started:
        s.stop()
