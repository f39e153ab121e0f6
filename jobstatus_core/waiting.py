"""Waiting instead of polling (SPEC §10), framework-free.

A waiting handler answers as soon as its condition holds; otherwise it
returns ``Waiting`` and the adapter calls it again after the store's next
change (or at the deadline, or when the server shuts down: then
``Waiting.final`` asks for the answer as it stands). Best effort, as in
AIP-151: an answer may come early, and clients loop.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from . import cursor, params, problems, tokens
from .interest import Interest
from .problems import ApiError, invalid_payload
from .reading import (
    ask_job,
    etag_headers,
    etag_matches,
    get_job,
    job_ids_of,
    tombstone,
)
from .requests import JobAsked, Request
from .rows import Row
from .validation import JOB_ID_RULE, is_valid_job_id, request_id_of

if TYPE_CHECKING:
    from .service import Reply, StatusService


@dataclass(frozen=True, slots=True)
class Waiting:
    """Not yet: ask again after the next change, or at ``deadline``."""

    #: The service timer's time when the wait ends.
    deadline: float
    #: The jobs whose changes may answer it: only those wake it.
    interest: Interest
    #: GET: the version the job must move away from (None: it must appear).
    after_version: str | None = None
    #: POST: a job changed when its position is past this one, in the life
    #: of the store this epoch names: in another (a flushed Redis, a schema
    #: made again), every job there was written since the wait began.
    after_position: int = 0
    after_epoch: str = ""
    #: The adapter sets it when the time is up or the server is stopping.
    final: bool = False


def ask_job_now(service: StatusService, request: Request) -> JobAsked | Reply | None:
    """``GET /v1/job/{id}``'s ``OneRead.ask``: ``reading.ask_job``, or
    None for a wait, which its handler serves."""
    if params.first(request.query, "wait"):  # empty is the default: none
        return None
    return ask_job(service, request)


def get_job_waiting(service: StatusService, request: Request) -> Reply | Waiting:
    """``GET /v1/job/{id}?wait=S[&until=finished|changed][&after=VERSION]``."""
    query = request.query
    if not params.first(query, "wait"):
        return get_job(service, request)
    job_id = request.path_params["job_id"]
    try:
        if not is_valid_job_id(job_id):
            raise ApiError(400, f"Invalid parameter: job_id must be {JOB_ID_RULE}")
        if not request.grant.allows(job_id):
            raise tokens.forbidden()
        seconds = wait_seconds(query, service.max_wait)
        until = params.until(query)
        row = service.store_call("job status", lambda: service.store.read(job_id))
        # Expired: nothing more will happen to it, so the wait ends at once.
        tomb = None if row is not None else tombstone(service, job_id)
    except ApiError as err:
        return service.fail(request, err, job_id=job_id)
    if tomb is not None:
        return service.fail(
            request, problems.job_expired(), job_id=job_id, response=tomb
        )
    state = request.waiting
    if state is None:
        after = params.first(query, "after")
        if after is None:
            after = None if row is None else row.version
        else:
            # The ETag as sent (quoted, perhaps weak) names the same version:
            # taken as another, it would meet ``changed`` at once, every time.
            after = after.removeprefix("W/").strip('"')
        state = Waiting(
            request.started + seconds,
            Interest(frozenset({job_id})),
            after_version=after,
        )
    met = row is not None and (
        _finished(service, row)
        if until == "finished"
        else row.version != state.after_version
    )
    if not met and not state.final:
        return state
    waited = {
        "waited": {"seconds": round(service.timer() - request.started, 3), "met": met}
    }
    if row is None:
        return service.fail(
            request, problems.job_not_found(), job_id=job_id, extra=waited
        )
    headers = etag_headers(row)
    # The version the client holds: 304 as without ``wait`` (SPEC §9); a
    # client that wants ``waited`` sends no If-None-Match.
    if etag_matches(request.headers.get("if-none-match"), headers[0][1]):
        return service.not_modified(headers)
    return service.success(
        request, row.record, job_id=job_id, headers=headers, extra=waited
    )


def wait_many(service: StatusService, request: Request) -> Reply | Waiting:
    """``POST /v1/jobs/wait``: answers as soon as any of the jobs meets it."""
    request_id = None
    try:
        payload = request.payload()
        request_id = request_id_of(payload)
        job_ids = job_ids_of(payload)
        for job_id in job_ids:
            if not request.grant.allows(job_id):
                raise tokens.forbidden()
        seconds = timeout_of(payload, service.max_wait)
        until = payload.get("until", "finished")
        if until not in params.UNTIL:
            raise invalid_payload("until must be finished or changed")
        given = payload.get("after")
        if given is not None and not isinstance(given, str):
            raise invalid_payload("after must be a cursor")
        digest = cursor.filter_digest(None, None)
        store = service.store
        mark = service.store_call("job statuses", store.mark)
        resume = None if not given else service.decode_cursor(given, digest)
        first = request.waiting is None
        if resume is not None and not mark.continues(resume.epoch) and first:
            # On arrival only: a store that begins another life while the
            # wait holds meets it (``after_epoch``, below).
            raise cursor.cursor_expired()
        rows = service.store_call("job statuses", lambda: store.read_many(job_ids))
        # An expired job meets any condition: nothing more will happen to it.
        expiring = service.expiring
        missing = [job_id for job_id in job_ids if job_id not in rows]
        tombs = (
            service.store_call("job statuses", lambda: expiring.tombstones(missing))
            if expiring is not None and missing
            else {}
        )
    except ApiError as err:
        return service.fail(request, err, request_id=request_id)
    state = request.waiting
    if state is None:
        after = mark.head if resume is None else resume.position
        state = Waiting(
            request.started + seconds,
            Interest(frozenset(job_ids)),
            after_position=after,
            after_epoch=mark.life,
        )
    another_life = mark.life != state.after_epoch
    met = {
        job_id: row
        for job_id, row in rows.items()
        if (
            _finished(service, row)
            if until == "finished"
            else another_life or row.position > state.after_position
        )
    }
    if not met and not tombs and not state.final:
        return state
    response = {
        "jobs": {
            job_id: {
                "job_status": _status(row),
                "updated_at": row.updated_at,
                "version": row.version,
            }
            for job_id, row in met.items()
        },
        "expired": {job_id: tomb.record() for job_id, tomb in tombs.items()},
        "pending": [
            job_id for job_id in job_ids if job_id not in met and job_id not in tombs
        ],
        "timed_out": not met and not tombs,
        "cursor": service.encode_cursor(cursor.Cursor(mark.head, mark.life), digest),
    }
    return service.success(request, response, request_id=request_id)


def wait_seconds(query: params.Query, limit: float) -> float:
    raw = params.first(query, "wait")
    try:
        seconds = params.decimal(raw or "")
    except ValueError:
        raise params.invalid_parameter("wait", "must be a number of seconds") from None
    if not (math.isfinite(seconds) and 0 < seconds <= limit):
        raise params.invalid_parameter("wait", f"must be > 0 and at most {limit:g}")
    return seconds


def timeout_of(payload: dict[str, Any], limit: float) -> float:
    value = payload.get("timeout", limit)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid_payload("timeout must be a number of seconds")
    # Compared as given: math.isfinite of an integer past a float's range
    # raises OverflowError (a 500); int and float compare exactly.
    if not 0 < value <= limit:
        raise invalid_payload(f"timeout must be > 0 and at most {limit:g}")
    return float(value)


def finish(state: Waiting) -> Waiting:
    return replace(state, final=True)


def _finished(service: StatusService, row: Row) -> bool:
    status = _status(row)
    return isinstance(status, str) and status in service.terminal


def _status(row: Row) -> Any:
    return None if row.status is None else json.loads(row.status)
