"""appliance/config.py: layer precedence and key-naming validation errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance import config as cfg
from appliance.config import ConfigError, load_config


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "appliance.toml"
    path.write_text(text)
    return path


def test_defaults_are_valid_and_have_two_models() -> None:
    config = load_config(environ={})
    assert config.port == 11435 and config.host == "127.0.0.1"
    assert config.main_model().name == cfg.MAIN_MODEL_NAME
    assert [m.name for m in config.models] == [cfg.MAIN_MODEL_NAME, cfg.STATIC_MODEL_NAME]


def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'port = 9000\nhost = "0.0.0.0"\nmax_batch_size = 7\nallow_unauthenticated = true\n')
    only_file = load_config(path, environ={})
    assert (only_file.port, only_file.host, only_file.max_batch_size) == (9000, "0.0.0.0", 7)
    env = {"APPLIANCE_PORT": "9001", "APPLIANCE_MAX_BATCH_SIZE": "9"}
    file_env = load_config(path, environ=env)
    assert (file_env.port, file_env.max_batch_size, file_env.host) == (9001, 9, "0.0.0.0")
    all_three = load_config(path, environ=env, flags={"port": 9002, "host": None})
    assert (all_three.port, all_three.max_batch_size, all_three.host) == (9002, 9, "0.0.0.0")


def test_sizes_accept_units_and_workers_accept_int_or_auto() -> None:
    config = load_config(environ={"APPLIANCE_RING_BYTES": "1MiB", "APPLIANCE_WORKERS": "3",
                                  "APPLIANCE_MEMORY_FLOOR": "2GB"})
    assert config.ring_bytes == 1 << 20 and config.workers == 3 and config.memory_floor == 2 * 10**9
    assert load_config(environ={"APPLIANCE_WORKERS": "auto"}).workers == "auto"


def test_every_size_key_accepts_units() -> None:
    sizes = [key for key in cfg.field_names() if key.endswith("_bytes")] + ["memory_floor", "worker_rss_limit"]
    config = load_config(environ={f"APPLIANCE_{key.upper()}": "1MiB" for key in sizes})
    assert {key: getattr(config, key) for key in sizes} == {key: 1 << 20 for key in sizes}


def test_models_from_file_and_env(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[[models]]\nname = "a"\npath = "/m/a"\nmain = true\n'
                                '[[models]]\nname = "b"\npath = "/m/b"\nkind = "cross_encoder"\n')
    config = load_config(path, environ={})
    assert [(m.name, m.kind, m.main) for m in config.models] == [
        ("a", "transformer", True), ("b", "cross_encoder", False)]
    env = {"APPLIANCE_MODELS": json.dumps([{"name": "z", "path": "/m/z", "main": True}])}
    assert [m.name for m in load_config(path, environ=env).models] == ["z"]


def test_model_prompts_from_a_file_table(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[[models]]\nname = "a"\npath = "/m/a"\nmain = true\n'
                                'default_prompt_name = "query"\n[models.prompts]\nquery = "query: "\n'
                                'document = "passage: "\n')  # fmt: skip
    (model,) = load_config(path, environ={}).models
    assert model.prompts == {"query": "query: ", "document": "passage: "} and model.default_prompt_name == "query"
    assert cfg.ModelConfig(name="b", path="/m/b").prompts is None  # unset: the model's own files decide


BAD_VALUES = [
    ({"APPLIANCE_PORT": "0"}, "port"),
    ({"APPLIANCE_PORT": "http"}, "port"),
    ({"APPLIANCE_HOST": ""}, "host"),
    ({"APPLIANCE_WORKERS": "many"}, "workers"),
    ({"APPLIANCE_WORKERS": "0"}, "workers"),
    ({"APPLIANCE_GATEWAY_CORES": "-1"}, "gateway_cores"),
    ({"APPLIANCE_MAX_BATCH_TOKENS": "0"}, "max_batch_tokens"),
    ({"APPLIANCE_MAX_BATCH_SIZE": "-3"}, "max_batch_size"),
    ({"APPLIANCE_MAX_WAIT_US": "-1"}, "max_wait_us"),
    ({"APPLIANCE_RING_BYTES": "lots"}, "ring_bytes"),
    ({"APPLIANCE_MAX_BODY_BYTES": "-5"}, "max_body_bytes"),
    ({"APPLIANCE_MAX_BODY_BYTES": "0"}, "max_body_bytes"),
    ({"APPLIANCE_MAX_JOB_BODY_BYTES": "0"}, "max_job_body_bytes"),
    ({"APPLIANCE_RING_BYTES": "65540"}, "ring_bytes"),
    ({"APPLIANCE_RING_BYTES": "32KiB"}, "ring_bytes"),
    ({"APPLIANCE_RING_BYTES": "8GiB"}, "ring_bytes"),
    ({"APPLIANCE_MAX_INPUTS": "0"}, "max_inputs"),
    ({"APPLIANCE_MAX_INPUT_CHARS": "0"}, "max_input_chars"),
    ({"APPLIANCE_MAX_PENDING_INPUTS": "0"}, "max_pending_inputs"),
    ({"APPLIANCE_REQUEST_TIMEOUT": "0"}, "request_timeout"),
    ({"APPLIANCE_CACHE_BYTES": "-1"}, "cache_bytes"),
    ({"APPLIANCE_CACHE_MAX_TEXT_CHARS": "-1"}, "cache_max_text_chars"),
    ({"APPLIANCE_MEMORY_FLOOR": "-1GB"}, "memory_floor"),
    ({"APPLIANCE_WORKER_RSS_LIMIT": "x"}, "worker_rss_limit"),
    ({"APPLIANCE_WORKER_MAX_BATCHES": "-1"}, "worker_max_batches"),
    ({"APPLIANCE_WORKER_TIMEOUT": "0"}, "worker_timeout"),
    ({"APPLIANCE_READY_TIMEOUT": "-2"}, "ready_timeout"),
    ({"APPLIANCE_SHUTDOWN_GRACE": "never"}, "shutdown_grace"),
    ({"APPLIANCE_STATE_DIR": ""}, "state_dir"),
    ({"APPLIANCE_RATE_LIMIT_RPM": "-1"}, "rate_limit_rpm"),
    ({"APPLIANCE_RATE_LIMIT_IPM": "1.5"}, "rate_limit_ipm"),
    ({"APPLIANCE_LOG_LEVEL": "loud"}, "log_level"),
    ({"APPLIANCE_MODELS": "not json"}, "models"),
    ({"APPLIANCE_MODELS": "[]"}, "models"),
    ({"APPLIANCE_MODELS": '[{"name": "a", "path": "/a"}]'}, "models"),
    ({"APPLIANCE_MODELS": '[{"name": "a", "path": "/a", "main": true, "kind": "gpt"}]'}, "models[0].kind"),
    ({"APPLIANCE_MODELS": '[{"name": "a", "path": "/a", "main": true, "dtype": "int3"}]'}, "models[0].dtype"),
    ({"APPLIANCE_MODELS": '[{"name": "", "path": "/a", "main": true}]'}, "models[0].name"),
    ({"APPLIANCE_MODELS": '[{"name": "a", "path": "/a", "main": true},{"name": "a", "path": "/b"}]'},
     "models[1].name"),
    ({"APPLIANCE_MODELS": '[{"name": "a", "path": "/a", "main": true, "kind": "cross_encoder"}]'}, "models"),
    ({"APPLIANCE_MODELS": '[{"name": "a", "path": "/a", "main": true, "prompts": {"query": 1}}]'},
     "models[0].prompts"),
    ({"APPLIANCE_MODELS": '[{"name": "a", "path": "/a", "main": true, "prompts": ["query: "]}]'},
     "models[0].prompts"),
    ({"APPLIANCE_MODELS": '[{"name": "a", "path": "/a", "main": true, "default_prompt_name": 2}]'},
     "models[0].default_prompt_name"),
]


@pytest.mark.parametrize(("environ", "key"), BAD_VALUES, ids=[k for _, k in BAD_VALUES])
def test_every_invalid_value_names_its_key(environ: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(environ=environ)
    assert info.value.key == key
    assert f"`{key}`" in str(info.value)
    assert "APPLIANCE_" in str(info.value)  # names the layer the bad value came from


def test_bad_file_values_name_key_and_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "port = 70000\n")
    with pytest.raises(ConfigError, match=r"`port` \(from file .*appliance.toml\)"):
        load_config(path, environ={})
    with pytest.raises(ConfigError, match="`colour`.*unknown key"):
        load_config(write_toml(tmp_path, 'colour = "red"\n'), environ={})
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(write_toml(tmp_path, "port = = 1\n"), environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml", environ={})


LOOPBACK = ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "::ffff:127.0.0.1", "localhost", "LocalHost"]


@pytest.mark.parametrize("host", LOOPBACK)
def test_a_loopback_host_needs_no_keys(host: str) -> None:
    assert load_config(environ={"APPLIANCE_HOST": host}).host == host


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "fe80::1", "appliance.example", "128.0.0.1"])
def test_a_reachable_host_without_keys_refuses_to_load_naming_host_and_the_fix(host: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(environ={"APPLIANCE_HOST": host})
    assert info.value.key == "host"
    message = str(info.value)
    assert message.startswith("config key `host` (from APPLIANCE_HOST)")
    assert "api_keys_file" in message and "allow_unauthenticated = true" in message


def test_a_reachable_host_is_fine_with_keys_or_an_explicit_yes(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("sk-one\n")
    with_keys = load_config(environ={"APPLIANCE_HOST": "0.0.0.0", "APPLIANCE_API_KEYS_FILE": str(keys)})
    assert with_keys.api_keys_file == str(keys) and not with_keys.allow_unauthenticated
    open_on_purpose = load_config(write_toml(tmp_path, 'host = "::"\nallow_unauthenticated = true\n'), environ={})
    assert open_on_purpose.allow_unauthenticated is True
    flag = load_config(environ={"APPLIANCE_ALLOW_UNAUTHENTICATED": "true"}, flags={"host": "0.0.0.0"})
    assert flag.host == "0.0.0.0"
    with pytest.raises(ConfigError, match=r"`host` \(from flag\)"):
        load_config(environ={"APPLIANCE_ALLOW_UNAUTHENTICATED": "false"}, flags={"host": "0.0.0.0"})


@pytest.mark.parametrize("key", ["max_body_bytes", "max_job_body_bytes"])
def test_a_zero_body_limit_is_refused_not_read_as_unlimited(key: str) -> None:
    with pytest.raises(ConfigError, match=f"`{key}`.*at least 1 byte; 0 would turn the body limit off"):
        load_config(environ={f"APPLIANCE_{key.upper()}": "0"})
    assert getattr(load_config(environ={f"APPLIANCE_{key.upper()}": "1"}), key) == 1


@pytest.mark.parametrize("value", ["65540", str((64 << 10) - 8), "8191", "0", str((1 << 32) + 8)])
def test_ring_bytes_must_be_a_multiple_of_8_from_64kib_to_4gib(value: str) -> None:
    expected = rf"`ring_bytes` \(from APPLIANCE_RING_BYTES\): must be a multiple of 8 .*got {value}$"
    with pytest.raises(ConfigError, match=expected):
        load_config(environ={"APPLIANCE_RING_BYTES": value})


def test_the_ring_bounds_are_the_rings_own_and_the_smallest_carries_one_input() -> None:
    from appliance.ipc import ring
    from gateway.parts import ANSWER_ROW_SLACK, record_budget

    assert (cfg.RING_ALIGN, cfg.MAX_RING_BYTES) == (8, ring.MAX_CAPACITY)
    for ok in ("64KiB", str(cfg.MIN_RING_BYTES + 8), "4GiB"):
        ring.check_capacity(load_config(environ={"APPLIANCE_RING_BYTES": ok}).ring_bytes)
    assert record_budget(cfg.MIN_RING_BYTES) >= 4096 * 4 + ANSWER_ROW_SLACK  # a 4096-dimension answer row


def test_every_key_has_a_doc_line() -> None:
    text = cfg.describe(load_config(environ={}))
    for key in cfg.field_names():
        if key == "models":
            continue
        assert f"\n{key} = " in "\n" + text, key
    docs = [line for line in text.splitlines() if line.startswith("# ")]
    assert len(docs) == len(cfg.field_names()) - 1 and all(len(d) > 10 for d in docs)


def test_package_reference_resolves_to_the_hf_directory() -> None:
    path = cfg.resolve_model_path(cfg.MAIN_MODEL_PACKAGE, ".state")
    assert (path / "config.json").exists() and (path / "modules.json").exists()
    assert cfg.resolve_model_path("state:models/x", "/var/lib/a") == Path("/var/lib/a/models/x")
    with pytest.raises(FileNotFoundError, match="not installed"):
        cfg.resolve_model_path("package:no_such_package_here", ".state")


@pytest.mark.parametrize(("environ", "key"), [
    ({"APPLIANCE_LOG_FORMAT": "xml"}, "log_format"),
    ({"APPLIANCE_ACCESS_LOG": "maybe"}, "access_log"),
    ({"APPLIANCE_ACCESS_LOG_SAMPLE": "1.5"}, "access_log_sample"),
    ({"APPLIANCE_ACCESS_LOG_SAMPLE": "-0.1"}, "access_log_sample"),
    ({"APPLIANCE_ACCESS_LOG_SAMPLE": "half"}, "access_log_sample"),
])  # fmt: skip
def test_bad_log_settings_name_their_key(environ: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(environ=environ)
    assert info.value.key == key and f"`{key}`" in str(info.value) and "APPLIANCE_" in str(info.value)


def test_log_settings_default_to_text_and_no_access_log_and_take_every_layer(tmp_path: Path) -> None:
    default = load_config(environ={})
    assert (default.log_format, default.access_log, default.access_log_sample) == ("text", False, 1.0)
    path = write_toml(tmp_path, 'log_format = "json"\naccess_log = true\naccess_log_sample = 0.25\n')
    from_file = load_config(path, environ={})
    assert (from_file.log_format, from_file.access_log, from_file.access_log_sample) == ("json", True, 0.25)
    from_env = load_config(environ={"APPLIANCE_LOG_FORMAT": "json", "APPLIANCE_ACCESS_LOG": "true",
                                    "APPLIANCE_ACCESS_LOG_SAMPLE": "0"})  # fmt: skip
    assert (from_env.log_format, from_env.access_log, from_env.access_log_sample) == ("json", True, 0.0)
    assert load_config(path, environ={}, flags={"log_format": "text"}).log_format == "text"
