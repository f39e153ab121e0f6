"""The two endpoints, framework-free: bytes and headers in, a reply out.

Adapters do the I/O (reading the body under the limit, writing the reply) and
call this; everything the contract decides is decided here, once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from . import cursor, errors, jsontext, problems, tokens
from .auth import API_KEY_HEADER
from .envelope import Host, envelope
from .errors import ConfigError, StoreError, StoreUnavailable, WouldBlock
from .listing import Listings
from .pages import Pages
from .problems import ApiError
from .protocol import AsyncReads, Expiring, Presence, RecordTexts, Store
from .requests import JobAsked, ListingAsked, Request
from .tokens import Grant

if TYPE_CHECKING:
    from .contract import Operation
    from .feed import Feed
    from .rows import Mark
    from .waiting import Waiting
from .types import Auth, Headers, RequestId
from .validation import (
    content_length,
    is_json_media_type,
    is_valid_job_id,
    job_id_of,
    parse_body,
    request_id_of,
    since_seconds_of,
)
from .window import cutoff

JOB_STATUS_PATH = "/v1/toolkit/job/status"
JOBS_STATUS_PATH = "/v1/toolkit/jobs/status"

#: Every JSON answer is the store's state now: a browser (or a shared cache)
#: that kept one by guesswork (it has a Last-Modified) would answer a poll,
#: or a long poll, from it. ``no-cache`` keeps the ETag's cheap 304s.
NOT_CACHED = ("cache-control", "no-cache, private")
JSON_HEADERS = (("content-type", "application/json"), NOT_CACHED)
#: The same store failure is logged again after this long at the soonest.
REPEAT_LOG_SECONDS = 60.0
#: Lines remembered for that; past it, all are forgotten (a store failing
#: with a new reason for each request, a path in each).
REMEMBERED_LOG_LINES = 1000

T = TypeVar("T")


# Not frozen, as Request (requests.py): one or two are made per request.
@dataclass(slots=True)
class Reply:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


class StatusService:
    """Answers ``job/status`` and ``jobs/status`` from one store.

    Clock, timer, request-id factory and pid (in ``host``) are passed in, so the
    core never reads the environment itself.
    """

    def __init__(
        self,
        store: Store,
        *,
        auth: Auth | None,
        host: Host,
        clock: Callable[[], float],
        timer: Callable[[], float],
        new_id: Callable[[], str],
        default_since: float = 600.0,
        max_body: int = 65536,
        logger: logging.Logger | None = None,
        secret: bytes = b"",
        max_wait: float = 60.0,
        max_waiters: int = 1000,
        max_streams: int = 1000,
        stream_seconds: float = 0.0,
        terminal: Iterable[str] = ("done", "failed", "cancelled"),
        open_operations: Iterable[str] = (),
        json_loads: Callable[[bytes], Any] | None = None,
    ) -> None:
        if not isinstance(store, Store):
            missing = sorted(
                name
                for name in dir(Store)
                if not name.startswith("_") and not hasattr(store, name)
            )
            raise ConfigError(
                f"{type(store).__name__} is not a store: it lacks {', '.join(missing)}"
            )
        self.auth = auth
        self.host = host
        self.clock = clock
        self.timer = timer
        self.new_id = new_id
        self.default_since = default_since
        self.max_body = max_body
        self.logger = logger or logging.getLogger("jobstatus")
        #: Signs cursors and tokens; instances sharing a store share it.
        self.secret = secret
        #: Waiting and streams (SPEC §10, §11): the longest wait, how many
        #: waiters and streams one process holds, and what "finished" means.
        self.max_wait = max_wait
        self.max_waiters = max_waiters
        self.max_streams = max_streams
        #: Streams end after this long (0: never): a client resumes with
        #: Last-Event-ID, as after any disconnect.
        self.stream_seconds = stream_seconds
        self.terminal = frozenset(terminal)
        #: Operations served without authentication besides those the table
        #: marks so (``metrics`` under ``JOBSTATUS_METRICS_AUTH=none``).
        self.open_operations = frozenset(open_operations)
        #: Reads request bodies (``Request.parser``): ``parse_body`` with
        #: ``json_loads``, a faster parser to try first (orjson's, which
        #: ``make_service`` passes when it is installed), or ``json`` alone.
        self.parse_body: Callable[[bytes], dict[str, Any]] = (
            parse_body if json_loads is None else partial(parse_body, fast=json_loads)
        )
        #: ``GET /metrics``: (media type, text); an adapter installs it.
        self.exposition: Callable[[], tuple[str, bytes]] | None = None
        #: Called with each store failure (the metrics count them).
        self.store_error_hooks: list[Callable[[Exception], None]] = []
        # Store failures logged, by line, with when (``_log_failure``). Two
        # threads racing log a line twice, no more: no lock.
        self._logged: dict[str, float] = {}
        self.replace_store(store)
        # Listing texts already checked (see _checked_listing). A race between
        # threads only checks a text twice: a tuple is swapped whole.
        self._checked_listings: tuple[str, ...] = ()

    def replace_store(self, store: Store) -> None:
        """Serve from ``store`` from now on (a forked child's stand-in)."""
        self.store = store
        self.listings = Listings(store, timer=self.timer)
        #: Answers of ``GET /v1/jobs`` kept while the store is unchanged.
        self.pages = Pages(timer=self.timer)
        # Its capabilities, looked up once.
        self._presence = store if isinstance(store, Presence) else None
        #: The store as one that keeps records as JSON text, or None.
        self.record_texts = store if isinstance(store, RecordTexts) else None
        #: The store as one that makes its polled reads on the event loop
        #: (``contract.OneRead``), or None.
        self.async_reads = store if isinstance(store, AsyncReads) else None
        #: The store as one that expires jobs (tombstones answer 410), or None.
        self.expiring = store if isinstance(store, Expiring) else None

    def handle(self, operation: Operation, request: Request) -> Reply | Waiting | Feed:
        """Answer ``request`` with ``operation``'s handler; ``Waiting`` (only
        from operations that wait) asks to be called again after a change.

        Whatever the handler raises is answered too, as the contract's 500
        (logged with its traceback): a value in the store no answer can be
        made of is still the envelope, never the server's plain-text 500."""
        try:
            return operation.handler(self, request)
        except WouldBlock:
            raise  # not a failure: the adapter runs the call again
        except ApiError as err:
            return self.fail(request, err)
        except Exception as exc:
            return self.unexpected(operation, request, exc)

    def unexpected(
        self, operation: Operation, request: Request, exc: Exception
    ) -> Reply:
        """The contract's 500 for what answering ``request`` raised past the
        store's own calls, logged with its traceback; not counted as the
        store's error (it may be this code's)."""
        self.logger.error("answering %s failed", operation.name, exc_info=exc)
        one = "{job_id}" in operation.path or operation.path == JOB_STATUS_PATH
        job_id = request.path_params.get("job_id")
        return self.fail(
            request,
            problems.store_failed("job status" if one else "job statuses", exc),
            job_id=job_id if is_valid_job_id(job_id) else None,
        )

    def check_request(
        self,
        operation: Operation,
        headers: Headers,
        query: Mapping[str, Sequence[str]] | None = None,
    ) -> Grant:
        """What can be refused before the body is read; raises ``ApiError``.

        Returns what the request may read: everything (the API key), or the
        jobs of a scoped token, where the operation takes tokens.
        """
        token = _token_of(headers, query) if operation.tokens else None
        if not operation.authenticated or operation.name in self.open_operations:
            grant = tokens.EVERYTHING
        elif token is not None:
            grant = tokens.verify(token, self.secret, self.clock())
        elif self.auth is not None and (
            # Two x-api-key fields arrive joined by a comma: which one counts
            # would depend on the server, so neither does.
            "," in headers.get(API_KEY_HEADER, "") or not self.auth(headers)
        ):
            raise problems.unauthorized()
        else:
            grant = tokens.EVERYTHING
        if operation.reads_body:
            length = content_length(headers)
            if length is not None and length > self.max_body:
                raise self.too_large()
        return grant

    def check_body(self, headers: Headers, body: bytes) -> None:
        """What is refused once the body is read; raises ``ApiError``.

        An empty body is the default window whatever its Content-Type: some
        clients label a body they do not send ``text/plain``.
        """
        content_type = headers.get("content-type", "")
        if body and content_type.strip() and not is_json_media_type(content_type):
            raise problems.unsupported_media_type(content_type)

    def too_large(self) -> ApiError:
        return problems.payload_too_large(self.max_body)

    def job_status(self, request: Request) -> Reply:
        """``POST /v1/toolkit/job/status``: ``ask_job_status``, the job's
        text read, ``answer_job_status`` (``contract.OneRead``)."""
        asked = self.ask_job_status(request)
        if isinstance(asked, Reply):
            return asked
        try:
            if self.record_texts is not None:
                found = self.record_texts.read_text(asked.job_id)
                text = None if found is None else found[1]
            else:
                record = self.store.get(asked.job_id)
                text = None if record is None else jsontext.encode(record)
        except WouldBlock:
            raise  # not a failure: the adapter runs the call again
        except Exception as exc:
            return self.answer_job_status(asked, exc)
        return self.answer_job_status(asked, text)

    def ask_job_status(self, request: Request) -> JobAsked | Reply:
        """``job/status``'s body read and checked: the job to read, or the
        answer refusing the request."""
        request_id: RequestId = None
        try:
            payload = request.payload()
            request_id = request_id_of(payload)
            job_id = job_id_of(payload)
        except ApiError as err:
            return self.error(request.endpoint, err, request.started, request_id)
        return JobAsked(request, job_id, request_id)

    def answer_job_status(
        self, asked: JobAsked, found: str | Exception | None
    ) -> Reply:
        """``job/status``'s answer: from the job's record as JSON text, or
        for no such job (None), or for the store's failure."""
        endpoint, started = asked.request.endpoint, asked.request.started
        if isinstance(found, str):
            return self._reply(
                endpoint,
                200,
                asked.request_id,
                asked.job_id,
                None,
                "success",
                started,
                found,
            )
        err = (
            problems.job_not_found()
            if found is None
            else self.store_failure("job status", found)
        )
        return self.error(endpoint, err, started, asked.request_id, asked.job_id)

    def jobs_status(self, request: Request) -> Reply:
        """``POST /v1/toolkit/jobs/status``: ``ask_jobs_status``, then the
        listing (kept, or read) — what ``answer_jobs_status`` answers from
        the store's mark alone when a kept listing is current."""
        asked = self.ask_jobs_status(request)
        if isinstance(asked, Reply):
            return asked
        try:
            listing = self._listing_json(asked.cutoff, request.mark)
        except WouldBlock:
            raise  # not a failure: the adapter runs the call again
        except ApiError as err:
            return self._listing_reply(asked, err)
        except Exception as exc:
            return self._listing_reply(asked, self.store_failure("job statuses", exc))
        return self._listing_reply(asked, listing)

    def ask_jobs_status(self, request: Request) -> ListingAsked | Reply:
        """``jobs/status``'s body read and checked: the window to list, or
        the answer refusing the request."""
        request_id: RequestId = None
        try:
            payload = request.payload()
            request_id = request_id_of(payload)
            since = since_seconds_of(payload, self.default_since)
        except ApiError as err:
            return self.error(request.endpoint, err, request.started, request_id)
        return ListingAsked(request, request_id, cutoff(self.clock(), since))

    def answer_jobs_status(
        self, asked: ListingAsked, found: Mark | Exception
    ) -> Reply | None:
        """``jobs/status``'s answer from the store's mark: the kept listing
        while it is current; None when none is (the handler reads the
        window), or when an empty one may mean a store that is not there."""
        if isinstance(found, Exception):
            return self._listing_reply(asked, self.store_failure("job statuses", found))
        listing = self.listings.kept(found, asked.cutoff)
        if listing is None or (listing == "{}" and self._presence is not None):
            return None
        try:
            checked = self._checked_listing(listing)
        except Exception as exc:  # a text the store kept but JSON refuses
            return self._listing_reply(asked, self.store_failure("job statuses", exc))
        return self._listing_reply(asked, checked)

    def _listing_reply(self, asked: ListingAsked, listing: str | ApiError) -> Reply:
        endpoint, started = asked.request.endpoint, asked.request.started
        if isinstance(listing, ApiError):
            return self.error(endpoint, listing, started, asked.request_id)
        return self._reply(
            endpoint, 200, asked.request_id, None, None, "success", started, listing
        )

    def error(
        self,
        endpoint: str,
        err: ApiError,
        started: float,
        request_id: RequestId = None,
        job_id: str | None = None,
    ) -> Reply:
        reply = self._reply(
            endpoint, err.status, request_id, job_id, None, err.message, started
        )
        if err.headers:
            return Reply(reply.status, reply.headers + err.headers, reply.body)
        return reply

    def _listing_json(self, since: float, mark: Mark | None) -> str:
        """The listing as JSON text: pre-encoded by the store when it can
        (``mark``: the store's, when the request has read it already)."""
        # Only an empty or a failed listing asks whether the store is there:
        # one that lists jobs was read from it (``Presence``).
        presence = self._presence
        try:
            listing = self._checked_listing(self.listings.json(since, mark))
        except Exception:
            # A listing that failed because the store is gone (``jobs`` a
            # symlink loop, its parent unreadable) is that 404.
            if presence is not None and not presence.exists():
                raise problems.jobs_directory_not_found() from None
            raise
        if listing == "{}" and presence is not None and not presence.exists():
            raise problems.jobs_directory_not_found()
        return listing

    # -- helpers of the handlers of the other endpoints -------------------

    def store_call(self, what: str, call: Callable[[], T]) -> T:
        """``call()``; a store failure becomes the contract's error."""
        try:
            return call()
        except (ApiError, WouldBlock):
            raise
        except Exception as exc:
            raise self.store_failure(what, exc) from None

    def success(
        self,
        request: Request,
        response: Any,
        *,
        request_id: RequestId = None,
        job_id: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        extra: Mapping[str, Any] | None = None,
        response_json: str | None = None,
    ) -> Reply:
        """The answer of ``response``, or of ``response_json``: the response
        already encoded (``jsontext.encode``), ``response`` then None."""
        reply = self._reply(
            request.endpoint,
            200,
            request_id,
            job_id,
            response,
            "success",
            request.started,
            response_json,
            extra=extra,
        )
        return Reply(200, reply.headers + headers, reply.body) if headers else reply

    def fail(
        self,
        request: Request,
        err: ApiError,
        *,
        request_id: RequestId = None,
        job_id: str | None = None,
        extra: Mapping[str, Any] | None = None,
        response: Any = None,
    ) -> Reply:
        """The error answer; ``response`` is null but where the contract
        says otherwise (a tombstone on ``410 Job expired``)."""
        if extra is None and response is None:
            return self.error(
                request.endpoint, err, request.started, request_id, job_id
            )
        reply = self._reply(
            request.endpoint,
            err.status,
            request_id,
            job_id,
            response,
            err.message,
            request.started,
            extra=extra,
        )
        return Reply(reply.status, reply.headers + err.headers, reply.body)

    @staticmethod
    def not_modified(headers: tuple[tuple[str, str], ...]) -> Reply:
        return Reply(304, (*headers, NOT_CACHED), b"")

    def encode_cursor(self, position: cursor.Cursor, digest: str) -> str:
        return cursor.encode(position, digest, self.secret)

    def decode_cursor(self, text: str, digest: str) -> cursor.Cursor:
        return cursor.decode(text, digest, self.secret)

    def _checked_listing(self, text: str) -> str:
        """A store's listing text, checked once: a kept listing is the same
        object poll after poll, and a full parse costs what pre-encoding saves
        (about 0.2 ms for 1,000 jobs)."""
        if any(text is known for known in self._checked_listings):
            return text
        checked = jsontext.checked_object(text)
        if checked is text:
            # One slot per window a store keeps listings for (ListingCache).
            self._checked_listings = (text, *self._checked_listings[:3])
        return checked

    def note_store_error(self, exc: Exception) -> None:
        for hook in self.store_error_hooks:
            hook(exc)

    def store_failure(self, what: str, exc: Exception) -> ApiError:
        """The contract's error for a store call about ``what`` that raised
        ``exc`` (500, or 503 when the store is unavailable), logged and
        counted (``store_error_hooks``)."""
        # A WouldBlock is re-raised by each caller's own bare ``raise``, never
        # from here: raised from this frame, whose argument holds it, it would
        # make a cycle (exception, traceback, frame) per request on the loop,
        # left to the garbage collector.
        self.note_store_error(exc)
        if isinstance(exc, StoreUnavailable):
            self._log_failure(
                logging.WARNING,
                f"job store unavailable: {errors.one_line_reason(exc)}",
            )
            return problems.store_unavailable()
        if isinstance(exc, StoreError):
            # A reason the store wrote for people (a half-written job file):
            # one line; a traceback per poll would bury the log.
            self._log_failure(
                logging.ERROR, f"reading {what} failed: {errors.one_line_reason(exc)}"
            )
        else:
            self.logger.error("reading %s failed", what, exc_info=exc)
        return problems.store_failed(what, exc)

    def _log_failure(self, level: int, line: str) -> None:
        """``line``, unless it was logged within ``REPEAT_LOG_SECONDS``: a
        client polling a broken job file every second, or every request
        while the store is down, is one line a minute (the metrics count
        each)."""
        now = self.timer()
        last = self._logged.get(line)
        if last is not None and now - last < REPEAT_LOG_SECONDS:
            return
        if len(self._logged) >= REMEMBERED_LOG_LINES:
            self._logged.clear()
        self._logged[line] = now
        self.logger.log(level, "%s", line)

    def _reply(
        self,
        endpoint: str,
        code: int,
        request_id: RequestId,
        job_id: str | None,
        response: Any,
        message: str,
        started: float,
        response_json: str | None = None,
        *,
        extra: Mapping[str, Any] | None = None,
    ) -> Reply:
        """The reply; ``response_json``, when given, is the response as JSON text;
        ``extra``: keys an endpoint adds to the envelope (``waited``)."""
        text = envelope(
            host=self.host,
            endpoint=endpoint,
            code=code,
            request_id=request_id,
            job_id=self.new_id() if job_id is None else job_id,
            response_json=(
                jsontext.encode(response) if response_json is None else response_json
            ),
            message=message,
            elapsed=self.timer() - started,
            extra=extra,
        )
        # ASCII by construction: jsontext escapes every other character, and
        # a store's listing is checked (or written again) by checked_object.
        return Reply(code, JSON_HEADERS, text.encode("ascii"))


def _token_of(
    headers: Headers, query: Mapping[str, Sequence[str]] | None
) -> str | None:
    """A scoped token, from ``Authorization: Bearer`` or ``?token=`` (what an
    EventSource can send)."""
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    given = (query or {}).get("token")
    # Empty is none, as an empty bearer is: the API key, if any, decides.
    return given[0] if given and given[0] else None
