"""The rules both jobstatus clients share, without input or output: each
call as a ``Call`` to send, each answer read into a result or an error, the
state of a paging, a wait or a watch between requests, and when to try
again. ``JobStatusClient`` and ``AsyncJobStatusClient`` (``client``) only
send the calls, the one blocking, the other awaited.

Imported through ``client``, which says what to install when httpx is not.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Literal, cast
from urllib.parse import quote, urlsplit

import httpx
import httpx_sse

from jobstatus_core import __version__
from jobstatus_core.auth import key_problem
from jobstatus_core.errors import first_line
from jobstatus_core.registry import redact
from jobstatus_core.validation import JOB_ID_RULE, is_valid_job_id

from .clientanswers import (
    RESET,
    BatchResult,
    Change,
    JobState,
    ListedJob,
    Waited,
    WaitedMany,
)
from .clienterrors import BadRequest, ClientError, Gone, Unavailable, error_of

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


@dataclass(frozen=True, slots=True)
class Call:
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


def early_pause(call: Call, asked: float) -> float:
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
class Answer:
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


def envelope_of(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def answer_of(response: httpx.Response, *, missing_ok: bool) -> Answer:
    """The answer of a call; raises the error of its kind. With
    ``missing_ok``, ``404 Job not found`` answers an envelope of None."""
    envelope = envelope_of(response)
    if response.status_code == 200 and envelope is not None:
        return Answer(envelope, response.headers)
    if (
        missing_ok
        and response.status_code == 404
        and envelope is not None
        and envelope.get("message") == JOB_NOT_FOUND
    ):
        return Answer(None, response.headers)
    raise error_of(response.status_code, envelope, response.text)


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a server's base URL, or None. Checked when a
    client is made: httpx would only refuse it at the first request, as if
    the server were down."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:
        return f"not a URL ({exc}): {redact(url)!r}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"expected an http:// or https:// URL with a host, got {redact(url)!r}"
    return None


def refused_setting(
    base_url: str, api_key: str | None, token: str | None
) -> tuple[str, str] | None:
    """The first of a client's arguments that no request could carry, named
    as the argument, and why; None when every one can."""
    for name, problem in (
        ("base_url", url_problem(base_url)),
        ("api_key", api_key and key_problem(api_key)),
        ("token", token and key_problem(token)),
    ):
        if problem:
            return name, problem
    return None


def job_path(job_id: str, suffix: str = "") -> str:
    # Checked here: an id with '/' or '..' would reach another path.
    if not is_valid_job_id(job_id):
        raise ValueError(f"invalid job id {job_id!r}: must be {JOB_ID_RULE}")
    return f"/v1/job/{quote(job_id, safe='')}{suffix}"


def _ids(job_ids: Iterable[str]) -> list[str]:
    ids = list(dict.fromkeys(job_ids))
    for job_id in ids:
        job_path(job_id)
    return ids


def _number(value: float) -> str:
    return format(value, "g")


def _status_params(status: str | Iterable[str] | None) -> list[tuple[str, str]]:
    if status is None:
        return []
    if isinstance(status, str):
        return [("status", status)]
    return [("status", ",".join(status))]


class Paging:
    """``GET /v1/jobs`` page after page, following ``cursor`` while
    ``has_more``."""

    def __init__(self, params: list[tuple[str, str]], cursor: str | None) -> None:
        self.params = params
        self.cursor = cursor
        self.counts: dict[str, int] | None = None
        self.done = False

    def call(self) -> Call:
        resume = [] if self.cursor is None else [("cursor", self.cursor)]
        return Call("GET", "/v1/jobs", [*self.params, *resume])

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


class OneWait:
    """``GET /v1/job/{id}?wait=`` again and again until the condition holds."""

    def __init__(
        self, job_id: str, until: Until, timeout: float | None, longest: float
    ) -> None:
        self.path = job_path(job_id)
        self.until = until
        self.deadline = _Deadline(timeout)
        self.longest = longest
        #: The version at the start (changed): None until the first answer;
        #: "" when the job did not exist then.
        self.baseline: str | None = None
        self.last = Waited(None, False)

    def call(self) -> Call | None:
        seconds = self.deadline.step(self.longest)
        if seconds is None:
            return None
        params = [("wait", _number(seconds)), ("until", self.until)]
        if self.baseline is not None:
            # "" (absent at the start) too: no version is empty, so a job
            # that appeared between two requests meets it at once. Without
            # ``after`` the server would take its version at arrival.
            params.append(("after", self.baseline))
        return Call("GET", self.path, params, holds=seconds, deadline=self.deadline.at)

    def feed(self, answer: Answer) -> Waited | None:
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


class ManyWait:
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

    def call(self) -> Call | None:
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
        return Call(
            "POST", "/v1/jobs/wait", body=body, holds=seconds, deadline=self.deadline.at
        )

    def feed(self, answer: Answer) -> WaitedMany | None:
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


class Watch:
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


def check_stream(response: httpx.Response) -> None:
    media_type = response.headers.get("content-type", "").partition(";")[0]
    if media_type.strip() != "text/event-stream":
        raise ClientError(
            f"expected an event stream, got {media_type or 'no Content-Type'}",
            status=response.status_code,
        )


logger = logging.getLogger("jobstatus.client")


class ClientBase:
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
        refused = refused_setting(base_url, api_key, token)
        if refused is not None:
            raise ValueError("{}: {}".format(*refused))
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

    def _take_most(self, wait: OneWait | ManyWait, error: BadRequest) -> None:
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

    def _stops(self, call: Call, attempt: int, delay: float) -> bool:
        """Whether a failed ``call`` is not tried again after ``delay``: the
        retries are spent, or a wait's time would be up by then (its
        ``timeout`` is kept, not overrun by the retries)."""
        if call.deadline is not None and time.monotonic() + delay >= call.deadline:
            return True
        return self._gives_up(attempt)

    def _timeout_for(self, call: Call) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, read=self.timeout + call.holds)

    def _stream_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, read=STREAM_READ_TIMEOUT)

    def _unreachable(self, exc: httpx.TransportError) -> Unavailable:
        # Printed by ``jobstatus wait``: a password in the URL is not. The
        # reason says which failure it was (refused, a name not found, TLS
        # spoken to a plain server), on one line.
        where = redact(self.base_url)
        said = first_line(exc)
        reason = f"{type(exc).__name__}: {said}" if said else type(exc).__name__
        return Unavailable(f"cannot reach {where}: {reason}")

    def _lost(self, exc: httpx.TransportError, failures: int) -> None:
        """A watch, which outlives restarts and tries again without end,
        says once a streak that it cannot reach the server: a wrong port
        would otherwise wait in silence."""
        if failures == 0:
            logger.warning("%s; trying again", self._unreachable(exc))

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
    ) -> Call:
        if everything == (job_ids is not None):
            raise ValueError("give job_ids or all=True, one of them")
        body: dict[str, Any] = (
            {"all": True} if everything else {"job_ids": _ids(job_ids or ())}
        )
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        return Call("POST", "/v1/tokens", body=body)


def batches(job_ids: Iterable[str]) -> list[list[str]]:
    ids = _ids(job_ids)
    return [ids[i : i + MAX_IDS] for i in range(0, len(ids), MAX_IDS)]


def merge(result: BatchResult, part: dict[str, Any]) -> None:
    result["jobs"].update(part["jobs"])
    result["expired"].update(part["expired"])
    result["unknown"].extend(part["unknown"])
