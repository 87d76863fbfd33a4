"""Async bulk jobs over HTTP: submit, poll, download, cancel, list (``gateway/jobs/``).

- ``POST /v1/jobs`` (alias ``POST /jobs``): ``JobSubmit`` -> ``202 {id, status, status_url}``
  with ``Location``. Its own bounds: ``max_job_body_bytes`` (413), ``max_job_inputs`` (422),
  ``max_queued_jobs`` (429). A job costs one request of the caller's rate, not its inputs: it
  runs below interactive traffic and cannot crowd it out.
- ``GET /v1/jobs/{id}``: status, progress and times. ``DELETE`` cancels it.
- ``GET /v1/jobs?status=&limit=``: newest first.
- ``GET /v1/jobs/{id}/results``: the committed items in index order, each with its vector (or
  score) or its error. Paged JSON (``offset``, ``limit``) by default; ``Accept:
  application/x-ndjson`` streams every item, one JSON object a line; ``Accept:
  application/x-npy`` (or ``?format=npy``) streams a finished embed job as one ``(n, dim)``
  float32 ``.npy`` array whose failed items are NaN rows (``X-Failed-Count`` says how many; the
  JSON forms say which and why). ``?format=json|ndjson|npy`` overrides ``Accept``; any other
  value is a 422.

Each route's ``RouteDoc`` (in ``register``) is its entry in ``GET /openapi.json``.
"""

from __future__ import annotations

import io
from itertools import chain
from typing import Any, AsyncIterator

import msgspec
import numpy as np
from aiohttp import web

from gateway import encoding, errors
from gateway.context import CONTEXT, REQUEST_ID, Context
from gateway.jobs.model import FINISHED, ItemResult, Job
from gateway.responses import ItemError, JobAccepted, JobItem, JobList, JobProgress, JobResults, JobView
from gateway.route_docs import BINARY, JSON, NDJSON, NPY, Lines, Param, RouteDoc, json_answer
from gateway.routes.answers import AddRoute, respond
from gateway.routes.checks import check_dimensions, read_json
from gateway.routes.options import OPTIONS_DOC, direction_of, documented, embed_choice
from gateway.schemas import JobSubmit

_submit = msgspec.json.Decoder(JobSubmit)
STATUSES = ("PENDING", "PROCESSING", "SUCCESS", "FAILURE", "CANCELLED")
PAGE_DEFAULT, PAGE_MAX = 1000, 10_000
OFFSET_MAX = 2**63 - 1  # SQLite's largest integer: a larger offset cannot even be asked of the store
FORMATS = ("json", "ndjson", "npy")
STREAM_PAGE = 2000  # items read from the store per step of an NDJSON or .npy download


# ---- submit --------------------------------------------------------------------------------------
async def submit(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    ctx.admit(request)
    body = await read_json(request.clone(client_max_size=ctx.config.max_job_body_bytes), _submit,
                           ctx.config.max_job_inputs)
    inputs = list(chain.from_iterable([item] if isinstance(item, str) else item for item in body.inputs))
    if not inputs:
        raise errors.EmptyInput("`inputs` is empty: nothing to do")
    model, options = job_target(ctx, body)
    ctx.admission.check_memory()
    job = await jobs_of(ctx).submit(body.task, model, inputs, options)
    answer = JobAccepted(id=job.id, status=job.status, status_url=status_url(job.id))
    return respond(encoding.encode(answer), status=202, headers={"Location": status_url(job.id)})


def job_target(ctx: Context, body: JobSubmit) -> tuple[str, dict[str, Any]]:
    """The model and the options the runner needs, checked now (a job fails at submit, not later)."""
    direction = direction_of(body.truncation_direction)
    if body.task == "rerank":
        if body.query is None:
            raise errors.InvalidField("a rerank job needs `query` - at `$.query`")
        card = ctx.model(body.model)
        return card.name, {"truncate": body.truncate, "query": body.query, "truncation_direction": direction}
    card = ctx.embedding_model(body.model)
    check_dimensions(body.dimensions, card)
    # resolved now, so the whole job is computed alike even if the model's defaults change meanwhile
    choice = embed_choice(card, body, ctx.config.max_input_chars)
    return card.name, {"truncate": body.truncate, "dimensions": body.dimensions, "use_cache": body.use_cache,
                       "prompt": choice.prefix, "normalize": choice.normalized, "truncation_direction": direction}


# ---- status, list, cancel --------------------------------------------------------------------------
async def status(request: web.Request) -> web.Response:
    job = await jobs_of(request.app[CONTEXT]).get(request.match_info["job_id"])
    return respond(encoding.encode(view(job)))


async def cancel(request: web.Request) -> web.Response:
    job = await jobs_of(request.app[CONTEXT]).cancel(request.match_info["job_id"])
    return respond(encoding.encode(view(job)))


async def listing(request: web.Request) -> web.Response:
    wanted = request.query.get("status")
    if wanted is not None and wanted.upper() not in STATUSES:
        raise errors.InvalidField(f"`status` must be one of {', '.join(STATUSES)} - at `?status`")
    limit = query_int(request, "limit", PAGE_DEFAULT // 10, 1, PAGE_MAX)
    jobs = await jobs_of(request.app[CONTEXT]).list(wanted.upper() if wanted else None, limit)  # type: ignore[arg-type]
    return respond(encoding.encode(JobList(data=[view(job) for job in jobs])))


def view(job: Job) -> JobView:
    return JobView(id=job.id, status=job.status, task=job.task, model=job.model,
                   progress=JobProgress(done=job.done, failed=job.failed, total=job.total),
                   created_at=job.created, started_at=job.started, finished_at=job.finished, expires_at=job.expires,
                   error=job.error, status_url=status_url(job.id), results_url=f"{status_url(job.id)}/results")  # fmt: skip


def status_url(job_id: str) -> str:
    return f"/v1/jobs/{job_id}"


# ---- results -----------------------------------------------------------------------------------------
async def results(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    job_id = request.match_info["job_id"]
    accept = request.headers.get("Accept", "")
    form = request.query.get("format")
    if form is not None and form not in FORMATS:
        raise errors.InvalidField(f"`format` must be one of {', '.join(FORMATS)} - at `?format`")
    # checked whatever the form: the whole-job downloads do not use them, but a bad one is still a 422
    offset = query_int(request, "offset", 0, 0, OFFSET_MAX)
    limit = query_int(request, "limit", PAGE_DEFAULT, 1, PAGE_MAX)
    if form == "npy" or (form is None and NPY in accept):
        return await npy_results(request, ctx, job_id)
    if form == "ndjson" or (form is None and NDJSON in accept):
        return await ndjson_results(request, ctx, job_id)
    job, items = await jobs_of(ctx).results(job_id, offset, limit)
    last = items[-1].index + 1 if items else offset
    more = len(items) == limit and last < job.total
    page = JobResults(status=job.status, data=[job_item(item) for item in items], offset=offset, total=job.total,
                      next_offset=last if more else None)  # fmt: skip
    return respond(encoding.encode(page))


async def ndjson_results(request: web.Request, ctx: Context, job_id: str) -> web.StreamResponse:
    jobs = jobs_of(ctx)
    job = await jobs.get(job_id)  # 404 before the stream starts
    response = web.StreamResponse(headers={"Content-Type": NDJSON, "X-Job-Status": job.status,
                                           "X-Request-ID": request[REQUEST_ID]})  # prepared: not stamped later
    await response.prepare(request)
    async for items in pages(ctx, job_id):
        await response.write(b"".join(encoding.encode(job_item(item)) + b"\n" for item in items))
    await response.write_eof()
    return response


async def npy_results(request: web.Request, ctx: Context, job_id: str) -> web.StreamResponse:
    """One row per input, in index order: a failed (or, in a cancelled job, never computed) item
    is a row of NaN, so row i is always input i."""
    job = await jobs_of(ctx).get(job_id)
    if job.task != "embed":
        raise errors.Unsupported("`.npy` results are for embed jobs; rerank results are JSON or NDJSON")
    if job.status not in FINISHED:
        raise JobNotFinished(f"job {job_id} is {job.status}: its .npy is written once it has finished")
    dim = job.options.get("dimensions") or ctx.model(job.model).dim
    response = web.StreamResponse(headers={"Content-Type": NPY, "X-Failed-Count": str(job.total - job.done),
                                           "Content-Disposition": f'attachment; filename="{job_id}.npy"',
                                           "X-Request-ID": request[REQUEST_ID]})  # fmt: skip
    await response.prepare(request)
    await response.write(npy_header(job.total, dim))
    missing = np.full(dim, np.nan, dtype="<f4").tobytes()
    written = 0
    async for items in pages(ctx, job_id):
        rows = []
        for item in items:
            rows.append(missing * (item.index - written))  # gaps: items never computed
            rows.append(item.vector if item.vector else missing)
            written = item.index + 1
        await response.write(b"".join(rows))
    await response.write(missing * (job.total - written))
    await response.write_eof()
    return response


async def pages(ctx: Context, job_id: str) -> AsyncIterator[list[ItemResult]]:
    offset = 0
    while True:
        _, items = await jobs_of(ctx).results(job_id, offset, STREAM_PAGE)
        if not items:
            return
        yield items
        offset = items[-1].index + 1


def npy_header(rows: int, dim: int) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": "<f4", "fortran_order": False, "shape": (rows, dim)})
    return out.getvalue()


def job_item(item: ItemResult) -> JobItem:
    if item.error_type is not None:
        return JobItem(index=item.index, error=ItemError(type=item.error_type, message=item.error_message or ""))
    if item.vector is not None:
        return JobItem(index=item.index, embedding=msgspec.Raw(encoding.vector_json(item.vector)))
    return JobItem(index=item.index, score=item.score)


class JobNotFinished(errors.ApiError):
    status, type = 409, "job_not_finished"


# ---- helpers ---------------------------------------------------------------------------------------
def jobs_of(ctx: Context) -> Any:
    if ctx.jobs is None:
        raise errors.NotFound("bulk jobs are not enabled on this gateway")
    return ctx.jobs


def query_int(request: web.Request, name: str, default: int, low: int, high: int | None) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise errors.InvalidField(f"`{name}` must be an integer - at `?{name}`") from None
    if value < low or (high is not None and value > high):
        raise errors.InvalidField(f"`{name}` must be between {low} and {high if high is not None else 'any'} - at `?{name}`")
    return value


LIMIT = {"type": "integer", "minimum": 1, "maximum": PAGE_MAX}
SUBMIT_DOC = RouteDoc(
    "Submit a bulk job: 202 at once, computed in the background", "jobs", body=documented(JobSubmit),
    example={"inputs": ["first text", "second text"]}, status=202, content=json_answer(JobAccepted),
    headers=("Location",), errors=(404, 429, 503),
    description="Bounded by `max_job_body_bytes` (413), `max_job_inputs` (422) and `max_queued_jobs` (429). "
                "404 also when bulk jobs are off. An embed job: " + OPTIONS_DOC + " A rerank job takes "
                "`truncation_direction` only.")
RESULTS_PARAMS = (
    Param("offset", "query", {"type": "integer", "minimum": 0, "maximum": OFFSET_MAX},
          "JSON pages: the first item index"),
    Param("limit", "query", LIMIT, f"JSON pages: items per page (default {PAGE_DEFAULT})"),
    Param("format", "query", {"enum": list(FORMATS)}, "instead of the Accept header, which it overrides"),
)


def register(add: AddRoute) -> None:
    add("POST", "/v1/jobs", submit, SUBMIT_DOC)
    add("POST", "/jobs", submit, SUBMIT_DOC)
    add("GET", "/v1/jobs", listing, RouteDoc(
        "List jobs, newest first", "jobs", content=json_answer(JobList), errors=(404, 422, 503),
        params=(Param("status", "query", {"enum": [*STATUSES, *(s.lower() for s in STATUSES)]},
                      "only jobs in this status"),
                Param("limit", "query", LIMIT, f"at most this many (default {PAGE_DEFAULT // 10})"))))
    add("GET", "/v1/jobs/{job_id}", status, RouteDoc(
        "A job's status, progress and times", "jobs", content=json_answer(JobView), errors=(404, 503)))
    add("DELETE", "/v1/jobs/{job_id}", cancel, RouteDoc(
        "Cancel a job; what was computed stays downloadable", "jobs", content=json_answer(JobView),
        errors=(404, 503)))
    add("GET", "/v1/jobs/{job_id}/results", results, RouteDoc(
        "A job's committed results: paged JSON, NDJSON, or a float32 .npy", "jobs", params=RESULTS_PARAMS,
        content={JSON: JobResults, NDJSON: Lines(JobItem), NPY: BINARY},
        headers=("X-Job-Status", "X-Failed-Count", "Content-Disposition"), errors=(404, 409, 422, 503),
        description="`Accept: application/x-ndjson` (or `?format=ndjson`) streams every item, one a line; "
                    "`Accept: application/x-npy` (or `?format=npy`) streams a finished embed job as one "
                    "(n, dim) float32 array whose failed items are NaN rows."))
