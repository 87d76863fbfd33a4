"""Every message that crosses a process boundary, as msgspec Structs.

Two tagged unions, one per direction of a worker's channel:

    gateway -> worker   Request  = Embed | Rerank | Cancel | Drain
    worker  -> gateway  Response = Ready | Vectors | Scores | Failed | Stats | Bye

plus the in-process types the gateway's parts share, which live here because the gateway may
import this module and never the supervisor or the IPC: ``SlotStatus`` (supervisor -> router) and
``Room`` (the worker link's event for a worker's room signal -> router).

Hot-path structs are ``array_like=True`` (msgpack arrays, no field names on the wire) and
``gc=False`` (they hold no reference cycles). Schema evolution rule: fields are only ever
appended, always with a default, so an old worker and a new gateway still understand each other.
Vectors and scores travel as raw little-endian float32 bytes: ``np.frombuffer`` on the far side,
never a list of Python floats. No pickle crosses a process boundary.
"""

from __future__ import annotations

import enum
from typing import Literal, Union

import msgspec
import numpy as np

from appliance.config import ModelConfig, ModelKind

# An input is text, or (OpenAI's token-id form) a list of token ids for the model's tokenizer.
# The one definition: the gateway, the cache and the runtimes all import it from here.
Input = Union[str, list[int]]
WorkerRole = Literal["primary", "light"]  # the primary loads every model, a light worker the main one
# Which end of an over-long input is cut off: "right" keeps its beginning, "left" its end (the
# special tokens stay either way).
TruncationDirection = Literal["right", "left"]


def can_embed(kind: ModelKind) -> bool:
    """A cross-encoder scores (query, document) pairs; every other kind embeds texts."""
    return kind != "cross_encoder"


# Priorities of Embed and Rerank: lower runs first. A worker fills each batch from interactive
# requests first; background work (bulk jobs) runs in the room they leave (workers/batcher.py).
INTERACTIVE = 0
BACKGROUND = 1


class Embed(msgspec.Struct, tag="embed", array_like=True, gc=False):
    """Embed ``inputs`` with ``model``; answered by one ``Vectors`` or one ``Failed``."""

    id: int
    model: str
    inputs: list[Input]
    truncate: bool = True
    deadline: float = 0.0  # time.monotonic() (CLOCK_MONOTONIC, shared by every process); 0 = none
    priority: int = INTERACTIVE  # or BACKGROUND
    normalize: bool | None = None  # L2-normalise the vectors; None: as the model does by default
    truncation_direction: TruncationDirection = "right"
    # time.monotonic() when the gateway encoded it for a ring: the worker counts the time it waited
    # there, unread while a batch ran, as queueing (0: not stamped, an older gateway)
    sent: float = 0.0
    # idle CPU workers' cores this request may borrow for its forward pass: the gateway lends them
    # only to a lone interactive request on a CPU worker, when no other worker has anything to do
    # (gateway/lending.py); empty: compute on the worker's own cores
    spare_cores: list[int] = []
    # answer per item: an input refused on its own (too long with truncate false, an invalid token
    # id) is named in ``Vectors.refused`` and the others are computed, instead of the whole record
    # failing for it (False: the whole record fails, as an older gateway expects)
    isolate: bool = False


class Rerank(msgspec.Struct, tag="rerank", array_like=True, gc=False):
    """Score each document against the query; answered by one ``Scores`` or one ``Failed``."""

    id: int
    model: str
    query: str
    documents: list[str]
    truncate: bool = True
    deadline: float = 0.0  # as Embed.deadline
    priority: int = INTERACTIVE  # as Embed.priority
    truncation_direction: TruncationDirection = "right"
    # a cross-encoder's logits as they are, not through the sigmoid; a bi-encoder's cosine is
    # the same either way
    raw_scores: bool = False
    sent: float = 0.0  # as Embed.sent
    spare_cores: list[int] = []  # as Embed.spare_cores
    isolate: bool = False  # as Embed.isolate, for the documents (``Scores.refused``); the query still fails it whole


class Cancel(msgspec.Struct, tag="cancel", array_like=True, gc=False):
    """Forget request ``id`` (its client left or its deadline passed): no answer is wanted."""

    id: int


class Drain(msgspec.Struct, tag="drain", array_like=True, gc=False):
    """Finish everything already received, send ``Bye``, exit 0."""

    reason: str = ""


class ModelInfo(msgspec.Struct, array_like=True, gc=False):
    """What a worker holds: enough for /v1/models and for routing."""

    name: str
    kind: ModelKind
    dim: int  # 0 for a cross-encoder (it scores, it does not embed)
    max_length: int
    device: str = "cpu"
    dtype: str = "float32"
    normalize: bool = False  # whether its vectors are L2-normalised when a request does not say
    prompts: dict[str, str] = {}  # prompt name -> the text put before an input (sentence-transformers')
    default_prompt_name: str = ""  # the prompt used when a request names none; "" = no prompt


class Ready(msgspec.Struct, tag="ready", array_like=True, gc=False):
    """Sent once, after every model is loaded and warmed up."""

    worker: int
    pid: int
    models: list[ModelInfo]
    role: WorkerRole = "light"
    device: str = "cpu"
    cores: list[int] = []


class Refusal(msgspec.Struct, array_like=True, gc=False):
    """One input an isolating request (``Embed.isolate``, ``Rerank.isolate``) did not compute, and
    why: ``index`` counts the record's inputs (a rerank's documents), ``kind`` and ``message`` are
    what a ``Failed`` for it would say."""

    index: int
    kind: FailureKind
    message: str


class Vectors(msgspec.Struct, tag="vectors", array_like=True, gc=False):
    """``len(tokens)`` vectors of ``dim`` float32 each, row-major, in input order: the inputs of
    the request less those in ``refused`` (only an isolating request refuses any)."""

    id: int
    dim: int
    data: bytes
    tokens: list[int]
    compute_us: int = 0
    queue_us: int = 0  # from the gateway's send (``Embed.sent``) to its first batch, less tokenizing
    tokenize_us: int = 0
    refused: list[Refusal] = []  # in index order; ``tokens`` and the rows skip them

    def array(self) -> np.ndarray:
        """Zero-copy (n, dim) float32 view of ``data``."""
        return np.frombuffer(self.data, dtype="<f4").reshape(len(self.tokens), self.dim)


class Scores(msgspec.Struct, tag="scores", array_like=True, gc=False):
    """One float32 relevance score per document, in document order.

    ``tokens`` counts each document's tokens (the whole pair for a cross-encoder); a bi-encoder
    also embedded the query once, counted in ``query_tokens``.
    """

    id: int
    scores: bytes
    tokens: list[int]
    compute_us: int = 0
    queue_us: int = 0
    tokenize_us: int = 0
    query_tokens: int = 0
    refused: list[Refusal] = []  # an isolating rerank's refused documents; ``scores`` and ``tokens`` skip them

    def array(self) -> np.ndarray:
        return np.frombuffer(self.scores, dtype="<f4")


class FailureKind(enum.StrEnum):
    """The stable ``Failed.kind`` words; the gateway maps each to an HTTP status."""

    UNKNOWN_MODEL = "unknown_model"  # this worker does not hold the model -> 404
    INPUT_TOO_LONG = "input_too_long"  # truncate=false and too many tokens -> 422
    INVALID_INPUT = "invalid_input"  # e.g. a token id outside the vocabulary -> 422
    UNSUPPORTED = "unsupported"  # the model cannot do this request (a cross-encoder asked to embed) -> 422
    OUT_OF_MEMORY = "out_of_memory"  # even after splitting the batch -> 503
    DEADLINE = "deadline"  # its deadline passed before it reached the model -> 504
    INTERNAL = "internal"  # a bug in the worker; the worker stays up -> 500


class Failed(msgspec.Struct, tag="failed", array_like=True, gc=False):
    """A request error: the request failed, the worker is fine.

    ``kind`` is a stable machine-readable word (see ``FailureKind``); ``index`` names the
    offending input when one input is to blame, else -1.
    """

    id: int
    kind: FailureKind
    message: str
    index: int = -1


# Upper bounds of the batch histograms a worker keeps (the Prometheus ``le`` labels); the counts
# carry one more slot for +Inf. Sizes in inputs, tokens as the model saw them (padding included).
BATCH_SIZE_BOUNDS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
BATCH_TOKEN_BOUNDS: tuple[int, ...] = (64, 256, 1024, 2048, 4096, 8192, 16384, 32768)


class WorkerCounters(msgspec.Struct, kw_only=True, gc=False):
    """A worker's counters, cumulative since it started: the one definition the worker counts
    into, ``Stats`` carries and the gateway's ``/stats`` shows."""

    batches: int = 0
    items: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    requests: int = 0
    rss_bytes: int = 0
    compute_us: int = 0
    cancelled: int = 0  # withdrawn by the gateway (client gone, deadline) before they finished
    expired: int = 0  # dropped by the worker: their deadline passed before they reached the model
    failed_batches: int = 0  # forward passes that raised (their requests got Failed)
    gpu_memory_bytes: int = 0  # torch's allocated CUDA memory on its device; 0 on CPU
    # cumulative histogram counts per bound in BATCH_SIZE_BOUNDS / BATCH_TOKEN_BOUNDS (+Inf last):
    # [i] = batches of at most BOUNDS[i] inputs (padded tokens), [-1] = every batch; always that long
    batch_size_counts: list[int] = msgspec.field(default_factory=lambda: [0] * (len(BATCH_SIZE_BOUNDS) + 1))
    batch_token_counts: list[int] = msgspec.field(default_factory=lambda: [0] * (len(BATCH_TOKEN_BOUNDS) + 1))
    # batches run on the worker's own cores plus idle workers' ones lent by the gateway (``spare_cores``)
    widened_batches: int = 0
    threads: int = 0  # torch's intra-op threads when the counters were read: the own cores' count between batches
    contended_loans: int = 0  # widened batches that ran with a lent core busy (``workers/loans.py``)
    declined_loans: int = 0  # lent batches computed on the own cores while the worker backed off

    # requests failed whole at tokenizing for one input (too long, an invalid token id): with
    # ``requests`` (admitted), every work record that got that far; an isolating request is not
    # refused whole, it is admitted with its refusals
    refused_requests: int = 0


class Stats(msgspec.Struct, tag="stats", array_like=True, gc=False):
    """Periodic worker counters (every ``stats_interval_s``)."""

    worker: int
    pid: int
    counters: WorkerCounters = msgspec.field(default_factory=WorkerCounters)


class Bye(msgspec.Struct, tag="bye", array_like=True, gc=False):
    """Last message of a draining worker: everything it received has been answered."""

    worker: int
    reason: str = ""


class Room:
    """In process only, never encoded: a worker took records off its request ring after a send had
    found it full (its room signal, ``appliance/ipc/channel.py``); the link hands it to the router."""

    __slots__ = ()


Request = Union[Embed, Rerank, Cancel, Drain]
Response = Union[Ready, Vectors, Scores, Failed, Stats, Bye]


class RequestCodec:
    """Typed msgpack encoder/decoder for the gateway -> worker direction, built once."""

    __slots__ = ("encode", "decode")

    def __init__(self) -> None:
        self.encode = msgspec.msgpack.Encoder().encode
        self.decode = msgspec.msgpack.Decoder(Request).decode


class ResponseCodec:
    """Typed msgpack encoder/decoder for the worker -> gateway direction, built once."""

    __slots__ = ("encode", "decode")

    def __init__(self) -> None:
        self.encode = msgspec.msgpack.Encoder().encode
        self.decode = msgspec.msgpack.Decoder(Response).decode


def f32_bytes(array: np.ndarray) -> bytes:
    """Raw little-endian float32 bytes of ``array`` (copies only if it must convert)."""
    return np.ascontiguousarray(array, dtype="<f4").tobytes()


# ---- worker start-up ------------------------------------------------------------------------
# Exit codes a worker uses to tell the supervisor *why* it stopped. Boot and load failures are
# not transient: the supervisor stops respawning instead of cycling forever (gunicorn's
# WORKER_BOOT_ERROR / APP_LOAD_ERROR idea).
EXIT_OK = 0
EXIT_BOOT_ERROR = 3  # could not pin itself, attach the channel or import torch
EXIT_LOAD_ERROR = 4  # a configured model failed to load or warm up
EXIT_PARENT_GONE = 5  # the gateway disappeared; nobody would read our results


class ChannelSpec(msgspec.Struct, frozen=True):
    """What a worker needs to attach its channel (``appliance.ipc.channel.Channel.attach``)."""

    name: str  # the /dev/shm segment
    ring_bytes: int
    request_fd: int  # inherited eventfds (pass_fds)
    response_fd: int


class WorkerSpec(msgspec.Struct, forbid_unknown_fields=False):
    """Everything a worker process needs, passed as JSON on its command line."""

    worker: int
    role: WorkerRole
    cores: list[int]
    gpu: int | None
    channel: ChannelSpec
    models: list[ModelConfig]
    state_dir: str
    max_batch_tokens: int
    max_batch_size: int
    max_wait_us: int = 0
    log_level: str = "info"
    stats_interval_s: float = 1.0
    parent_pid: int = 0
    borrows_cores: bool = False  # the gateway may lend it idle workers' cores (``lend_idle_cores``)


# ---- supervision, as the gateway is told it --------------------------------------------------
# Not a message between processes: what the supervisor tells the router (``WorkerEvents``).

# stopped: no process (a respawn is due) | starting: spawned, not Ready yet | ready: serving |
# draining: finishing its work before a planned exit | failed: will not be respawned
SlotState = Literal["stopped", "starting", "ready", "draining", "failed"]
# Why a slot's worker was replaced, one count per respawn (a slot that failed for good is not respawned):
# crash: an unplanned exit of a ready worker (or one killed for a corrupt response ring) |
# heartbeat: killed as silent (worker_timeout) or stuck loading (ready_timeout) |
# recycle: a planned replacement (worker_rss_limit, worker_max_batches) |
# boot_failure: it exited before Ready
RestartCause = Literal["crash", "heartbeat", "recycle", "boot_failure"]
RESTART_CAUSES: tuple[RestartCause, ...] = ("crash", "heartbeat", "recycle", "boot_failure")


class SlotStatus(msgspec.Struct, kw_only=True, frozen=True):
    """One worker slot as the supervisor sees it, sent to the router at every change of state."""

    role: WorkerRole
    device: str  # "cuda:<slot gpu>" or "cpu"
    cores: tuple[int, ...]  # the CPU cores the slot's worker is pinned to
    state: SlotState
    restarts: dict[str, int] = {}  # RestartCause -> respawns over the appliance's life; causes never seen are absent
