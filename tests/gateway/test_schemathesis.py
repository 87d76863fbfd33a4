"""Schemathesis against the real appliance (subprocess, one worker, tiny random models, an API key
configured), driven by the appliance's own ``GET /openapi.json``: every documented operation is
called with generated requests (explicit examples, boundary values, fuzzed and negative data, and
stateful chains through the job routes' ids), and every answer must be no 5xx and exactly as
documented: its status, content type, headers and body schema.

Deterministic (``--generation-deterministic``: the same requests on every run, no example
database) and bounded (``MAX_EXAMPLES`` per operation): it ends within about a minute on two cores.

Checks run (``CHECKS``) and those left out, each for a reason:

- ``positive_data_acceptance``: a body the schema allows can still break the operator's limits
  (``max_inputs``, ``max_input_chars``, which are configuration, not schema) or hold only blank
  texts, which the API refuses by design (400 ``empty_input``, 422).
- ``use_after_free``: ``DELETE /v1/jobs/{id}`` cancels a job; the job, its status and what it
  computed stay readable until ``job_ttl``, by design.
- ``object_level_authorization``: every key is the same tenant; the appliance has no owners.

Warnings shown (and so failing the run, which must say "No issues found"): all but
``validation_mismatch`` and ``low_valid_rate`` (``WARNINGS``), which flag an operation that
accepted none, or few, of its generated bodies. The work routes' likeliest generated values are
refused by design (a blank ``input``, ``query`` or document, a ``prompt_name`` the tiny model has
no prompt for: prompts are the served model's, which a static schema cannot list), so which
operation trips them depends on the draw, and the draw shifts with any change to the schema.

No operation is excluded: none streams forever (the event stream ends with ``complete``).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from harness import Appliance, get, serving

pytestmark = pytest.mark.slow

KEY = "sk-schemathesis"
MAX_EXAMPLES = 25
RUN_TIMEOUT_S = 240
WARNINGS = ("missing_auth", "missing_test_data", "base_url_mismatch", "missing_deserializer", "unused_openapi_auth",
            "unsupported_regex", "method_not_allowed", "unmatched_filter", "unresolvable_reference", "rate_limited",
            "dictionary_mismatch", "timeout_units")  # fmt: skip
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
    "ignored_auth",
    "ensure_resource_availability",
)


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory, tiny_transformer: Path,
              tiny_cross_encoder: Path) -> Iterator[Appliance]:  # fmt: skip
    tmp = tmp_path_factory.mktemp("schemathesis")
    keys = tmp / "api_keys"
    keys.write_text(f"{KEY}\n")
    models = [
        {"name": "tiny", "path": str(tiny_transformer), "main": True},
        {"name": "tiny-ce", "path": str(tiny_cross_encoder), "kind": "cross_encoder"},
    ]
    # small limits keep generated bodies cheap to compute on two cores
    env = {"APPLIANCE_API_KEYS_FILE": str(keys), "APPLIANCE_MAX_INPUTS": "32", "APPLIANCE_MAX_BODY_BYTES": "65536",
           "APPLIANCE_MAX_INPUT_CHARS": "2000"}  # fmt: skip
    with serving(tmp, models, workers=1, env=env, headers={"Authorization": f"Bearer {KEY}"}) as running:
        yield running


def test_every_answer_is_as_documented(appliance: Appliance, tmp_path: Path) -> None:
    status, _, document = get(appliance.url + "/openapi.json")  # open: no key
    assert status == 200
    # schemathesis leaves out the operation that served it the schema (GET /openapi.json itself)
    operations = sum(len(item) for item in document["paths"].values()) - 1
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", appliance.url + "/openapi.json",
        "--header", f"Authorization: Bearer {KEY}",
        "--checks", ",".join(CHECKS),
        "--warnings", ",".join(WARNINGS),
        "--phases", "examples,coverage,fuzzing,stateful",
        "--max-examples", str(MAX_EXAMPLES),
        "--generation-deterministic",
        "--workers", "1",
        "--continue-on-failure",
        "--request-timeout", "30",
        "--no-color",
    ]  # fmt: skip
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-30_000:]
    assert f"{operations} selected / {operations} total" in output, output[-5_000:]
    assert "No issues found" in output, output[-5_000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", output)
    assert counts is not None, output[-5_000:]
    generated, passed = map(int, counts.groups())
    assert generated == passed >= operations * 10, output[-5_000:]  # a run that skipped most cases is no pass
