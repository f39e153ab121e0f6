"""The reading endpoints of SPEC §9: one job, a page of jobs, a batch."""

from __future__ import annotations

import json
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from . import cursor, params, problems
from .problems import ApiError, invalid_payload
from .requests import Request
from .rows import Query, Row
from .validation import JOB_ID_RULE, is_valid_job_id, parse_body, request_id_of

if TYPE_CHECKING:
    from .service import Reply, StatusService

MAX_BATCH = 1000


def get_job(service: StatusService, request: Request) -> Reply:
    job_id = request.path_params["job_id"]
    if not is_valid_job_id(job_id):
        return service.fail(
            request, ApiError(400, f"Invalid parameter: job_id must be {JOB_ID_RULE}")
        )
    try:
        row = service.store_call("job status", lambda: service.store.read(job_id))
        if row is None:
            raise problems.job_not_found()
    except ApiError as err:
        return service.fail(request, err, job_id=job_id)
    etag = f'"{row.version}"'
    headers = (
        ("etag", etag),
        ("last-modified", formatdate(row.updated_at, usegmt=True)),
    )
    if _matches(request.headers.get("if-none-match"), etag):
        return service.not_modified(headers)
    return service.success(request, row.record, job_id=job_id, headers=headers)


def list_jobs(service: StatusService, request: Request) -> Reply:
    query = request.query
    try:
        statuses = params.statuses(query)
        since = params.since_seconds(query)
        limit = params.limit(query)
        with_counts = params.flag(query, "counts")
        with_records = params.include_record(query)
        digest = cursor.filter_digest(statuses, since)
        given = params.first(query, "cursor")
        resume = None if not given else service.decode_cursor(given, digest)
        store = service.store
        mark = service.store_call("job statuses", store.mark)
        if resume is not None and resume.epoch != mark.epoch:
            raise cursor.cursor_expired()
        cutoff = None if since is None else service.clock() - since
        after = 0 if resume is None else resume.position
        rows = service.store_call(
            "job statuses",
            lambda: store.page(Query(statuses, cutoff, after, limit + 1, with_records)),
        )
        counts = (
            service.store_call("job statuses", lambda: store.counts(statuses, cutoff))
            if with_counts
            else None
        )
    except ApiError as err:
        return service.fail(request, err)
    has_more = len(rows) > limit
    rows = rows[:limit]
    position = rows[-1].position if rows else after
    response: dict[str, Any] = {
        "jobs": [_item(row, with_records) for row in rows],
        "cursor": service.encode_cursor(cursor.Cursor(position, mark.epoch), digest),
        "has_more": has_more,
    }
    if counts is not None:
        response["counts"] = {_status_key(text): n for text, n in counts.items()}
    return service.success(request, response)


def batch(service: StatusService, request: Request) -> Reply:
    request_id = None
    try:
        payload = parse_body(request.body)
        request_id = request_id_of(payload)
        job_ids = job_ids_of(payload)
        rows = service.store_call(
            "job statuses", lambda: service.store.read_many(job_ids)
        )
    except ApiError as err:
        return service.fail(request, err, request_id=request_id)
    response = {
        "jobs": {job_id: rows[job_id].record for job_id in job_ids if job_id in rows},
        "expired": {},
        "unknown": [job_id for job_id in job_ids if job_id not in rows],
    }
    return service.success(request, response, request_id=request_id)


def job_ids_of(payload: dict[str, Any]) -> list[str]:
    """``job_ids``: 1 to 1,000 valid ids, repeats answered once, in order."""
    if "job_ids" not in payload:
        raise invalid_payload("job_ids is required")
    job_ids = payload["job_ids"]
    if not isinstance(job_ids, list):
        raise invalid_payload("job_ids must be an array of job ids")
    if not 1 <= len(job_ids) <= MAX_BATCH:
        raise invalid_payload(f"job_ids must hold 1 to {MAX_BATCH} job ids")
    for i, job_id in enumerate(job_ids):
        if not is_valid_job_id(job_id):
            raise invalid_payload(f"job_ids[{i}] must be {JOB_ID_RULE}")
    return list(dict.fromkeys(job_ids))


def _item(row: Row, with_record: bool) -> dict[str, Any]:
    item: dict[str, Any] = {
        "job_id": row.job_id,
        "job_status": None if row.status is None else json.loads(row.status),
        "updated_at": row.updated_at,
        "version": row.version,
    }
    if with_record:
        item["record"] = row.record
    return item


def _status_key(text: str) -> str:
    """A status as a JSON object key: itself when a string, else its JSON text."""
    value = json.loads(text)
    return value if isinstance(value, str) else text


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False
