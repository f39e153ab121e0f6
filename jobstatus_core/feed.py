"""The change feed (SPEC §11), framework-free: what to send, not how.

``open_feed`` validates a request and returns a ``Feed`` (or an error
``Reply``); the adapter then asks ``snapshot`` once, when there is no resume
point, and ``changes`` after each wake-up, and sends the events as
server-sent events. Each event's id is a cursor: a client that reconnects
with it (``Last-Event-ID``) resumes after it — every change that matches is
delivered at least once, in change order, and a slow consumer gets the
latest state of a job rather than every step (the store keeps one row per
job).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import cursor, params, tokens
from .interest import Interest
from .problems import ApiError
from .requests import Request
from .rows import Query, Row
from .validation import JOB_ID_RULE, is_valid_job_id

if TYPE_CHECKING:
    from .service import Reply, StatusService

#: Rows read per store call while catching up.
BATCH = 500
DEFAULT_SINCE = 600.0
#: Milliseconds a browser waits before reconnecting (the ``retry:`` field).
RETRY_MS = 2000


@dataclass(frozen=True, slots=True)
class Event:
    event: str
    id: str
    data: str


@dataclass(frozen=True, slots=True)
class Feed:
    digest: str
    epoch: str
    statuses: frozenset[str] | None
    #: Only these jobs (the ``job_id`` parameter, a token's jobs, or the one
    #: job of a per-job stream); None: every job.
    job_ids: frozenset[str] | None
    #: Resume after this position; None: send the window's snapshot first.
    after: int | None
    #: The snapshot's window (epoch seconds).
    cutoff: float
    #: A per-job stream: that job; it ends after a terminal status.
    single: str | None = None

    @property
    def interest(self) -> Interest:
        """The changes that may send it an event: only those wake it."""
        return Interest(self.job_ids, self.statuses)


def open_feed(service: StatusService, request: Request) -> Reply | Feed:
    """``GET /v1/jobs/events`` and ``GET /v1/job/{id}/events``."""
    query = request.query
    single = request.path_params.get("job_id")
    try:
        if single is not None:
            if not is_valid_job_id(single):
                raise ApiError(400, f"Invalid parameter: job_id must be {JOB_ID_RULE}")
            if not request.grant.allows(single):
                raise tokens.forbidden()
            statuses = None
            job_ids: frozenset[str] | None = frozenset({single})
        else:
            statuses = params.statuses(query)
            job_ids = _job_ids(query)
            granted = request.grant.job_ids
            if granted is not None:
                job_ids = granted if job_ids is None else job_ids & granted
        since = _since(query)
        # Bound to what the feed sends (its statuses and jobs), not to the
        # snapshot's window: a cursor of an unfiltered list resumes an
        # unfiltered feed.
        digest = cursor.filter_digest(statuses, None) + _ids_digest(job_ids)
        given = request.headers.get("last-event-id") or params.first(query, "cursor")
        resume = None if not given else service.decode_cursor(given, digest)
        mark = service.store_call("job statuses", service.store.mark)
        if resume is not None and resume.epoch != mark.epoch:
            raise cursor.cursor_expired()
    except ApiError as err:
        return service.fail(request, err)
    return Feed(
        digest,
        mark.epoch,
        statuses,
        job_ids,
        None if resume is None else resume.position,
        service.clock() - since,
        single,
    )


def snapshot(service: StatusService, feed: Feed) -> tuple[list[Event], int, bool]:
    """The jobs of the window (a per-job stream: its job, whenever written),
    the position to follow changes from, and whether the stream has ended."""
    mark = service.store.mark()
    cutoff = None if feed.single is not None else feed.cutoff
    events, position = _after(service, feed, 0, cutoff, everything=True)
    return events, max(position, mark.head), _ended(service, feed, events)


def changes(
    service: StatusService, feed: Feed, after: int
) -> tuple[list[Event], int, bool]:
    """Events of changes after ``after`` (up to a batch), the position they
    reach, and whether a per-job stream has ended."""
    events, position = _after(service, feed, after, None, everything=False)
    return events, position, _ended(service, feed, events)


def _ended(service: StatusService, feed: Feed, events: list[Event]) -> bool:
    return feed.single is not None and any(
        _terminal(service, event) for event in events
    )


def _after(
    service: StatusService,
    feed: Feed,
    after: int,
    cutoff: float | None,
    *,
    everything: bool,
) -> tuple[list[Event], int]:
    store = service.store
    events: list[Event] = []
    position = after
    while True:
        if feed.job_ids is not None:
            rows = sorted(
                (
                    row
                    for row in store.read_many(sorted(feed.job_ids)).values()
                    if row.position > position
                    and row.status is not None
                    and (feed.statuses is None or row.status in feed.statuses)
                    and (cutoff is None or row.updated_at >= cutoff)
                ),
                key=lambda row: row.position,
            )
        else:
            rows = store.page(Query(feed.statuses, cutoff, position, BATCH))
        events += [_event(service, feed, row) for row in rows]
        if rows:
            position = rows[-1].position
        if feed.job_ids is not None or len(rows) < BATCH or not everything:
            return events, position


def _event(service: StatusService, feed: Feed, row: Row) -> Event:
    data = {
        "job_id": row.job_id,
        "job_status": None if row.status is None else json.loads(row.status),
        "updated_at": row.updated_at,
        "version": row.version,
    }
    return Event(
        "job",
        service.encode_cursor(cursor.Cursor(row.position, feed.epoch), feed.digest),
        json.dumps(data, separators=(",", ":"), allow_nan=False),
    )


def _terminal(service: StatusService, event: Event) -> bool:
    status = json.loads(event.data)["job_status"]
    return isinstance(status, str) and status in service.terminal


def _job_ids(query: params.Query) -> frozenset[str] | None:
    values = [
        part.strip()
        for value in query.get("job_id", ())
        for part in value.split(",")
        if part.strip()
    ]
    if not values:
        return None
    if len(values) > tokens.MAX_JOB_IDS:
        raise params.invalid_parameter("job_id", f"takes at most {tokens.MAX_JOB_IDS}")
    for value in values:
        if not is_valid_job_id(value):
            raise params.invalid_parameter("job_id", f"must be {JOB_ID_RULE}")
    return frozenset(values)


def _since(query: params.Query) -> float:
    seconds = params.since_seconds(query)
    return DEFAULT_SINCE if seconds is None else seconds


def _ids_digest(job_ids: frozenset[str] | None) -> str:
    if job_ids is None:
        return ""
    joined = "\n".join(sorted(job_ids)).encode()
    return hashlib.sha256(joined).hexdigest()[:8]
