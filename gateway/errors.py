"""Typed request errors. Handlers raise these; `gateway/app.py` maps them to responses in one place.

Every error body is ``{"error": {"message": str, "type": str, "code": int}}`` (DESIGN.md section 7).
``type`` is stable: clients may branch on it.
"""

from __future__ import annotations

from typing import Mapping


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
