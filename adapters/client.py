"""A Python client of the jobstatus API (SPEC §9-§12), sync and async.

Needs the ``client`` extra (httpx and httpx-sse). Every call retries a
``503`` (honouring ``Retry-After``) and a failed connection, with backoff;
any other error answer raises the exception of its kind, carrying the
envelope's message. The rules are in docs/client.md.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Literal, TypedDict, cast, overload
from urllib.parse import quote

from jobstatus_core import __version__
from jobstatus_core.errors import JobStatusError
from jobstatus_core.registry import redact
from jobstatus_core.types import Record
from jobstatus_core.validation import JOB_ID_RULE, is_valid_job_id

INSTALL = "pip install 'jobstatus[client]'"

try:
    import httpx
    import httpx_sse
except ImportError as exc:  # pragma: no cover - the extra is in the test env
    raise ImportError(
        f"the jobstatus client needs httpx and httpx-sse: {INSTALL}"
    ) from exc

Until = Literal["finished", "changed"]
ReturnWhen = Literal["all", "any"]

#: The server's longest wait by default (JOBSTATUS_MAX_WAIT); one request
#: never asks for more than the client's ``max_wait``.
DEFAULT_MAX_WAIT = 60.0
#: Ids one request carries (the server's limit for batch and wait).
MAX_IDS = 1000
#: A Retry-After longer than this is cut to it: a client never sleeps longer.
MAX_RETRY_AFTER = 60.0
MAX_BACKOFF = 30.0
#: The feed sends a heartbeat every 15 s: three missed ones mean the
#: connection is dead, and it is opened again.
STREAM_READ_TIMEOUT = 45.0
#: Jobs whose last change a watch remembers, to drop a change sent again.
SEEN_JOBS = 10_000
JOB_NOT_FOUND = "Job not found"
CURSOR_EXPIRED = "Cursor expired"


# -- errors -----------------------------------------------------------------


class ClientError(JobStatusError):
    """The server answered an error, or could not be reached."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        envelope: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message if status is None else f"{status} {message}")
        self.message = message
        self.status = status
        self.envelope = envelope


class BadRequest(ClientError):
    """400: the request was refused as invalid (a parameter, a cursor)."""


class Unauthorized(ClientError):
    """401: no API key, a wrong one, or an expired or altered token."""


class Forbidden(ClientError):
    """403: the token does not cover this job."""


class NotFound(ClientError):
    """404: no such job (where a call does not answer None), or no such path."""


class Gone(ClientError):
    """410: the job expired (``tombstone``), or a cursor cannot be resumed."""

    @property
    def tombstone(self) -> Record | None:
        response = None if self.envelope is None else self.envelope.get("response")
        return response if isinstance(response, dict) else None


class PayloadTooLarge(ClientError):
    """413: the body is over the server's limit."""


class ServerError(ClientError):
    """5xx other than 503: the store or the server failed."""


class Unavailable(ClientError):
    """503 or no connection, still so after every retry."""


_ERRORS: dict[int, type[ClientError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    410: Gone,
    413: PayloadTooLarge,
    503: Unavailable,
}


# -- what the calls answer --------------------------------------------------


class JobState(TypedDict):
    job_status: Any
    updated_at: float
    version: str


class _Listed(JobState):
    job_id: str


class ListedJob(_Listed, total=False):
    #: Only with ``include_records=True``.
    record: Record


class BatchResult(TypedDict):
    jobs: dict[str, Record]
    expired: dict[str, Record]
    unknown: list[str]


class TokenGrant(TypedDict):
    token: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class Waited:
    """One job's wait: its record (None: it does not exist) and whether the
    condition held before the time was up."""

    record: Record | None
    met: bool


@dataclass(frozen=True, slots=True)
class WaitedMany:
    """Many jobs' wait: those that met the condition, those still pending,
    and those that expired meanwhile (their tombstones: an expired job
    meets any condition, SPEC §14)."""

    jobs: dict[str, JobState]
    pending: list[str]
    met: bool
    expired: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Change:
    """One event of the change feed: ``kind`` is ``job`` or ``expired``; or
    ``reset`` (``RESET``, no job): the store began another life (flushed,
    restored, restarted behind its writes), so the jobs seen before may be
    gone; the window's jobs follow, as at the start."""

    kind: str
    job_id: str
    job_status: Any
    #: The event's data as sent: the job's state, or its tombstone.
    data: dict[str, Any]
    #: Where the feed resumes after this change.
    cursor: str | None


#: The change a watch yields when it starts again from the window.
RESET = Change("reset", "", None, {}, None)


# -- the rules both clients share --------------------------------------------


@dataclass(frozen=True, slots=True)
class _Call:
    method: str
    path: str
    params: list[tuple[str, str]] = field(default_factory=list)
    body: Any = None
    #: Seconds the server may hold the answer (a wait) besides the timeout.
    holds: float = 0.0
    #: A wait's end (``time.monotonic()``): no retry starts after it.
    deadline: float | None = None


#: An unmet wait answered before half its time is asked again no sooner
#: than this after it was asked: a server that cannot hold waits (a WSGI
#: worker with one thread, one stopping) is polled once a second, not as
#: fast as it answers.
EARLY_PAUSE = 1.0


def _early_pause(call: _Call, asked: float) -> float:
    """Seconds to pause before asking again after an unmet answer to
    ``call``, asked at ``asked`` (``time.monotonic()``); never past its
    deadline."""
    now = time.monotonic()
    took = now - asked
    if took >= call.holds / 2:
        return 0.0
    pause = EARLY_PAUSE - took
    if call.deadline is not None:
        pause = min(pause, call.deadline - now)
    return max(pause, 0.0)


@dataclass(frozen=True, slots=True)
class _Answer:
    envelope: dict[str, Any] | None
    headers: httpx.Headers


#: A refused wait's message naming the server's longest (JOBSTATUS_MAX_WAIT).
_MOST_WAIT = re.compile(r"(?:wait|timeout) must be > 0 and at most ([0-9.e+]+)$")


def retry_delay(attempt: int, retry_after: str | None, backoff: float) -> float:
    """Seconds before retry number ``attempt`` (0 first): the server's
    ``Retry-After`` when it gives one (at most ``MAX_RETRY_AFTER``), else
    exponential backoff with jitter, so that clients refused together do
    not come back together."""
    given = _retry_after_seconds(retry_after)
    if given is not None:
        return min(given, MAX_RETRY_AFTER)
    ceiling = min(backoff * 2.0**attempt, MAX_BACKOFF)
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, float(moment.timestamp()) - time.time())


def _error(status: int, envelope: dict[str, Any] | None, text: str) -> ClientError:
    message = envelope.get("message") if envelope is not None else None
    if not isinstance(message, str):
        message = text.strip()[:200] or "no message"
    kind = _ERRORS.get(status) or (ServerError if status >= 500 else ClientError)
    return kind(message, status=status, envelope=envelope)


def _envelope_of(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _answer(response: httpx.Response, *, missing_ok: bool) -> _Answer:
    """The answer of a call; raises the error of its kind. With
    ``missing_ok``, ``404 Job not found`` answers an envelope of None."""
    envelope = _envelope_of(response)
    if response.status_code == 200 and envelope is not None:
        return _Answer(envelope, response.headers)
    if (
        missing_ok
        and response.status_code == 404
        and envelope is not None
        and envelope.get("message") == JOB_NOT_FOUND
    ):
        return _Answer(None, response.headers)
    raise _error(response.status_code, envelope, response.text)


def _job_path(job_id: str, suffix: str = "") -> str:
    # Checked here: an id with '/' or '..' would reach another path.
    if not is_valid_job_id(job_id):
        raise ValueError(f"invalid job id {job_id!r}: must be {JOB_ID_RULE}")
    return f"/v1/job/{quote(job_id, safe='')}{suffix}"


def _ids(job_ids: Iterable[str]) -> list[str]:
    ids = list(dict.fromkeys(job_ids))
    for job_id in ids:
        _job_path(job_id)
    return ids


def _number(value: float) -> str:
    return format(value, "g")


def _status_params(status: str | Iterable[str] | None) -> list[tuple[str, str]]:
    if status is None:
        return []
    if isinstance(status, str):
        return [("status", status)]
    return [("status", ",".join(status))]


class _Paging:
    """``GET /v1/jobs`` page after page, following ``cursor`` while
    ``has_more``."""

    def __init__(self, params: list[tuple[str, str]], cursor: str | None) -> None:
        self.params = params
        self.cursor = cursor
        self.counts: dict[str, int] | None = None
        self.done = False

    def call(self) -> _Call:
        resume = [] if self.cursor is None else [("cursor", self.cursor)]
        return _Call("GET", "/v1/jobs", [*self.params, *resume])

    def feed(self, envelope: dict[str, Any]) -> list[ListedJob]:
        response = envelope["response"]
        self.cursor = response["cursor"]
        self.done = not response["has_more"]
        if self.counts is None and "counts" in response:
            self.counts = response["counts"]
        return cast(list[ListedJob], response["jobs"])


class _Deadline:
    def __init__(self, timeout: float | None) -> None:
        if timeout is not None and not timeout > 0:
            raise ValueError("timeout must be > 0 seconds, or None to wait as long")
        self.at = None if timeout is None else time.monotonic() + timeout

    def step(self, longest: float) -> float | None:
        """Seconds to ask the server to wait; None when the time is up."""
        if self.at is None:
            return longest
        left = self.at - time.monotonic()
        # Under a millisecond the server would round the wait to nothing.
        return None if left < 0.001 else min(left, longest)


class _OneWait:
    """``GET /v1/job/{id}?wait=`` again and again until the condition holds."""

    def __init__(
        self, job_id: str, until: Until, timeout: float | None, longest: float
    ) -> None:
        self.path = _job_path(job_id)
        self.until = until
        self.deadline = _Deadline(timeout)
        self.longest = longest
        #: The version at the start (changed): None until the first answer;
        #: "" when the job did not exist then.
        self.baseline: str | None = None
        self.last = Waited(None, False)

    def call(self) -> _Call | None:
        seconds = self.deadline.step(self.longest)
        if seconds is None:
            return None
        params = [("wait", _number(seconds)), ("until", self.until)]
        if self.baseline is not None:
            # "" (absent at the start) too: no version is empty, so a job
            # that appeared between two requests meets it at once. Without
            # ``after`` the server would take its version at arrival.
            params.append(("after", self.baseline))
        return _Call("GET", self.path, params, holds=seconds, deadline=self.deadline.at)

    def feed(self, answer: _Answer) -> Waited | None:
        """The result when the condition holds; None: ask again."""
        record = None if answer.envelope is None else answer.envelope["response"]
        version = answer.headers.get("etag", "").strip('"') if record else ""
        waited = (answer.envelope or {}).get("waited") or {}
        met = bool(waited.get("met"))
        if self.until == "changed":
            if self.baseline is None:
                self.baseline = version
            # An early answer without ``after`` takes the version at its own
            # arrival; the client's baseline is the first one's.
            met = met or version != self.baseline
        self.last = Waited(record, met)
        return self.last if met else None


class _ManyWait:
    """``POST /v1/jobs/wait`` again and again until all (or any) met it."""

    def __init__(
        self,
        job_ids: Iterable[str],
        until: Until,
        timeout: float | None,
        longest: float,
        return_when: ReturnWhen,
    ) -> None:
        self.pending = _ids(job_ids)
        if not 1 <= len(self.pending) <= MAX_IDS:
            raise ValueError(f"wait takes 1 to {MAX_IDS} job ids")
        self.until = until
        self.deadline = _Deadline(timeout)
        self.longest = longest
        self.return_when = return_when
        self.met: dict[str, JobState] = {}
        self.expired: dict[str, dict[str, Any]] = {}
        #: changed: the cursor of the first answer, so that every later
        #: request is relative to the start, not to its own arrival.
        self.after: str | None = None
        #: The last answer brought jobs that met it.
        self.progressed = False

    def call(self) -> _Call | None:
        seconds = self.deadline.step(self.longest)
        if seconds is None:
            return None
        body: dict[str, Any] = {
            "job_ids": self.pending,
            "timeout": seconds,
            "until": self.until,
        }
        if self.after is not None:
            body["after"] = self.after
        return _Call(
            "POST", "/v1/jobs/wait", body=body, holds=seconds, deadline=self.deadline.at
        )

    def feed(self, answer: _Answer) -> WaitedMany | None:
        assert answer.envelope is not None
        response = answer.envelope["response"]
        # Some jobs met it (the server answers as soon as ANY does): not an
        # early answer to pause after, whether or not all have.
        self.progressed = bool(response["jobs"] or response["expired"])
        self.met.update(response["jobs"])
        # Answered at once and never pending again: asked again, an expired
        # job would be answered at once again, for ever.
        self.expired.update(response["expired"])
        self.pending = [
            job_id
            for job_id in self.pending
            if job_id not in self.met and job_id not in self.expired
        ]
        if self.until == "changed" and self.after is None:
            self.after = response["cursor"]
        return self.result() if self._done() else None

    def _done(self) -> bool:
        return not self.pending or (
            self.return_when == "any" and bool(self.met or self.expired)
        )

    def result(self) -> WaitedMany:
        return WaitedMany(
            dict(self.met), list(self.pending), self._done(), dict(self.expired)
        )


class _Watch:
    """The state of a watch across reconnections: where to resume, and the
    last change of each job, so that a change sent again is not yielded."""

    def __init__(
        self,
        status: str | Iterable[str] | None,
        job_ids: Iterable[str] | None,
        since_seconds: float | None,
    ) -> None:
        self.params = _status_params(status)
        if job_ids is not None:
            self.params += [("job_id", job_id) for job_id in _ids(job_ids)]
        if since_seconds is not None:
            self.params.append(("since_seconds", _number(since_seconds)))
        self.last_id: str | None = None
        self.retry: float | None = None
        #: Started again from the window: ``RESET`` is yielded first.
        self.reset = False
        self._seen: OrderedDict[str, tuple[str, Any]] = OrderedDict()

    def opened(self) -> Change | None:
        """``RESET`` once, on the first stream after a start again."""
        if not self.reset:
            return None
        self.reset = False
        return RESET

    def headers(self) -> dict[str, str]:
        return {} if self.last_id is None else {"last-event-id": self.last_id}

    def accept(self, sse: httpx_sse.ServerSentEvent) -> Change | None:
        if sse.retry is not None:
            self.retry = sse.retry / 1000
        if sse.id:
            self.last_id = sse.id
        if sse.event not in ("job", "expired"):
            return None
        data = sse.json()
        job_id = data["job_id"]
        mark = (sse.event, data.get("version", data.get("expired_at")))
        if self._seen.get(job_id) == mark:
            return None
        self._seen[job_id] = mark
        self._seen.move_to_end(job_id)
        if len(self._seen) > SEEN_JOBS:
            self._seen.popitem(last=False)
        return Change(sse.event, job_id, data.get("job_status"), data, sse.id or None)

    def refused(self, error: ClientError) -> bool:
        """Whether to connect again after ``error``: a cursor the store can no
        longer resume starts again from the window (SPEC §9)."""
        if isinstance(error, Gone) and error.message.startswith(CURSOR_EXPIRED):
            self.last_id = None
            self.reset = True
            self._seen.clear()
            return True
        return isinstance(error, Unavailable)


def _check_stream(response: httpx.Response) -> None:
    media_type = response.headers.get("content-type", "").partition(";")[0]
    if media_type.strip() != "text/event-stream":
        raise ClientError(
            f"expected an event stream, got {media_type or 'no Content-Type'}",
            status=response.status_code,
        )


class _Base:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None,
        token: str | None,
        timeout: float,
        retries: int | None,
        backoff: float,
        max_wait: float,
    ) -> None:
        self.base_url = base_url
        self.timeout = timeout
        #: Retries after a 503 or a failed connection; None: without end.
        self.retries = retries
        self.backoff = backoff
        self.max_wait = max_wait
        self.headers = {"user-agent": f"jobstatus-client/{__version__}"}
        if api_key is not None:
            self.headers["x-api-key"] = api_key
        if token is not None:
            self.headers["authorization"] = f"Bearer {token}"

    def _take_most(self, wait: _OneWait | _ManyWait, error: BadRequest) -> None:
        """A server whose ``JOBSTATUS_MAX_WAIT`` is below ``max_wait``
        refuses a longer wait, naming its most: wait that long from now on
        (this client's later waits too). Any other refusal is raised."""
        found = _MOST_WAIT.search(error.message)
        most = float(found.group(1)) if found else 0.0
        if not 0 < most < wait.longest:
            raise error
        wait.longest = self.max_wait = most

    def _gives_up(self, attempt: int) -> bool:
        return self.retries is not None and attempt >= self.retries

    def _stops(self, call: _Call, attempt: int, delay: float) -> bool:
        """Whether a failed ``call`` is not tried again after ``delay``: the
        retries are spent, or a wait's time would be up by then (its
        ``timeout`` is kept, not overrun by the retries)."""
        if call.deadline is not None and time.monotonic() + delay >= call.deadline:
            return True
        return self._gives_up(attempt)

    def _timeout_for(self, call: _Call) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, read=self.timeout + call.holds)

    def _stream_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, read=STREAM_READ_TIMEOUT)

    def _unreachable(self, exc: httpx.TransportError) -> Unavailable:
        # Printed by ``jobstatus wait``: a password in the URL is not.
        where = redact(self.base_url)
        return Unavailable(f"cannot reach {where}: {type(exc).__name__}")

    @staticmethod
    def _list_params(
        status: str | Iterable[str] | None,
        since_seconds: float | None,
        include_records: bool,
        counts: bool,
        page_size: int,
    ) -> list[tuple[str, str]]:
        params = _status_params(status)
        if since_seconds is not None:
            params.append(("since_seconds", _number(since_seconds)))
        if include_records:
            params.append(("include", "record"))
        if counts:
            params.append(("counts", "true"))
        params.append(("limit", str(page_size)))
        return params

    @staticmethod
    def _token_call(
        job_ids: Iterable[str] | None, everything: bool, ttl_seconds: float | None
    ) -> _Call:
        if everything == (job_ids is not None):
            raise ValueError("give job_ids or all=True, one of them")
        body: dict[str, Any] = (
            {"all": True} if everything else {"job_ids": _ids(job_ids or ())}
        )
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        return _Call("POST", "/v1/tokens", body=body)


def _batches(job_ids: Iterable[str]) -> list[list[str]]:
    ids = _ids(job_ids)
    return [ids[i : i + MAX_IDS] for i in range(0, len(ids), MAX_IDS)]


def _merge(result: BatchResult, part: dict[str, Any]) -> None:
    result["jobs"].update(part["jobs"])
    result["expired"].update(part["expired"])
    result["unknown"].extend(part["unknown"])


# -- the clients --------------------------------------------------------------


class Listing(Iterator[ListedJob]):
    """Every job of a list, page after page. ``cursor``, once it is spent,
    resumes the list later with only what changed since."""

    def __init__(self, client: JobStatusClient, paging: _Paging) -> None:
        self._client = client
        self._paging = paging
        self._buffer: deque[ListedJob] = deque()

    @property
    def cursor(self) -> str | None:
        return self._paging.cursor

    @property
    def counts(self) -> dict[str, int] | None:
        return self._paging.counts

    def __next__(self) -> ListedJob:
        while not self._buffer:
            if self._paging.done:
                raise StopIteration
            answer = self._client._send(self._paging.call())
            assert answer.envelope is not None
            self._buffer.extend(self._paging.feed(answer.envelope))
        return self._buffer.popleft()


class JobStatusClient(_Base):
    """The jobstatus API from Python: ``with JobStatusClient(url, api_key=k)
    as client: client.get("job-1")``."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
        retries: int | None = 3,
        backoff: float = 0.5,
        max_wait: float = DEFAULT_MAX_WAIT,
    ) -> None:
        super().__init__(
            base_url,
            api_key=api_key,
            token=token,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_wait=max_wait,
        )
        self._http = httpx.Client(base_url=base_url, headers=self.headers)

    def __enter__(self) -> JobStatusClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def get(self, job_id: str) -> Record | None:
        """The job's record; None when there is no such job. An expired job
        raises ``Gone`` with its tombstone."""
        answer = self._send(_Call("GET", _job_path(job_id)), missing_ok=True)
        return None if answer.envelope is None else answer.envelope["response"]

    def list(
        self,
        *,
        status: str | Iterable[str] | None = None,
        since_seconds: float | None = None,
        include_records: bool = False,
        counts: bool = False,
        cursor: str | None = None,
        page_size: int = 100,
    ) -> Listing:
        """Every job that matches, in change order, over as many pages as
        it takes; from ``cursor`` when given."""
        params = self._list_params(
            status, since_seconds, include_records, counts, page_size
        )
        return Listing(self, _Paging(params, cursor))

    def batch(self, job_ids: Iterable[str]) -> BatchResult:
        """Many jobs by id (over several requests past 1,000 ids)."""
        result = BatchResult(jobs={}, expired={}, unknown=[])
        for ids in _batches(job_ids):
            answer = self._send(_Call("POST", "/v1/jobs/batch", body={"job_ids": ids}))
            assert answer.envelope is not None
            _merge(result, answer.envelope["response"])
        return result

    # A str is a Sequence[str] too: the first overload takes it.
    @overload
    def wait(  # type: ignore[overload-overlap]
        self,
        job_ids: str,
        *,
        until: Until = ...,
        timeout: float | None = ...,
        return_when: ReturnWhen = ...,
    ) -> Waited: ...

    @overload
    def wait(
        self,
        job_ids: Sequence[str],
        *,
        until: Until = ...,
        timeout: float | None = ...,
        return_when: ReturnWhen = ...,
    ) -> WaitedMany: ...

    def wait(
        self,
        job_ids: str | Sequence[str],
        *,
        until: Until = "finished",
        timeout: float | None = None,
        return_when: ReturnWhen = "all",
    ) -> Waited | WaitedMany:
        """Until the job (or all, or any, of the jobs) is finished or has
        changed, or ``timeout`` seconds (None: as long as it takes); then
        the state as it is."""
        if isinstance(job_ids, str):
            one = _OneWait(job_ids, until, timeout, self.max_wait)
            while (call := one.call()) is not None:
                asked = time.monotonic()
                try:
                    answer = self._send(call, missing_ok=True)
                except BadRequest as error:
                    self._take_most(one, error)
                    continue
                if (done := one.feed(answer)) is not None:
                    return done
                time.sleep(_early_pause(call, asked))
            return one.last
        many = _ManyWait(job_ids, until, timeout, self.max_wait, return_when)
        while (call := many.call()) is not None:
            asked = time.monotonic()
            try:
                answered = self._send(call)
            except BadRequest as error:
                self._take_most(many, error)
                continue
            if (result := many.feed(answered)) is not None:
                return result
            if not many.progressed:
                time.sleep(_early_pause(call, asked))
        return many.result()

    def watch(
        self,
        *,
        status: str | Iterable[str] | None = None,
        job_ids: Iterable[str] | None = None,
        since_seconds: float | None = None,
    ) -> Iterator[Change]:
        """Changes as they happen: the window's jobs first, then each change.
        Reconnects after any disconnect, resuming after the last change."""
        state = _Watch(status, job_ids, since_seconds)
        failures = 0
        while True:
            try:
                with httpx_sse.connect_sse(
                    self._http,
                    "GET",
                    "/v1/jobs/events",
                    params=state.params,
                    headers=state.headers(),
                    timeout=self._stream_timeout(),
                ) as source:
                    response = source.response
                    if response.status_code != 200:
                        response.read()
                        error = _error(
                            response.status_code,
                            _envelope_of(response),
                            response.text,
                        )
                        if not state.refused(error) or self._gives_up(failures):
                            raise error
                        delay = retry_delay(
                            failures, response.headers.get("retry-after"), self.backoff
                        )
                    else:
                        _check_stream(response)
                        if (reset := state.opened()) is not None:
                            yield reset
                        for sse in source.iter_sse():
                            failures = 0
                            change = state.accept(sse)
                            if change is not None:
                                yield change
                        delay = state.retry or retry_delay(failures, None, self.backoff)
            except httpx.TransportError as exc:
                if self._gives_up(failures):
                    raise self._unreachable(exc) from exc
                delay = retry_delay(failures, None, self.backoff)
            failures += 1
            time.sleep(delay)

    def token(
        self,
        job_ids: Iterable[str] | None = None,
        *,
        all: bool = False,
        ttl_seconds: float | None = None,
    ) -> TokenGrant:
        """A scoped read token for a browser: these jobs, or all of them."""
        answer = self._send(self._token_call(job_ids, all, ttl_seconds))
        assert answer.envelope is not None
        return cast(TokenGrant, answer.envelope["response"])

    def _send(self, call: _Call, *, missing_ok: bool = False) -> _Answer:
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    call.method,
                    call.path,
                    params=tuple(call.params),
                    json=call.body,
                    timeout=self._timeout_for(call),
                )
            except httpx.TransportError as exc:
                delay = retry_delay(attempt, None, self.backoff)
                if self._stops(call, attempt, delay):
                    raise self._unreachable(exc) from exc
            else:
                if response.status_code != 503:
                    return _answer(response, missing_ok=missing_ok)
                delay = retry_delay(
                    attempt, response.headers.get("retry-after"), self.backoff
                )
                if self._stops(call, attempt, delay):
                    return _answer(response, missing_ok=missing_ok)
            attempt += 1
            time.sleep(delay)


class AsyncListing(AsyncIterator[ListedJob]):
    """``Listing``, for ``async for``."""

    def __init__(self, client: AsyncJobStatusClient, paging: _Paging) -> None:
        self._client = client
        self._paging = paging
        self._buffer: deque[ListedJob] = deque()

    @property
    def cursor(self) -> str | None:
        return self._paging.cursor

    @property
    def counts(self) -> dict[str, int] | None:
        return self._paging.counts

    async def __anext__(self) -> ListedJob:
        while not self._buffer:
            if self._paging.done:
                raise StopAsyncIteration
            answer = await self._client._send(self._paging.call())
            assert answer.envelope is not None
            self._buffer.extend(self._paging.feed(answer.envelope))
        return self._buffer.popleft()


class AsyncJobStatusClient(_Base):
    """``JobStatusClient`` for async code: the same calls, awaited."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
        retries: int | None = 3,
        backoff: float = 0.5,
        max_wait: float = DEFAULT_MAX_WAIT,
    ) -> None:
        super().__init__(
            base_url,
            api_key=api_key,
            token=token,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_wait=max_wait,
        )
        self._http = httpx.AsyncClient(base_url=base_url, headers=self.headers)

    async def __aenter__(self) -> AsyncJobStatusClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def get(self, job_id: str) -> Record | None:
        """The job's record; None when there is no such job."""
        answer = await self._send(_Call("GET", _job_path(job_id)), missing_ok=True)
        return None if answer.envelope is None else answer.envelope["response"]

    def list(
        self,
        *,
        status: str | Iterable[str] | None = None,
        since_seconds: float | None = None,
        include_records: bool = False,
        counts: bool = False,
        cursor: str | None = None,
        page_size: int = 100,
    ) -> AsyncListing:
        """Every job that matches, for ``async for``."""
        params = self._list_params(
            status, since_seconds, include_records, counts, page_size
        )
        return AsyncListing(self, _Paging(params, cursor))

    async def batch(self, job_ids: Iterable[str]) -> BatchResult:
        """Many jobs by id (over several requests past 1,000 ids)."""
        result = BatchResult(jobs={}, expired={}, unknown=[])
        for ids in _batches(job_ids):
            answer = await self._send(
                _Call("POST", "/v1/jobs/batch", body={"job_ids": ids})
            )
            assert answer.envelope is not None
            _merge(result, answer.envelope["response"])
        return result

    @overload
    async def wait(  # type: ignore[overload-overlap]
        self,
        job_ids: str,
        *,
        until: Until = ...,
        timeout: float | None = ...,
        return_when: ReturnWhen = ...,
    ) -> Waited: ...

    @overload
    async def wait(
        self,
        job_ids: Sequence[str],
        *,
        until: Until = ...,
        timeout: float | None = ...,
        return_when: ReturnWhen = ...,
    ) -> WaitedMany: ...

    async def wait(
        self,
        job_ids: str | Sequence[str],
        *,
        until: Until = "finished",
        timeout: float | None = None,
        return_when: ReturnWhen = "all",
    ) -> Waited | WaitedMany:
        """``JobStatusClient.wait``, awaited."""
        if isinstance(job_ids, str):
            one = _OneWait(job_ids, until, timeout, self.max_wait)
            while (call := one.call()) is not None:
                asked = time.monotonic()
                try:
                    answer = await self._send(call, missing_ok=True)
                except BadRequest as error:
                    self._take_most(one, error)
                    continue
                if (done := one.feed(answer)) is not None:
                    return done
                await asyncio.sleep(_early_pause(call, asked))
            return one.last
        many = _ManyWait(job_ids, until, timeout, self.max_wait, return_when)
        while (call := many.call()) is not None:
            asked = time.monotonic()
            try:
                answered = await self._send(call)
            except BadRequest as error:
                self._take_most(many, error)
                continue
            if (result := many.feed(answered)) is not None:
                return result
            if not many.progressed:
                await asyncio.sleep(_early_pause(call, asked))
        return many.result()

    async def watch(
        self,
        *,
        status: str | Iterable[str] | None = None,
        job_ids: Iterable[str] | None = None,
        since_seconds: float | None = None,
    ) -> AsyncIterator[Change]:
        """``JobStatusClient.watch``, for ``async for``."""
        state = _Watch(status, job_ids, since_seconds)
        failures = 0
        while True:
            try:
                async with httpx_sse.aconnect_sse(
                    self._http,
                    "GET",
                    "/v1/jobs/events",
                    params=state.params,
                    headers=state.headers(),
                    timeout=self._stream_timeout(),
                ) as source:
                    response = source.response
                    if response.status_code != 200:
                        await response.aread()
                        error = _error(
                            response.status_code,
                            _envelope_of(response),
                            response.text,
                        )
                        if not state.refused(error) or self._gives_up(failures):
                            raise error
                        delay = retry_delay(
                            failures, response.headers.get("retry-after"), self.backoff
                        )
                    else:
                        _check_stream(response)
                        if (reset := state.opened()) is not None:
                            yield reset
                        async for sse in source.aiter_sse():
                            failures = 0
                            change = state.accept(sse)
                            if change is not None:
                                yield change
                        delay = state.retry or retry_delay(failures, None, self.backoff)
            except httpx.TransportError as exc:
                if self._gives_up(failures):
                    raise self._unreachable(exc) from exc
                delay = retry_delay(failures, None, self.backoff)
            failures += 1
            await asyncio.sleep(delay)

    async def token(
        self,
        job_ids: Iterable[str] | None = None,
        *,
        all: bool = False,
        ttl_seconds: float | None = None,
    ) -> TokenGrant:
        """A scoped read token for a browser: these jobs, or all of them."""
        answer = await self._send(self._token_call(job_ids, all, ttl_seconds))
        assert answer.envelope is not None
        return cast(TokenGrant, answer.envelope["response"])

    async def _send(self, call: _Call, *, missing_ok: bool = False) -> _Answer:
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    call.method,
                    call.path,
                    params=tuple(call.params),
                    json=call.body,
                    timeout=self._timeout_for(call),
                )
            except httpx.TransportError as exc:
                delay = retry_delay(attempt, None, self.backoff)
                if self._stops(call, attempt, delay):
                    raise self._unreachable(exc) from exc
            else:
                if response.status_code != 503:
                    return _answer(response, missing_ok=missing_ok)
                delay = retry_delay(
                    attempt, response.headers.get("retry-after"), self.backoff
                )
                if self._stops(call, attempt, delay):
                    return _answer(response, missing_ok=missing_ok)
            attempt += 1
            await asyncio.sleep(delay)
