"""The reading endpoints of SPEC §9: one job, a page of jobs, a batch."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from email.utils import formatdate
from typing import TYPE_CHECKING, Any, TypeVar

from . import cursor, jsontext, params, problems, tokens
from .pages import PageKey
from .problems import ApiError, invalid_payload
from .requests import JobAsked, PageAsked, Request
from .rows import Mark, Query, Row
from .types import Record
from .validation import JOB_ID_RULE, is_valid_job_id, request_id_of

if TYPE_CHECKING:
    from .service import Reply, StatusService

MAX_BATCH = 1000


def get_job(service: StatusService, request: Request) -> Reply:
    """``GET /v1/job/{id}`` (without ``wait``): ``ask_job``, the job's row
    and text read, and the answer ``answer_job`` makes of them
    (``_job_found``) — or, for a job that is not there, its tombstone
    looked up."""
    asked = ask_job(service, request)
    if not isinstance(asked, JobAsked):
        return asked
    job_id = asked.job_id
    texts = service.record_texts
    found: tuple[Row, str | None] | None
    try:
        if texts is not None:
            found = service.store_call("job status", lambda: texts.read_text(job_id))
        else:
            row = service.store_call("job status", lambda: service.store.read(job_id))
            found = None if row is None else (row, None)
        if found is None:
            tomb = tombstone(service, job_id)
            if tomb is not None:
                return service.fail(
                    request, problems.job_expired(), job_id=job_id, response=tomb
                )
            raise problems.job_not_found()
    except ApiError as err:
        return service.fail(request, err, job_id=job_id)
    return _job_found(service, asked, *found)


def ask_job(service: StatusService, request: Request) -> JobAsked | Reply:
    """``GET /v1/job/{id}``'s request checked: the job to read, or the
    answer refusing it."""
    job_id = request.path_params["job_id"]
    if not is_valid_job_id(job_id):
        return service.fail(
            request, ApiError(400, f"Invalid parameter: job_id must be {JOB_ID_RULE}")
        )
    if not request.grant.allows(job_id):
        return service.fail(request, tokens.forbidden(), job_id=job_id)
    try:
        # Checked without ``wait`` too: a known parameter's bad value is a
        # 400 (SPEC §7), not a typo found only once a wait is added.
        params.until(request.query)
    except ApiError as err:
        return service.fail(request, err, job_id=job_id)
    return JobAsked(request, job_id)


def answer_job(
    service: StatusService, asked: JobAsked, found: tuple[Row, str] | Exception | None
) -> Reply | None:
    """``GET /v1/job/{id}``'s answer from the job's row and text, or for the
    store's failure; None for a job that is not there: ``get_job`` answers
    it, reading the job again and then its tombstone (on Redis one round
    trip more than before the split, for a job not there only)."""
    if found is None:
        return None
    if isinstance(found, Exception):
        err = service.store_failure("job status", found)
        return service.fail(asked.request, err, job_id=asked.job_id)
    return _job_found(service, asked, *found)


def _job_found(
    service: StatusService, asked: JobAsked, row: Row, text: str | None
) -> Reply:
    """The answer for the job's row and its record's text (None: the
    row's record, encoded): 304 when the client's ETag is current."""
    headers = etag_headers(row)
    request = asked.request
    if etag_matches(request.headers.get("if-none-match"), headers[0][1]):
        return service.not_modified(headers)
    return service.success(
        request, row.record, job_id=asked.job_id, headers=headers, response_json=text
    )


def list_jobs(service: StatusService, request: Request) -> Reply:
    """``GET /v1/jobs``: ``ask_page``, the store's mark, the kept page
    ``answer_page`` finds under it — or the page read from the store."""
    asked = ask_page(service, request)
    if not isinstance(asked, PageAsked):
        return asked
    store = service.store
    mark = request.mark
    try:
        if mark is None:
            mark = service.store_call("job statuses", store.mark)
    except ApiError as err:
        return service.fail(request, err)
    answer = answer_page(service, asked, mark)
    if answer is not None:
        return answer
    statuses, cutoff, limit = asked.statuses, asked.cutoff, asked.limit
    after = 0 if asked.resume is None else asked.resume.position
    wanted = Query(statuses, cutoff, after, limit + 1, asked.records)
    granted = request.grant.job_ids
    counts: dict[str, int] | None = None
    try:
        if granted is not None:
            rows, counts = service.store_call(
                "job statuses",
                lambda: _narrowed(
                    store.read_many(sorted(granted)), wanted, asked.counts
                ),
            )
        else:
            rows = service.store_call("job statuses", lambda: store.page(wanted))
            if asked.counts:
                counts = service.store_call(
                    "job statuses", lambda: store.counts(statuses, cutoff)
                )
    except ApiError as err:
        return service.fail(request, err)
    oldest = min((row.updated_at for row in rows), default=None)
    has_more = len(rows) > limit
    rows = rows[:limit]
    position = rows[-1].position if rows else after
    # Joined from texts, byte for byte what encoding the page whole would
    # give (tests/test_pages.py), at half its cost.
    items = ",".join([_item_text(row, asked.records) for row in rows])
    token = service.encode_cursor(cursor.Cursor(position, mark.life), asked.digest)
    more = "true" if has_more else "false"
    text = f'{{"jobs":[{items}],"cursor":{jsontext.string(token)},"has_more":{more}'
    if counts is not None:
        counted = {_status_key(status): n for status, n in counts.items()}
        text += f',"counts":{jsontext.encode(counted)}'
    text += "}"
    if asked.key is not None:
        service.pages.keep(asked.key, mark, cutoff, oldest, text)
    return service.success(request, None, response_json=text)


def ask_page(service: StatusService, request: Request) -> PageAsked | Reply:
    """``GET /v1/jobs``'s query read and checked: the page to answer, or
    the answer refusing it."""
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
    except ApiError as err:
        return service.fail(request, err)
    cutoff = None if since is None else service.clock() - since
    after = 0 if resume is None else resume.position
    # A token's page is read by id (at most 1,000 jobs) and not kept.
    key = (
        PageKey(statuses, since, after, limit, with_counts, with_records)
        if request.grant.job_ids is None
        else None
    )
    return PageAsked(
        request,
        statuses,
        since,
        limit,
        with_counts,
        with_records,
        digest,
        resume,
        cutoff,
        key,
    )


def ask_kept_page(service: StatusService, request: Request) -> PageAsked | Reply | None:
    """``GET /v1/jobs``'s ``OneRead.ask``: ``ask_page``, or None for a
    page that is never kept (a token's; counts over a window), which its
    handler serves."""
    asked = ask_page(service, request)
    if isinstance(asked, PageAsked) and (
        asked.key is None or (asked.counts and asked.cutoff is not None)
    ):
        return None
    return asked


def answer_page(
    service: StatusService, asked: PageAsked, found: Mark | Exception
) -> Reply | None:
    """``GET /v1/jobs``'s answer from the store's mark: the kept page while
    it is exact (``Pages``), or the refusal of a cursor from another life
    of the store; None when no page is kept: the handler reads it."""
    request = asked.request
    if isinstance(found, Exception):
        return service.fail(request, service.store_failure("job statuses", found))
    if asked.resume is not None and not found.continues(asked.resume.epoch):
        return service.fail(request, cursor.cursor_expired())
    if asked.key is None:
        return None
    kept = service.pages.get(asked.key, found, asked.cutoff)
    if kept is None:
        return None
    return service.success(request, None, response_json=kept)


def batch(service: StatusService, request: Request) -> Reply:
    request_id = None
    try:
        payload = request.payload()
        request_id = request_id_of(payload)
        job_ids = job_ids_of(payload)
        rows = service.store_call(
            "job statuses", lambda: service.store.read_many(job_ids)
        )
        missing = [job_id for job_id in job_ids if job_id not in rows]
        expiring = service.expiring
        tombs = (
            service.store_call("job statuses", lambda: expiring.tombstones(missing))
            if expiring is not None and missing
            else {}
        )
    except ApiError as err:
        return service.fail(request, err, request_id=request_id)
    response = {
        "jobs": {job_id: rows[job_id].record for job_id in job_ids if job_id in rows},
        "expired": {
            job_id: tombs[job_id].record() for job_id in missing if job_id in tombs
        },
        "unknown": [job_id for job_id in missing if job_id not in tombs],
    }
    return service.success(request, response, request_id=request_id)


def tombstone(service: StatusService, job_id: str) -> Record | None:
    """The tombstone of a job that is not there, as answers show it: looked
    up only on a miss, and only in a store that expires jobs."""
    expiring = service.expiring
    if expiring is None:
        return None
    found = service.store_call("job status", lambda: expiring.tombstones([job_id]))
    tomb = found.get(job_id)
    return None if tomb is None else tomb.record()


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


def _narrowed(
    found: dict[str, Row], query: Query, with_counts: bool
) -> tuple[list[Row], dict[str, int] | None]:
    """A page and counts over a token's jobs alone: at most 1,000 rows, so
    they are read by id and ordered here rather than walked in the store."""
    matching = [
        row
        for row in found.values()
        if row.status is not None
        and (query.statuses is None or row.status in query.statuses)
        and (query.cutoff is None or row.updated_at >= query.cutoff)
    ]
    counts: dict[str, int] | None = None
    if with_counts:
        counts = {}
        for row in matching:
            assert row.status is not None
            counts[row.status] = counts.get(row.status, 0) + 1
    matching.sort(key=lambda row: row.position)
    page = [row for row in matching if row.position > query.after][: query.limit]
    if not query.records:
        page = [replace(row, record=None) for row in page]
    return page, counts


def etag_headers(row: Row) -> tuple[tuple[str, str], ...]:
    """``ETag`` (first) and ``Last-Modified`` of a job's answer; the latter
    left out for a time no HTTP date can say (a file's mtime far away)."""
    etag = ("etag", f'"{row.version}"')
    try:
        return etag, ("last-modified", _http_date(row.updated_at))
    except (ValueError, OverflowError, OSError):
        return (etag,)


def _http_date(updated_at: float) -> str:
    """``Last-Modified`` of a time, made once per time: a polled job answers
    with the same one until it changes (formatdate costs as much as the
    rest of the headers)."""
    return _made_once(_HTTP_DATES, updated_at, _formatdate)


def _formatdate(updated_at: float) -> str:
    return formatdate(updated_at, usegmt=True)


def _item_text(row: Row, with_record: bool) -> str:
    """A page's ``{"job_id", "job_status", "updated_at", "version"}`` (and
    ``"record"``) as ``jsontext.encode`` writes it."""
    status = "null" if row.status is None else _status_text(row.status)
    text = (
        f'{{"job_id":{jsontext.string(row.job_id)},"job_status":{status},'
        f'"updated_at":{jsontext.scalar(row.updated_at)},"version":{jsontext.string(row.version)}'
    )
    if with_record:
        return f'{text},"record":{jsontext.encode(row.record)}}}'
    return text + "}"


def _status_text(text: str) -> str:
    """A store's status JSON text as answers write it (``jsontext.encode``:
    strict ASCII), made once per text: a page repeats a few statuses."""
    return _made_once(_STATUS_TEXTS, text, _encoded_again)


def _encoded_again(text: str) -> str:
    return jsontext.encode(json.loads(text))


#: Texts made once: each table holds at most ``MADE_ONCE`` and starts over
#: when full. Threads may race to make one; they make the same text.
MADE_ONCE = 4096
_HTTP_DATES: dict[float, str] = {}
_STATUS_TEXTS: dict[str, str] = {}

K = TypeVar("K")


def _made_once(table: dict[K, str], key: K, make: Callable[[K], str]) -> str:
    text = table.get(key)
    if text is None:
        text = make(key)  # raises, and keeps nothing, for what it cannot make
        if len(table) >= MADE_ONCE:
            table.clear()
        table[key] = text
    return text


def _status_key(text: str) -> str:
    """A status as a JSON object key: itself when a string, else its JSON text."""
    value = json.loads(text)
    return value if isinstance(value, str) else text


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (or ``*``): answered 304."""
    if not if_none_match:
        return False
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def issue_token(service: StatusService, request: Request) -> Reply:
    """``POST /v1/tokens``: a scoped read token for a browser (SPEC §12)."""
    request_id = None
    try:
        payload = request.payload()
        request_id = request_id_of(payload)
        everything = payload.get("all")
        if everything is not None and not isinstance(everything, bool):
            raise invalid_payload("all must be true or false")
        if everything:
            if "job_ids" in payload:
                raise invalid_payload("give job_ids or all, not both")
            job_ids: list[str] | None = None
        else:
            if "job_ids" not in payload:
                raise invalid_payload("job_ids or all is required")
            job_ids = job_ids_of(payload)
        ttl = ttl_of(payload)
    except ApiError as err:
        return service.fail(request, err, request_id=request_id)
    expires_at = service.clock() + ttl
    token = tokens.issue(job_ids, expires_at, service.secret)
    return service.success(
        request, {"token": token, "expires_at": expires_at}, request_id=request_id
    )


def ttl_of(payload: dict[str, Any]) -> float:
    value = payload.get("ttl_seconds")
    if value is None:
        return float(tokens.DEFAULT_TTL_SECONDS)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid_payload("ttl_seconds must be a number")
    if not 0 < value <= tokens.MAX_TTL_SECONDS:
        raise invalid_payload(
            f"ttl_seconds must be > 0 and at most {tokens.MAX_TTL_SECONDS}"
        )
    return float(value)
