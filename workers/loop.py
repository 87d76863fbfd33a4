"""The worker's serving loop: one readable cycle of poll -> step -> publish.

Each model has its own ``Batcher`` (a forward pass runs one model); requests are tokenized when
they arrive, their items join the model's batcher, and a request is answered with exactly one
record once its last item has been computed. A request error (bad input, an exception in one
batch) fails that request and only that request; the loop itself keeps going.

Counting: every batch that ran adds to the cumulative counters (``WorkerCounters``) and to two
histograms (``workers/histogram.py``): its size in inputs and its padded tokens, as the model saw
them. Both cost one bisect per batch; ``stats`` turns them into the cumulative counts ``Stats``
carries, with the RSS and (on a GPU) torch's allocated CUDA memory, about once a second.

Per-request choices: the runtimes answer unnormalised vectors and a cross-encoder's raw logits;
``result`` applies each request's own choices when it assembles that request's answer: the L2
norm (``Embed.normalize``, else the model's default) and the sigmoid (unless ``Rerank.raw_scores``).
The truncation direction is the tokenizer's business, at ``admit``. A bi-encoder rerank answers
cosines, which neither the norm nor ``raw_scores`` changes.

Priority: each request's items join its model's batcher in the message's class (``Embed.priority``,
``Rerank.priority``), and each step runs the batch of the model with the most urgent queued work
(round-robin among equals), so interactive work of one model never waits behind background work
of another.

Per-item refusals: an ``Embed`` (a ``Rerank``: its documents) with ``isolate`` is tokenized by
``workers/refusals.py``, which leaves out each input the tokenizer refuses on its own and names
it in a ``Refusal``; the rest are batched as usual, and the one ``Vectors`` (``Scores``)
answering the request carries their rows and ``tokens`` (the refused skipped) and the refusals.
Without ``isolate`` the first refused input fails the whole request with a ``Failed`` naming it
(counted in ``refused_requests``).

Lent cores: a request may carry idle workers' cores the gateway lends it (``Embed.spare_cores``,
``gateway/lending.py``). A batch runs on them too (``workers/pinning.py`` ``TorchThreads``) only
when every request in it carries a loan and nothing else is queued here: the loan was made for a
lone request, and a batch with other work in it, or behind it, is not one. The intersection of
the loans is used; ``widened_batches`` counts such batches, and ``Stats`` carries the thread count
as it is between batches (``threads``), back to the own cores' count. A widened pass that ran
contended (a lent core busy with something the gateway cannot see) makes the worker compute its
loans on its own cores for a while (``workers/loans.py``; counted in ``contended_loans`` and
``declined_loans``).
"""

from __future__ import annotations

import heapq
import logging
import os
import time
from dataclasses import dataclass
from typing import Callable, Literal, Protocol, Sequence

import numpy as np
import psutil

from appliance.ipc.ring import RecordTooLarge
from appliance.protocol import (
    BATCH_SIZE_BOUNDS,
    BATCH_TOKEN_BOUNDS,
    EXIT_OK,
    EXIT_PARENT_GONE,
    Bye,
    Cancel,
    Drain,
    Embed,
    Failed,
    FailureKind,
    Input,
    ModelInfo,
    Ready,
    Request,
    RequestCodec,
    Refusal,
    Rerank,
    ResponseCodec,
    Scores,
    Stats,
    Vectors,
    WorkerCounters,
    WorkerSpec,
    can_embed,
    f32_bytes,
)
from workers.batcher import Batch, Batcher
from workers.histogram import Histogram
from workers.loans import LoanGuard
from workers.models import device_for
from workers.pinning import TorchThreads
from workers.refusals import tokenize_each
from workers.runtimes import InputTooLong, Runtime, Tokenized, cosine_scores, l2_normalize, sigmoid
from workers.signals import sigterm_received

log = logging.getLogger("appliance.worker")

IDLE_WAIT_S = 0.2  # longest blocking wait: bounds heartbeat gaps and drain/parent checks
SEND_RETRY_S = 1.0
DEADLINE_PASSED = "its deadline passed before it reached the model"


# How a request's items become its answer: embed -> Vectors; a bi-encoder rerank embeds the query
# and the documents and answers their cosines; a cross-encoder rerank answers its pair scores.
Mode = Literal["embed", "bi_rerank", "cross_rerank"]


@dataclass(slots=True)
class Pending:
    """A request whose items are in a batcher."""

    id: int
    model: str
    mode: Mode
    tokens: list[int]
    received_ns: int
    tokenize_us: int
    first_batch_ns: int = 0
    compute_us: int = 0
    normalize: bool = False  # embed: L2-normalise the rows (resolved: the request's, else the model's)
    raw_scores: bool = False  # cross_rerank: the logits, not their sigmoid
    spare_cores: tuple[int, ...] = ()  # idle workers' cores the gateway lent it (``Embed.spare_cores``)
    refused: list[Refusal] | None = None  # an isolating request's refused inputs (``workers/refusals.py``)


class WorkerLoop:
    """One worker's serving cycle over its runtimes; ``run`` returns the process exit code."""

    def __init__(self, spec: WorkerSpec, channel: "ChannelLike", runtimes: dict[str, Runtime]) -> None:
        self.spec = spec
        self.channel = channel
        self.runtimes = runtimes
        self.batchers = {
            name: Batcher(spec.max_batch_tokens, spec.max_batch_size, max_wait_us=spec.max_wait_us,
                          overhead_tokens=getattr(runtime, "overhead_tokens", None))  # measured at warm-up
            for name, runtime in runtimes.items()
        }
        self.pending: dict[int, Pending] = {}
        self.deadlines: list[tuple[float, int]] = []  # heap of (deadline, request id)
        self.requests = RequestCodec()
        self.responses = ResponseCodec()
        self.counters = WorkerCounters()
        self.batch_sizes = Histogram(BATCH_SIZE_BOUNDS)
        self.batch_tokens = Histogram(BATCH_TOKEN_BOUNDS)
        self.device = device_for(spec)
        self.threads = TorchThreads(spec.cores)
        self.loans = LoanGuard()
        # a GPU worker's forward runs on its GPU: lent cores would not speed it (nor are any lent);
        # one not set to borrow has passive OpenMP threads, which lose on lent cores (workers/pinning.py)
        self.may_widen = self.device == "cpu" and spec.borrows_cores
        self.draining = False
        self.process = psutil.Process()
        self._next_stats = 0.0
        self._turn = 0  # round-robin position over the models' batchers
        self._ran_batch = False

    # ---- the cycle -----------------------------------------------------------------------
    def run(self) -> int:
        self.send_ready()
        while True:
            self.receive()  # 1) poll input (blocks only when there is nothing to compute)
            self.step()  # 2) one forward batch
            self.housekeeping()  # 3) heartbeat, stats
            if self.parent_gone():
                log.error("gateway (pid %d) is gone; exiting", self.spec.parent_pid,
                          extra={"event": "worker_orphaned", "worker": self.spec.worker,
                                 "gateway_pid": self.spec.parent_pid})  # fmt: skip
                return EXIT_PARENT_GONE
            if self.draining and not self.pending:
                self.send(Bye(worker=self.spec.worker, reason="drained"))
                return EXIT_OK

    def receive(self) -> None:
        if self.pending and self._ran_batch:
            records = self.channel.poll_requests()  # more work is ready: do not sleep
        else:
            # nothing to compute, or a batch held back by max_wait_us: block (bounded) for input
            records = self.channel.wait_requests(self.idle_wait())
        for record in records:
            self.handle(self.requests.decode(record))

    def parent_gone(self) -> bool:
        """The gateway that started us has exited (we were re-parented): nobody reads our results."""
        return bool(self.spec.parent_pid) and os.getppid() != self.spec.parent_pid

    def idle_wait(self) -> float:
        hints = [h for b in self.batchers.values() if (h := b.wait_hint_s()) is not None]
        return min([IDLE_WAIT_S, *hints])

    def step(self) -> None:
        self.expire()
        names = list(self.batchers)
        self._ran_batch = False
        order = [names[(self._turn + k) % len(names)] for k in range(len(names))]  # round-robin
        order.sort(key=lambda name: self.batchers[name].urgency)  # stable: most urgent work first
        for name in order:
            batch = self.batchers[name].next_batch()
            if batch is not None:
                self._turn = (names.index(name) + 1) % len(names)
                self.run_batch(name, batch)
                self._ran_batch = True
                return

    def housekeeping(self) -> None:
        self.channel.beat()
        if sigterm_received() and not self.draining:
            log.info("SIGTERM: draining %d request(s)", len(self.pending),
                     extra={"event": "worker_draining", "worker": self.spec.worker, "reason": "SIGTERM",
                            "pending": len(self.pending)})  # fmt: skip
            self.draining = True
        now = time.monotonic()
        if now >= self._next_stats:
            self._next_stats = now + self.spec.stats_interval_s
            self.send(self.stats())

    def expire(self) -> None:
        """Drop requests whose deadline passed while they queued: nobody waits for them any more."""
        if not self.deadlines or self.deadlines[0][0] > time.monotonic():
            return
        now = time.monotonic()
        while self.deadlines and self.deadlines[0][0] <= now:
            _, request_id = heapq.heappop(self.deadlines)
            if request_id in self.pending:  # not answered yet (ids are not reused while pending)
                self.counters.expired += 1
                self.fail(request_id, FailureKind.DEADLINE, DEADLINE_PASSED)

    # ---- requests ------------------------------------------------------------------------
    def handle(self, message: Request) -> None:
        match message:
            case Cancel():
                self.cancel(message.id)
            case Drain():
                self.drain(message.reason)
            case Embed():
                self.embed(message)
            case Rerank():
                self.rerank(message)

    def cancel(self, request_id: int) -> None:
        """Withdrawn by the gateway: drop it silently (nobody wants an answer any more)."""
        if self.pending.pop(request_id, None) is not None:
            self.counters.cancelled += 1
            for batcher in self.batchers.values():
                batcher.cancel(request_id)

    def drain(self, reason: str) -> None:
        log.info("drain requested (%s); %d request(s) to finish", reason, len(self.pending),
                 extra={"event": "worker_draining", "worker": self.spec.worker, "reason": reason,
                        "pending": len(self.pending)})  # fmt: skip
        self.draining = True

    def embed(self, message: Embed) -> None:
        runtime = self.runtime_for(message)
        if runtime is not None:
            # a cross-encoder's own tokenize refuses (TypeError), which fails the request as unsupported
            normalize = runtime.normalize if message.normalize is None else message.normalize
            refused: list[Refusal] | None = [] if message.isolate else None  # filled by the tokenizing
            self.admit(message, "embed", lambda: embed_items(runtime, message, refused), normalize=normalize,
                       refused=refused)  # fmt: skip

    def rerank(self, message: Rerank) -> None:
        runtime = self.runtime_for(message)
        if runtime is None:
            return
        refused: list[Refusal] | None = [] if message.isolate else None  # filled by the tokenizing
        if can_embed(runtime.kind):  # a bi-encoder compares embeddings; a cross-encoder scores the pairs
            self.admit(message, "bi_rerank", lambda: bi_rerank_items(runtime, message, refused), refused=refused)
        else:
            self.admit(message, "cross_rerank", lambda: cross_rerank_items(runtime, message, refused),
                       raw_scores=message.raw_scores, refused=refused)  # fmt: skip

    def runtime_for(self, message: Embed | Rerank) -> Runtime | None:
        """The runtime that will serve ``message``; None once it has been answered with why not."""
        if message.deadline and message.deadline <= time.monotonic():
            self.counters.expired += 1
            self.send(Failed(message.id, FailureKind.DEADLINE, DEADLINE_PASSED))
            return None
        runtime = self.runtimes.get(message.model)
        if runtime is None:
            held = ", ".join(self.runtimes)
            self.fail(message.id, FailureKind.UNKNOWN_MODEL, f"worker {self.spec.worker} does not hold model "
                      f"{message.model!r} (it holds: {held})")  # fmt: skip
        return runtime

    def admit(self, message: Embed | Rerank, mode: Mode, tokenize: Callable[[], list[Tokenized]], *,
              normalize: bool = False, raw_scores: bool = False, refused: list[Refusal] | None = None) -> None:  # fmt: skip
        """Tokenize ``message`` and queue its items; a bad input fails only this request (an
        isolating one's only that input: ``tokenize`` fills ``refused`` and leaves it out).
        ``normalize``, ``raw_scores`` and ``refused`` are kept for ``result``."""
        received = time.perf_counter_ns()
        try:
            items = tokenize()
        except InputTooLong as exc:
            self.counters.refused_requests += 1
            self.fail(message.id, FailureKind.INPUT_TOO_LONG, str(exc), exc.index)
            return
        except ValueError as exc:  # e.g. a token id outside the vocabulary
            self.counters.refused_requests += 1
            self.fail(message.id, FailureKind.INVALID_INPUT, str(exc), getattr(exc, "index", -1))
            return
        except TypeError as exc:  # the model cannot do this kind of request
            self.fail(message.id, FailureKind.UNSUPPORTED, str(exc))
            return
        tokenize_us = (time.perf_counter_ns() - received) // 1000
        if not items and refused:  # every input refused: nothing to compute, answer now
            self.counters.requests += 1
            self.send(self.nothing_computed(message, refused, tokenize_us))
            return
        # back-dated by the time it waited unread in the ring (a batch was running): queueing too
        received -= ring_wait_ns(message.sent)
        lengths = [t.length for t in items]
        try:
            self.batchers[message.model].add(message.id, lengths, items, priority=message.priority)
        except ValueError as exc:  # a duplicate id, or an item over the whole batch budget
            # not self.fail(): that would also cancel an earlier request holding the same id
            self.send(Failed(message.id, FailureKind.INVALID_INPUT, str(exc)))
            return
        self.counters.requests += 1
        self.pending[message.id] = Pending(message.id, message.model, mode, lengths, received, tokenize_us,
                                           normalize=normalize, raw_scores=raw_scores,
                                           spare_cores=tuple(message.spare_cores), refused=refused)  # fmt: skip
        if message.deadline:
            heapq.heappush(self.deadlines, (message.deadline, message.id))

    def nothing_computed(self, message: Embed | Rerank, refused: list[Refusal], tokenize_us: int) -> Vectors | Scores:
        """The answer of an isolating request whose every input was refused."""
        if isinstance(message, Embed):
            return Vectors(message.id, self.runtimes[message.model].dim, b"", [], tokenize_us=tokenize_us,
                           refused=refused)  # fmt: skip
        return Scores(message.id, b"", [], tokenize_us=tokenize_us, refused=refused)  # a cross-encoder's

    # ---- batches -------------------------------------------------------------------------
    def run_batch(self, name: str, batch: Batch) -> None:
        started = time.perf_counter_ns()
        batcher = self.batchers[name]
        try:
            outputs = self.forward(name, batch)
        except Exception as exc:
            self.counters.failed_batches += 1
            log.exception("batch of %d item(s) on %r failed", len(batch.payloads), name,
                          extra={"event": "batch_failed", "worker": self.spec.worker, "model": name,
                                 "items": len(batch.payloads)})  # fmt: skip
            kind = FailureKind.OUT_OF_MEMORY if is_out_of_memory(exc) else FailureKind.INTERNAL
            for key in batcher.fail_batch(batch):
                self.fail(int(key), kind, f"{type(exc).__name__}: {exc}")
            return
        elapsed_us = (time.perf_counter_ns() - started) // 1000
        self.count_batch(batch, elapsed_us)
        for key in set(batch.keys):
            request = self.pending.get(int(key))
            if request is not None:
                request.compute_us += elapsed_us
                request.first_batch_ns = request.first_batch_ns or started
        for key, result in batcher.complete(batch, outputs):
            request = self.pending.pop(int(key), None)
            if request is not None:
                self.send(self.result(request, result))

    def forward(self, name: str, batch: Batch) -> np.ndarray:
        """The batch's forward pass; on the lent cores too when it may use them (``lent_cores``)."""
        spare = self.lent_cores(batch)
        if not self.may_widen or not spare or not self.loans.allows():
            return forward_splitting_on_oom(self.runtimes[name].forward, batch.payloads)
        with self.threads.widened(spare) as widened:
            if not widened:
                return forward_splitting_on_oom(self.runtimes[name].forward, batch.payloads)
            self.counters.widened_batches += 1
            threads = self.threads.count()
            wall, cpu = time.perf_counter(), time.process_time()
            outputs = forward_splitting_on_oom(self.runtimes[name].forward, batch.payloads)
            self.loans.record(threads, time.perf_counter() - wall, time.process_time() - cpu)
            return outputs

    def lent_cores(self, batch: Batch) -> tuple[int, ...]:
        """The cores every request in ``batch`` was lent, when nothing else is queued; else none."""
        if any(batcher.pending_items for batcher in self.batchers.values()):
            return ()  # more work here: the gateway lent the cores to a lone request, not to this
        loans = [request.spare_cores for key in set(batch.keys) if (request := self.pending.get(int(key)))]
        if not loans or not all(loans):
            return ()
        return tuple(sorted(set(loans[0]).intersection(*loans[1:])))

    def count_batch(self, batch: Batch, elapsed_us: int) -> None:
        c = self.counters
        c.batches += 1
        c.items += len(batch.payloads)
        c.tokens += sum(batch.lengths)
        c.padded_tokens += batch.padded_tokens
        c.compute_us += elapsed_us
        self.batch_sizes.observe(len(batch.payloads))
        self.batch_tokens.observe(batch.padded_tokens)

    def result(self, request: Pending, output: np.ndarray) -> Vectors | Scores:
        queue_us = max(0, (request.first_batch_ns - request.received_ns) // 1000 - request.tokenize_us)
        if request.mode == "embed":
            vectors = l2_normalize(output) if request.normalize else output
            return Vectors(request.id, int(output.shape[1]), f32_bytes(vectors), request.tokens,
                           request.compute_us, queue_us, request.tokenize_us, request.refused or [])  # fmt: skip
        if request.mode == "bi_rerank":
            scores = cosine_scores(output[0], output[1:])
            return Scores(request.id, f32_bytes(scores), request.tokens[1:], request.compute_us, queue_us,
                          request.tokenize_us, query_tokens=request.tokens[0], refused=request.refused or [])  # fmt: skip
        logits = output.reshape(-1)
        return Scores(request.id, f32_bytes(logits if request.raw_scores else sigmoid(logits)), request.tokens,
                      request.compute_us, queue_us, request.tokenize_us, refused=request.refused or [])  # fmt: skip

    # ---- output --------------------------------------------------------------------------
    def fail(self, request_id: int, kind: FailureKind, message: str, index: int = -1) -> None:
        self.pending.pop(request_id, None)
        for batcher in self.batchers.values():
            batcher.cancel(request_id)
        self.send(Failed(request_id, kind, message, index))

    def send(self, message: object) -> None:
        try:
            record = self.responses.encode(message)
        except Exception:  # never let one bad message take the worker down
            log.exception("cannot encode %s", type(message).__name__)
            return
        try:
            while not self.channel.send_response(record, timeout=SEND_RETRY_S):
                # The gateway is not draining its ring: keep the heartbeat alive while we wait,
                # and give up if the gateway itself is gone.
                self.channel.beat()
                if self.parent_gone():
                    return
                log.warning("response ring full for %.1fs; still waiting", SEND_RETRY_S)
        except RecordTooLarge as exc:
            request_id = getattr(message, "id", -1)
            log.error("result for request %d too large for the ring: %s", request_id, exc)
            self.send(Failed(request_id, FailureKind.INTERNAL, f"result too large for the ring: {exc}"))

    def send_ready(self) -> None:
        infos: list[ModelInfo] = [rt.info() for rt in self.runtimes.values()]
        device = "cpu" if self.spec.gpu is None else f"cuda:{self.spec.gpu}"
        self.send(Ready(self.spec.worker, os.getpid(), infos, self.spec.role, device, list(self.spec.cores)))

    def stats(self) -> Stats:
        c = self.counters
        c.rss_bytes = self.process.memory_info().rss
        c.gpu_memory_bytes = gpu_memory_bytes(self.device)
        c.batch_size_counts = self.batch_sizes.cumulative()
        c.batch_token_counts = self.batch_tokens.cumulative()
        c.threads = self.threads.count()
        c.contended_loans, c.declined_loans = self.loans.contended, self.loans.declined
        return Stats(self.spec.worker, os.getpid(), c)


def ring_wait_ns(sent: float) -> int:
    """Nanoseconds since the gateway stamped a request (``time.monotonic``, one clock for every
    process); 0 for an unstamped one, or a clock read that went backwards."""
    return max(0, int((time.monotonic() - sent) * 1e9)) if sent else 0


def embed_items(runtime: Runtime, message: Embed, refused: list[Refusal] | None = None) -> list[Tokenized]:
    """Each input, tokenized; with ``refused`` (an isolating embed), the inputs refused on their
    own are left out and named there."""
    if refused is None:
        return runtime.tokenize(message.inputs, truncate=message.truncate, direction=message.truncation_direction)

    def tokenize_run(lo: int, hi: int) -> list[Tokenized]:
        return runtime.tokenize(message.inputs[lo:hi], truncate=message.truncate,
                                direction=message.truncation_direction)  # fmt: skip

    return tokenize_each(tokenize_run, len(message.inputs), refused)


def bi_rerank_items(runtime: Runtime, message: Rerank, refused: list[Refusal] | None = None) -> list[Tokenized]:
    """The query and then each document, embedded alike and compared by cosine afterwards; with
    ``refused`` (an isolating rerank), the documents refused on their own are left out and named
    there (a refused query still fails the whole request)."""
    texts: list[Input] = [message.query] if refused is not None else [message.query, *message.documents]
    try:
        items = runtime.tokenize(texts, truncate=message.truncate, direction=message.truncation_direction)
    except InputTooLong as exc:
        exc.index = exc.index - 1  # report the document's index; -1 means the query
        raise
    if refused is None:
        return items

    def tokenize_run(lo: int, hi: int) -> list[Tokenized]:
        return runtime.tokenize(message.documents[lo:hi], truncate=message.truncate,
                                direction=message.truncation_direction)  # fmt: skip

    return items + tokenize_each(tokenize_run, len(message.documents), refused)


def cross_rerank_items(runtime: Runtime, message: Rerank, refused: list[Refusal] | None = None) -> list[Tokenized]:
    """Each (query, document) pair as one sequence, scored by the cross-encoder itself; with
    ``refused``, the pairs refused on their own are left out and named there."""
    def tokenize_run(lo: int, hi: int) -> list[Tokenized]:
        return runtime.tokenize_pairs(message.query, message.documents[lo:hi], truncate=message.truncate,
                                      direction=message.truncation_direction)  # fmt: skip

    if refused is None:
        return tokenize_run(0, len(message.documents))
    return tokenize_each(tokenize_run, len(message.documents), refused)


def forward_splitting_on_oom(forward: Callable[[Sequence[Tokenized]], np.ndarray],
                             payloads: Sequence[Tokenized]) -> np.ndarray:  # fmt: skip
    """Run a batch; on an accelerator out-of-memory error, halve it and retry each half."""
    try:
        return forward(payloads)
    except Exception as exc:
        if not is_out_of_memory(exc) or len(payloads) < 2:
            raise
    release_accelerator_cache()
    half = len(payloads) // 2
    log.warning("out of memory on a batch of %d; retrying as %d + %d", len(payloads), half, len(payloads) - half,
                extra={"event": "batch_oom_split", "items": len(payloads)})  # fmt: skip
    first = forward_splitting_on_oom(forward, payloads[:half])
    return np.concatenate([first, forward_splitting_on_oom(forward, payloads[half:])])


def is_out_of_memory(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()


def gpu_memory_bytes(device: str) -> int:
    """torch's allocated CUDA memory on ``device``; 0 on a CPU worker, which never imports CUDA."""
    if not device.startswith("cuda"):
        return 0
    try:
        import torch

        return int(torch.cuda.memory_allocated(device))
    except Exception:  # a sample, not a duty: a broken driver shows as 0, the worker goes on
        return 0


def release_accelerator_cache() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # best effort: the retry is what matters
        pass


class ChannelLike(Protocol):
    """The worker-side surface of ``appliance.ipc.channel.Channel`` this loop uses."""

    def poll_requests(self) -> list[bytes]: ...
    def wait_requests(self, timeout: float) -> list[bytes]: ...
    def send_response(self, record: bytes, timeout: float = 5.0) -> bool: ...
    def beat(self) -> None: ...
