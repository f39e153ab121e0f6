"""The contract as data: every endpoint, once, for both adapters to route by.

Each ``Operation`` names its method, path, parameters, body and answers, and
the handler that serves it. The adapters loop over ``OPERATIONS`` through a
``Router``; the OpenAPI document is generated from the same table.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from . import feed, openapi, operating, reading, schemas, waiting

if TYPE_CHECKING:
    from .feed import Feed
    from .requests import Asked, JobAsked, ListingAsked, PageAsked, Request
    from .rows import Mark, Row
    from .service import Reply, StatusService
    from .waiting import Waiting

Handler = Callable[["StatusService", "Request"], "Reply | Waiting | Feed"]
#: What a ``OneRead`` asks for (its request read), and what the read gives.
A = TypeVar("A", bound="Asked[Any]")
F = TypeVar("F")


@dataclass(frozen=True, slots=True)
class OneRead(Generic[A, F]):
    """How an operation answers from one store read, in parts: ``ask``
    reads the request — what to read (``A``, whose ``read`` says which
    read), or the answer refusing it; ``answer`` answers from what was read
    (``F``) or from the store's failure. Its handler does the same around
    the store's sync call; an adapter whose store makes those reads on the
    event loop (``AsyncReads``) awaits the read between the two instead.
    Either part may give None, for a request or a result one read does not
    answer (a wait; a job not there; a listing not kept): the adapter then
    runs the handler."""

    ask: Callable[[StatusService, Request], A | Reply | None]
    answer: Callable[[StatusService, A, F | Exception], Reply | None]


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    description: str
    schema: dict[str, Any]
    where: str = "query"
    required: bool = False


@dataclass(frozen=True, slots=True)
class Operation:
    name: str
    method: str
    #: Under the mount prefix; ``{name}`` is a path parameter (one segment).
    path: str
    summary: str
    handler: Handler
    params: tuple[Param, ...] = ()
    #: Reads a JSON body (the Content-Type and size rules apply).
    reads_body: bool = False
    #: Status codes it may answer besides 200, 401 and the store's 500/503.
    answers: tuple[int, ...] = ()
    #: Takes a scoped read token instead of the API key (SPEC §12).
    tokens: bool = False
    #: May answer ``Waiting``: the adapter calls it again after a change.
    waits: bool = False
    #: Answers a ``Feed`` the adapter streams as server-sent events (ASGI only).
    streams: bool = False
    #: JSON Schema of the request body, for the OpenAPI document.
    body: dict[str, Any] | None = None
    #: An empty body is a request of its own (the Toolkit's default window).
    body_optional: bool = False
    #: JSON Schema of the envelope's ``response`` on 200.
    response: dict[str, Any] | None = None
    #: JSON Schema of ``response`` on 410 (a tombstone: ``410 Job expired``);
    #: None: a 410 is null like every other error.
    gone: dict[str, Any] | None = None
    #: False: served without the API key or a token (health, the document).
    authenticated: bool = True
    #: Calls the store, so it may answer its 500 and 503.
    reads_store: bool = True
    #: The media type of a 200; anything but JSON is answered as is, no envelope.
    media_type: str = "application/json"
    #: Answered from one store read, in parts an adapter may call itself.
    one_read: OneRead[Any, Any] | None = None


def _job_status(service: StatusService, request: Request) -> Reply:
    return service.job_status(request)


def _ask_job_status(service: StatusService, request: Request) -> JobAsked | Reply:
    return service.ask_job_status(request)


def _answer_job_status(
    service: StatusService,
    asked: JobAsked,
    found: tuple[Row, str] | Exception | None,
) -> Reply:
    return service.answer_job_status(
        asked, found[1] if isinstance(found, tuple) else found
    )


def _ask_jobs_status(service: StatusService, request: Request) -> ListingAsked | Reply:
    return service.ask_jobs_status(request)


def _answer_jobs_status(
    service: StatusService, asked: ListingAsked, found: Mark | Exception
) -> Reply | None:
    return service.answer_jobs_status(asked, found)


def _jobs_status(service: StatusService, request: Request) -> Reply:
    return service.jobs_status(request)


#: The operations' ``OneRead``s, each typed whole: its two parts, and what
#: it asks for, are checked to agree (``Operation.one_read`` holds any).
_JOB_STATUS_READ: OneRead[JobAsked, tuple[Row, str] | None] = OneRead(
    _ask_job_status, _answer_job_status
)
_JOBS_STATUS_READ: OneRead[ListingAsked, Mark] = OneRead(
    _ask_jobs_status, _answer_jobs_status
)
_GET_JOB_READ: OneRead[JobAsked, tuple[Row, str] | None] = OneRead(
    waiting.ask_job_now, reading.answer_job
)
_LIST_JOBS_READ: OneRead[PageAsked, Mark] = OneRead(
    reading.ask_kept_page, reading.answer_page
)


def _openapi(service: StatusService, request: Request) -> Reply:
    return openapi.serve(service, request, OPERATIONS)


JOB_ID_PARAM = Param(
    "job_id",
    "1-128 characters of A-Z a-z 0-9 . _ -, not starting with '.'",
    schemas.JOB_ID,
    where="path",
    required=True,
)

STATUS_PARAM = Param(
    "status",
    "Only these statuses (repeatable, or comma-separated)",
    {"type": "array", "items": {"type": "string"}},
)
EVENT_CURSOR_PARAM = Param("cursor", "Resume after this event id", {"type": "string"})
#: What a browser's EventSource sends by itself when it reconnects.
LAST_EVENT_ID_PARAM = Param(
    "Last-Event-ID",
    "Resume after this event id (before cursor when both are given)",
    {"type": "string"},
    where="header",
)

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "toolkit_job_status",
        "POST",
        "/v1/toolkit/job/status",
        "One job's record (the Toolkit API's endpoint)",
        _job_status,
        reads_body=True,
        answers=(400, 404, 405, 413, 415),
        body=schemas.TOOLKIT_JOB_BODY,
        response=schemas.RECORD,
        one_read=_JOB_STATUS_READ,
    ),
    Operation(
        "toolkit_jobs_status",
        "POST",
        "/v1/toolkit/jobs/status",
        "Statuses of jobs written recently (the Toolkit API's endpoint)",
        _jobs_status,
        reads_body=True,
        answers=(400, 404, 405, 413, 415),
        body=schemas.TOOLKIT_JOBS_BODY,
        body_optional=True,
        response=schemas.TOOLKIT_LISTING,
        one_read=_JOBS_STATUS_READ,
    ),
    Operation(
        "get_job",
        "GET",
        "/v1/job/{job_id}",
        "One job's record, with ETag and Last-Modified",
        waiting.get_job_waiting,
        one_read=_GET_JOB_READ,
        params=(
            JOB_ID_PARAM,
            Param(
                "wait",
                "Wait up to this many seconds for the condition (at most"
                " JOBSTATUS_MAX_WAIT)",
                {"type": "number", "exclusiveMinimum": 0, "maximum": schemas.MAX_WAIT},
            ),
            Param(
                "until",
                "finished: a terminal status; changed: another version than after",
                schemas.UNTIL,
            ),
            Param(
                "after",
                "The version to wait past (empty: the job did not exist)",
                {"type": "string"},
            ),
            Param(
                "if-none-match",
                "An ETag of an earlier answer: 304 while it is current",
                {"type": "string"},
                where="header",
            ),
        ),
        answers=(304, 400, 403, 404, 405, 410),
        tokens=True,
        waits=True,
        response=schemas.RECORD,
        gone=schemas.TOMBSTONE,
    ),
    Operation(
        "list_jobs",
        "GET",
        "/v1/jobs",
        "Jobs in change order: filter, page, count",
        reading.list_jobs,
        one_read=_LIST_JOBS_READ,
        params=(
            STATUS_PARAM,
            Param(
                "since_seconds",
                "Only jobs written within this many seconds",
                {"type": "number", "minimum": 0},
            ),
            Param(
                "limit",
                "Jobs per page",
                {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
            ),
            Param("cursor", "From an earlier answer", {"type": "string"}),
            Param("counts", "Add counts by status", {"type": "boolean"}),
            Param(
                "include",
                "record: add each job's whole record",
                {"type": "string", "enum": ["record"]},
            ),
        ),
        answers=(400, 405, 410),
        tokens=True,
        response=schemas.PAGE,
    ),
    Operation(
        "batch_jobs",
        "POST",
        "/v1/jobs/batch",
        "Many jobs by id",
        reading.batch,
        reads_body=True,
        answers=(400, 405, 413, 415),
        body=schemas.BATCH_BODY,
        response=schemas.BATCH,
    ),
    Operation(
        "job_events",
        "GET",
        "/v1/job/{job_id}/events",
        "One job's state now and each change, as server-sent events; ends"
        " after a terminal status",
        feed.open_feed,
        params=(
            JOB_ID_PARAM,
            EVENT_CURSOR_PARAM,
            LAST_EVENT_ID_PARAM,
        ),
        answers=(204, 400, 403, 405, 410, 501, 503),
        tokens=True,
        streams=True,
        media_type="text/event-stream",
    ),
    Operation(
        "jobs_events",
        "GET",
        "/v1/jobs/events",
        "The change feed: the window's jobs, then every change, as server-sent events",
        feed.open_feed,
        params=(
            STATUS_PARAM,
            Param(
                "job_id",
                "Only these jobs (repeatable, or comma-separated)",
                {"type": "array", "items": {"type": "string"}},
            ),
            Param(
                "since_seconds",
                "The first snapshot's window (default 600)",
                {"type": "number", "minimum": 0},
            ),
            EVENT_CURSOR_PARAM,
            LAST_EVENT_ID_PARAM,
        ),
        answers=(400, 403, 405, 410, 501, 503),
        tokens=True,
        streams=True,
        media_type="text/event-stream",
    ),
    Operation(
        "wait_jobs",
        "POST",
        "/v1/jobs/wait",
        "Wait until any of many jobs finishes or changes",
        waiting.wait_many,
        reads_body=True,
        answers=(400, 403, 405, 410, 413, 415),
        tokens=True,
        waits=True,
        body=schemas.WAIT_BODY,
        response=schemas.WAITED,
    ),
    Operation(
        "issue_token",
        "POST",
        "/v1/tokens",
        "A scoped read token for a browser (API key only)",
        reading.issue_token,
        reads_body=True,
        answers=(400, 405, 413, 415),
        body=schemas.TOKEN_BODY,
        response=schemas.TOKEN,
    ),
    Operation(
        "openapi",
        "GET",
        "/v1/openapi.json",
        "This document: OpenAPI 3.1 of every operation",
        _openapi,
        answers=(405,),
        authenticated=False,
        reads_store=False,
    ),
    Operation(
        "healthz",
        "GET",
        "/healthz",
        "200 while the process serves (no store call)",
        operating.healthz,
        answers=(405,),
        response=schemas.HEALTH,
        authenticated=False,
        reads_store=False,
    ),
    Operation(
        "readyz",
        "GET",
        "/readyz",
        "200 when the store answers, else 503 Job store unavailable",
        operating.readyz,
        answers=(405, 503),
        response=schemas.HEALTH,
        authenticated=False,
        reads_store=False,
    ),
    Operation(
        "metrics",
        "GET",
        "/metrics",
        "Prometheus metrics (API key unless JOBSTATUS_METRICS_AUTH=none)",
        operating.metrics,
        answers=(404, 405),
        reads_store=False,
        media_type="text/plain; version=0.0.4; charset=utf-8",
    ),
)


@dataclass(frozen=True, slots=True)
class Match:
    operation: Operation
    path_params: dict[str, str]


class Router:
    """Finds the operation of a method and path, under a mount prefix."""

    def __init__(
        self, operations: Sequence[Operation] = OPERATIONS, prefix: str = ""
    ) -> None:
        self.prefix = normalized_prefix(prefix)
        #: The operations of each path of the table, by method.
        self.methods: dict[str, dict[str, Operation]] = {}
        for operation in operations:
            self.methods.setdefault(operation.path, {})[operation.method] = operation
        for methods in self.methods.values():
            get = methods.get("GET")
            # HEAD wherever GET is (RFC 9110 §9.3.2: load balancers check
            # health with it): the same answer, its body left out by the
            # adapter. Not on a stream, whose head is all there is to send
            # before it follows changes for as long as the client stays.
            if get is not None and not get.streams:
                methods.setdefault("HEAD", get)
        # Paths without parameters by their text: a dict look-up, where
        # trying each pattern in turn cost 0.5 µs a request for the fifth.
        self._exact = {
            self.prefix + path: path for path in self.methods if "{" not in path
        }
        self._routes = [
            (path, _compile(self.prefix + path)) for path in self.methods if "{" in path
        ]

    def find(self, path: str) -> tuple[str, dict[str, str]] | None:
        """The table's path (``/v1/job/{job_id}``) that ``path`` falls
        under, with its parameters; None when it is no path of the table."""
        exact = self._exact.get(path)
        if exact is not None:
            return exact, {}
        for template, pattern in self._routes:
            found = pattern.fullmatch(path)
            if found is not None:
                return template, found.groupdict()
        return None

    def match(self, method: str, path: str) -> Match | tuple[str, ...] | None:
        """The match; or the allowed methods when only the method is wrong;
        or None when no operation has this path."""
        found = self.find(path)
        if found is None:
            return None
        methods = self.methods[found[0]]
        operation = methods.get(method)
        if operation is None:
            return tuple(methods)
        return Match(operation, found[1])


def normalized_prefix(prefix: str) -> str:
    prefix = prefix.rstrip("/")
    if prefix and not prefix.startswith("/"):
        prefix = "/" + prefix
    return prefix


def _compile(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)\}", template)
    pattern = "".join(
        # No line end in a parameter: Starlette's routes never match one
        # (their "$" would before a final newline, so the ASGI adapter
        # refuses such paths as no route), and both adapters answer alike.
        re.escape(part) if i % 2 == 0 else rf"(?P<{part}>[^/\n]+)"
        for i, part in enumerate(parts)
    )
    return re.compile(pattern)
