"""Typed request errors. Handlers raise these; `gateway/app.py` maps them to responses in one place.

Every error body is ``{"error": {"message": str, "type": str, "code": int}}``; ``type`` is
stable: clients may branch on it. A worker's ``Failed`` record names its cause with a stable
``FailureKind`` word; ``from_worker_failure`` is the one table from those words to these types.
"""

from __future__ import annotations

from typing import Mapping

from appliance.protocol import FailureKind

RETRY_AFTER_S = 1.0  # what a 503 or 429 from a busy or respawning worker tells the client


class ApiError(Exception):
    status: int = 500
    type: str = "internal_error"

    def __init__(self, message: str, *, retry_after: float | None = None,
                 headers: Mapping[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.headers = headers  # extra response headers, e.g. a 401's WWW-Authenticate


class BadRequest(ApiError):
    status, type = 400, "invalid_request"


class MalformedJson(ApiError):
    status, type = 400, "malformed_json"


class EmptyInput(ApiError):
    status, type = 400, "empty_input"


class Unauthorized(ApiError):
    """Missing or unknown API key; raised with a ``WWW-Authenticate: Bearer`` challenge."""

    status, type = 401, "unauthorized"


class NotFound(ApiError):
    status, type = 404, "not_found"


class ModelNotFound(ApiError):
    status, type = 404, "model_not_found"


class BodyTooLarge(ApiError):
    status, type = 413, "body_too_large"


class InvalidField(ApiError):
    status, type = 422, "invalid_field"


class TooManyInputs(ApiError):
    status, type = 422, "too_many_inputs"


class InputTooLong(ApiError):
    status, type = 422, "input_too_long"


class Unsupported(ApiError):
    status, type = 422, "unsupported"


class TokenizerFailed(ApiError):
    """The model's tokenizer refused a text (the gateway's own tokenizing: TEI's ``/tokenize``)."""

    status, type = 422, "tokenizer_error"


class RateLimited(ApiError):
    """The key's (or client's) requests or inputs per minute are spent; Retry-After says when."""

    status, type = 429, "rate_limited"


class QueueFull(ApiError):
    status, type = 429, "queue_full"


class NotReady(ApiError):
    status, type = 503, "not_ready"


class Draining(ApiError):
    status, type = 503, "draining"


class Overloaded(ApiError):
    """The worker ran out of memory on this request's batch even after splitting it."""

    status, type = 503, "overloaded"


class MemoryLow(ApiError):
    """Memory guard tripped: available system memory is under ``memory_floor``; no new work."""

    status, type = 503, "memory_low"


class WorkerLost(ApiError):
    """The worker holding this request died and no other worker could take it."""

    status, type = 503, "worker_unavailable"


class DeadlineExceeded(ApiError):
    status, type = 504, "deadline_exceeded"


class Internal(ApiError):
    status, type = 500, "internal_error"


WORKER_FAILURES: dict[FailureKind, type[ApiError]] = {
    FailureKind.INPUT_TOO_LONG: InputTooLong,
    FailureKind.UNKNOWN_MODEL: ModelNotFound,
    FailureKind.INVALID_INPUT: InvalidField,
    FailureKind.UNSUPPORTED: Unsupported,
    FailureKind.DEADLINE: DeadlineExceeded,
    FailureKind.OUT_OF_MEMORY: Overloaded,
}


def from_worker_failure(kind: FailureKind, text: str) -> ApiError:
    """The request error for a worker's ``Failed(kind, ...)``; an unknown kind is a worker bug."""
    error = WORKER_FAILURES.get(kind)
    if error is None:
        return Internal(f"worker error: {text}")
    return error(text, retry_after=RETRY_AFTER_S if error is Overloaded else None)
