"""The change feed (SPEC §11), framework-free: what to send, not how.

``open_feed`` validates a request and returns a ``Feed`` (or an error
``Reply``); the adapter then asks ``snapshot`` once, when there is no resume
point, and ``changes`` after each wake-up, and sends the events as
server-sent events. Each event's id is a cursor: a client that reconnects
with it (``Last-Event-ID``) resumes after it — every change that matches is
delivered at least once, in change order, and a slow consumer gets the
latest state of a job rather than every step (the store keeps one row per
job).

Each answer is a ``Step`` that holds its events already in the bytes of the
wire, so that a stream sends them as they are; streams woken by one look of
the change hub with the same filter and resume point share one ``Step``
(``changes_found``): a change followed by 1,000 streams is encoded once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import cursor, params, tokens
from .interest import Found, Interest
from .problems import ApiError
from .requests import Request
from .rows import Query, Row, Tombstone
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
class Step:
    """What a stream sends next, and where it then stands."""

    events: Sequence[Event]
    #: The events as server-sent events, ready to send (empty: none).
    wire: bytes
    #: The position to follow changes from.
    position: int
    #: A per-job stream has sent its job's end.
    ended: bool


def ready(at: str | None = None) -> bytes:
    """What a stream with no event to send yet starts with: a comment, how
    long a browser waits before reconnecting, and with ``at`` an id — a
    block of an id and no data sets the client's last event id without an
    event (the HTML standard's "dispatch the event")."""
    where = "" if at is None else f"id: {at}\r\n"
    return f": ready\r\n{where}retry: {RETRY_MS}\r\n\r\n".encode()


#: ``ready()`` without an id: a resumed stream, whose client has its id.
READY = ready()


def wire(events: Sequence[Event], *, retry: bool = False) -> bytes:
    """``events`` as server-sent events (``retry:`` with the first when
    ``retry``). Their fields are one line each: ids are cursors, data is
    compact JSON, which escapes line breaks."""
    return "".join(
        f"id: {event.id}\r\nevent: {event.event}\r\ndata: {event.data}\r\n"
        + (f"retry: {RETRY_MS}\r\n\r\n" if retry and i == 0 else "\r\n")
        for i, event in enumerate(events)
    ).encode()


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
    #: A token's stream ends when the token does (epoch seconds): resumed,
    #: it is refused (``401``) as any request with the token would be.
    expires_at: float | None = None

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
            if job_ids is None:
                job_ids = request.grant.job_ids  # narrowed to the token's
            elif not all(map(request.grant.allows, job_ids)):
                # As POST /v1/jobs/wait and a job's own stream answer a job
                # the token does not grant: not a stream that stays silent.
                raise tokens.forbidden()
        since = _since(query)
        # Bound to what the feed sends (its statuses and jobs), not to the
        # snapshot's window: a cursor of an unfiltered list resumes an
        # unfiltered feed.
        digest = cursor.filter_digest(statuses, None) + _ids_digest(job_ids)
        given = request.headers.get("last-event-id") or params.first(query, "cursor")
        resume = None if not given else service.decode_cursor(given, digest)
        mark = service.store_call("job statuses", service.store.mark)
        if resume is not None and not mark.continues(resume.epoch):
            raise cursor.cursor_expired()
    except ApiError as err:
        return service.fail(request, err)
    feed = Feed(
        digest,
        mark.life,
        statuses,
        job_ids,
        None if resume is None else resume.position,
        service.clock() - since,
        single,
        request.grant.expires_at,
    )
    if feed.single is not None and feed.after is not None and _over(service, feed):
        from .service import Reply

        # 204: a browser's EventSource stops reconnecting (the HTML
        # standard), where an empty stream would hold a slot open for as
        # long as the page stays, or end and be asked for again.
        return Reply(204, (), b"")
    return feed


def _over(service: StatusService, feed: Feed) -> bool:
    """Whether a resumed per-job stream's job had ended (a terminal status,
    or expired) by the resume point: nothing after it is to come. A change
    after the point (the job queued again) is followed as any other."""
    try:
        events, position = service.store_call(
            "job statuses", lambda: _after(service, feed, 0, None, everything=True)
        )
    except ApiError:
        return False  # the stream's own reads answer the failure
    assert feed.after is not None
    return position <= feed.after and _ended(service, feed, events)


def snapshot(service: StatusService, feed: Feed) -> Step:
    """The jobs of the window (a per-job stream: its job, whenever written),
    the position to follow changes from, and whether the stream has ended;
    on the wire with ``retry:``, or, when there is none, ``ready`` with the
    position's id: a client that loses the stream before any event resumes
    from there, not from a new window that a change made meanwhile may have
    left (``since_seconds=0``). A store failure is the contract's error
    (``ApiError``), as it is for every read."""
    mark = service.store_call("job statuses", service.store.mark)
    cutoff = None if feed.single is not None else feed.cutoff
    events, position = service.store_call(
        "job statuses", lambda: _after(service, feed, 0, cutoff, everything=True)
    )
    position = max(position, mark.head)
    if events:
        sent = wire(events, retry=True)
    else:
        at = service.encode_cursor(cursor.Cursor(position, feed.epoch), feed.digest)
        sent = ready(at)
    return Step(events, sent, position, _ended(service, feed, events))


def changes(service: StatusService, feed: Feed, after: int) -> Step:
    """Events of changes after ``after`` (up to a batch), the position they
    reach, and whether the stream has ended: a per-job stream's job has, or
    the store began another life since the feed opened (a flushed or
    restarted Redis, an SQLite file put back from a copy), where its
    positions mean nothing. Ended so, the client resumes with its last event
    id, is answered ``410 Cursor expired``, and starts again from a
    snapshot, as a cursor of a list does."""
    events, position = service.store_call(
        "job statuses", lambda: _after(service, feed, after, None, everything=False)
    )
    # Read after the changes: what was read in another life is not sent.
    mark = service.store_call("job statuses", service.store.mark)
    if mark.life != feed.epoch:
        return Step((), b"", after, True)
    return Step(events, wire(events), position, _ended(service, feed, events))


def changes_found(
    service: StatusService, feed: Feed, after: int, found: Found
) -> Step | None:
    """``changes`` from what the change hub's look that woke the stream
    read, without a store read; None for a feed of every job (re-read the
    store). Rows past the look's mark are not in it: the next look finds
    them and wakes the stream again.

    Made once per filter and resume point, and shared through ``found`` by
    every stream the look woke with the same: what they send depends on
    nothing else (the cursor of an event is signed, not random)."""
    if feed.job_ids is None:
        return None
    key = (feed.job_ids, feed.statuses, feed.single, feed.digest, feed.epoch, after)
    made = found.shared.get(key)
    if isinstance(made, Step):
        return made
    rows = [found.rows[job_id] for job_id in feed.job_ids if job_id in found.rows]
    tombs = [found.tombs[job_id] for job_id in feed.job_ids if job_id in found.tombs]
    # The hub reads tombstones where the store keeps them, as ``changes`` does.
    merged = _of_jobs(feed, after, None, rows, tombs)
    events = [_event(service, feed, item) for item in merged]
    position = merged[-1].position if merged else after
    step = Step(events, wire(events), position, _ended(service, feed, events))
    found.shared[key] = step
    return step


def _ended(service: StatusService, feed: Feed, events: list[Event]) -> bool:
    return feed.single is not None and any(
        event.event == "expired" or _terminal(service, event) for event in events
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
    # Tombstones are changes too, but not jobs of a window: a snapshot of a
    # window leaves them out, a per-job snapshot and every change include them.
    expiring = service.expiring if cutoff is None else None
    events: list[Event] = []
    position = after
    while True:
        tombs: list[Tombstone] = []
        if feed.job_ids is not None:
            job_ids = sorted(feed.job_ids)
            rows = list(store.read_many(job_ids).values())
            if expiring is not None:
                tombs = list(expiring.tombstones(job_ids).values())
            merged = _of_jobs(feed, position, cutoff, rows, tombs)
            full = False
        else:
            rows = store.page(Query(feed.statuses, cutoff, position, BATCH))
            if expiring is not None:
                tombs = expiring.buried(Query(feed.statuses, None, position, BATCH))
            full = len(rows) >= BATCH or len(tombs) >= BATCH
            merged = _merged(rows, tombs)
        events += [_event(service, feed, item) for item in merged]
        if merged:
            position = merged[-1].position
        if feed.job_ids is not None or not full or not everything:
            return events, position


def _of_jobs(
    feed: Feed,
    after: int,
    cutoff: float | None,
    rows: list[Row],
    tombs: list[Tombstone],
) -> list[Row | Tombstone]:
    """Of the latest rows and tombstones of a feed's jobs, those it sends
    after ``after``, in change order."""
    return _merged(
        [
            row
            for row in rows
            if row.position > after
            and row.status is not None
            and (feed.statuses is None or row.status in feed.statuses)
            and (cutoff is None or row.updated_at >= cutoff)
        ],
        [
            tomb
            for tomb in tombs
            if tomb.position > after
            and (feed.statuses is None or tomb.status in feed.statuses)
        ],
    )


def _merged(rows: list[Row], tombs: list[Tombstone]) -> list[Row | Tombstone]:
    """Rows and tombstones in change order. When one list is a full batch,
    the other is cut at its last position: what lies beyond may still be
    missing from the full one, and comes with the next call."""
    items: list[Row | Tombstone] = sorted([*rows, *tombs], key=_position)
    ends = [batch[-1].position for batch in (rows, tombs) if len(batch) >= BATCH]
    if ends:
        end = min(ends)
        items = [item for item in items if item.position <= end]
    return items


def _position(item: Row | Tombstone) -> int:
    return item.position


def _event(service: StatusService, feed: Feed, item: Row | Tombstone) -> Event:
    event_id = service.encode_cursor(
        cursor.Cursor(item.position, feed.epoch), feed.digest
    )
    if isinstance(item, Tombstone):
        return Event("expired", event_id, _compact(item.record()))
    data = {
        "job_id": item.job_id,
        "job_status": None if item.status is None else json.loads(item.status),
        "updated_at": item.updated_at,
        "version": item.version,
    }
    return Event("job", event_id, _compact(data))


def _compact(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), allow_nan=False)


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
