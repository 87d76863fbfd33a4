"""Admission in the real appliance (subprocess, one worker, a tiny random model) over real HTTP,
configured the way an operator does it, through ``APPLIANCE_*`` environment variables: API keys
(and their rotation), per-key rates, the memory guard, and a keys file that cannot serve refusing
to start. Every appliance that served must exit 0 and leave no shared-memory segment or worker
behind; each is closed (stopped, killed past a bound, segments unlinked) whatever the outcome.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from harness import Appliance, get, post, serving

pytestmark = pytest.mark.slow

MAIN = "tiny"
KEY_A, KEY_B, KEY_C, KEY_D = "sk-int-alpha", "sk-int-bravo", "sk-int-charlie", "sk-int-delta"
RPM, IPM = 3, 8
# No machine has this much available memory: the guard is tripped from the first sample.
UNREACHABLE_FLOOR = "1000TiB"
LOW_FLOOR = "16MiB"


def models(tiny_transformer: Path) -> list[dict[str, Any]]:
    return [{"name": MAIN, "path": str(tiny_transformer), "main": True}]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def embed(appliance: Appliance, n: int = 1, key: str | None = None) -> tuple[int, dict[str, str], Any]:
    body = {"model": MAIN, "input": [f"admission text {i}" for i in range(n)]}
    return post(appliance.url + "/api/embed", body, headers=bearer(key) if key else None)


def error_type(reply: tuple[int, dict[str, str], Any]) -> tuple[int, str]:
    return reply[0], reply[2]["error"]["type"]


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, tiny_transformer: Path) -> Iterator[tuple[Appliance, Path]]:
    """One appliance with three keys and rpm/ipm limits, shared by the tests that need keys."""
    tmp = tmp_path_factory.mktemp("keyed")
    keys = tmp / "api_keys"
    keys.write_text(f"# test keys\n{KEY_A}\n{KEY_B}\n{KEY_C}\n")
    env = {"APPLIANCE_API_KEYS_FILE": str(keys), "APPLIANCE_RATE_LIMIT_RPM": str(RPM),
           "APPLIANCE_RATE_LIMIT_IPM": str(IPM), "APPLIANCE_MEMORY_FLOOR": LOW_FLOOR}  # fmt: skip
    # /stats, which the launcher reads for its workers, wants a key like every other route
    with serving(tmp, models(tiny_transformer), workers=1, env=env, headers=bearer(KEY_A)) as running:
        yield running, keys


def test_memory_floor_refuses_new_work_until_restarted_with_a_lower_one(
    tmp_path: Path, tiny_transformer: Path, request: pytest.FixtureRequest
) -> None:
    """First in the file: the restart with a low floor is the keyed appliance the tests below
    share (one boot fewer), started only once this one has stopped."""
    tripped = {"APPLIANCE_MEMORY_FLOOR": UNREACHABLE_FLOOR}
    with serving(tmp_path, models(tiny_transformer), workers=1, env=tripped) as low:
        assert [get(low.url + path)[0] for path in ("/health", "/ready", "/v1/models")] == [200, 200, 200]
        refused = embed(low)
        assert error_type(refused) == (503, "memory_low") and "memory_floor" in refused[2]["error"]["message"]
        assert refused[1]["Retry-After"] == "2"
        assert get(low.url + "/stats")[2]["admission"]["refused"] == {"memory_low": 1}
    restarted, _ = request.getfixturevalue("keyed")  # LOW_FLOOR
    status, _, body = embed(restarted, key=KEY_A)
    assert status == 200 and len(body["embeddings"]) == 1


def test_keys_guard_everything_but_the_probes(keyed: tuple[Appliance, Path]) -> None:
    appliance, _ = keyed
    assert get(appliance.url + "/health")[0] == 200 and get(appliance.url + "/ready")[0] == 200
    missing = embed(appliance)
    assert error_type(missing) == (401, "unauthorized")
    assert missing[1]["WWW-Authenticate"].startswith("Bearer")
    assert error_type(embed(appliance, key="sk-wrong")) == (401, "unauthorized")
    assert error_type(get(appliance.url + "/v1/models")) == (401, "unauthorized")
    assert get(appliance.url + "/v1/models", headers=bearer(KEY_A))[0] == 200
    status, _, body = embed(appliance, 2, key=KEY_A)
    assert status == 200 and len(body["embeddings"]) == 2


def test_requests_per_minute_per_key(keyed: tuple[Appliance, Path]) -> None:
    appliance, _ = keyed
    assert [embed(appliance, key=KEY_B)[0] for _ in range(RPM)] == [200] * RPM
    refused = embed(appliance, key=KEY_B)
    assert error_type(refused) == (429, "rate_limited")
    assert 1 <= int(refused[1]["Retry-After"]) <= 60 // RPM  # one request refills every 20 s
    assert embed(appliance, key=KEY_A)[0] == 200  # another key, another bucket


def test_inputs_per_minute_per_key(keyed: tuple[Appliance, Path]) -> None:
    appliance, _ = keyed
    never = embed(appliance, IPM + 1, key=KEY_C)
    assert error_type(never) == (422, "too_many_inputs") and "never" in never[2]["error"]["message"]
    assert embed(appliance, IPM, key=KEY_C)[0] == 200
    refused = embed(appliance, 1, key=KEY_C)
    assert error_type(refused) == (429, "rate_limited") and "inputs per minute" in refused[2]["error"]["message"]
    assert 1 <= int(refused[1]["Retry-After"]) <= 60 // IPM + 1  # one input refills every 7.5 s
    stats = get(appliance.url + "/stats", headers=bearer(KEY_A))[2]["admission"]
    assert stats["keys"] == 3 and stats["refused"]["too_many_inputs"] == 1


def test_keys_rotate_without_a_restart(keyed: tuple[Appliance, Path]) -> None:
    appliance, keys = keyed
    staged = keys.with_suffix(".new")
    staged.write_text(f"{KEY_D}\n")
    os.replace(staged, keys)
    deadline = time.monotonic() + 5  # the file is looked at about once a second
    while embed(appliance, key=KEY_D)[0] == 401 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert embed(appliance, key=KEY_D)[0] == 200
    assert error_type(embed(appliance, key=KEY_A)) == (401, "unauthorized")


def test_a_keys_file_without_keys_refuses_to_start(launch: Callable[..., Appliance], tmp_path: Path,
                                                   tiny_transformer: Path) -> None:  # fmt: skip
    keys = tmp_path / "api_keys"
    keys.write_text("# keys go here\n\n")
    keyless = {"APPLIANCE_API_KEYS_FILE": str(keys)}
    appliance = launch(models(tiny_transformer), workers=1, env=keyless, wait_ready=False)
    code = appliance.process.wait(60)  # a hang fails here; the fixture kills what is left
    assert code == 2, appliance.log_tail()
    assert str(keys) in appliance.log() and "holds no key" in appliance.log()
    assert not appliance.leftovers().segments
