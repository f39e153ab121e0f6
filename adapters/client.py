"""A Python client of the jobstatus API (SPEC §9-§12), sync and async.

Needs the ``client`` extra (httpx and httpx-sse). Every call retries a
``503`` (honouring ``Retry-After``) and a failed connection, with backoff;
any other error answer raises the exception of its kind, carrying the
envelope's message. The rules are in docs/client.md; the ones both clients
share are in ``clientcalls``, what they answer in ``clientanswers``, what
they raise in ``clienterrors``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import cast, overload

from jobstatus_core.types import Record

try:
    import httpx
    import httpx_sse
except ImportError as exc:  # pragma: no cover - the extra is in the test env
    raise ImportError(
        "the jobstatus client needs httpx and httpx-sse: "
        "pip install 'jobstatus[client]'"
    ) from exc

from .clientanswers import (
    RESET,
    BatchResult,
    Change,
    JobState,
    ListedJob,
    TokenGrant,
    Waited,
    WaitedMany,
)
from .clientcalls import (
    DEFAULT_MAX_WAIT,
    MAX_IDS,
    MAX_RETRY_AFTER,
    Answer,
    Call,
    ClientBase,
    ManyWait,
    OneWait,
    Paging,
    ReturnWhen,
    Until,
    Watch,
    answer_of,
    batches,
    check_stream,
    early_pause,
    envelope_of,
    job_path,
    merge,
    retry_delay,
)
from .clienterrors import (
    BadRequest,
    ClientError,
    Forbidden,
    Gone,
    NotFound,
    PayloadTooLarge,
    ServerError,
    Unauthorized,
    Unavailable,
    error_of,
)

__all__ = [
    "DEFAULT_MAX_WAIT",
    "MAX_IDS",
    "MAX_RETRY_AFTER",
    "RESET",
    "AsyncJobStatusClient",
    "AsyncListing",
    "BadRequest",
    "BatchResult",
    "Change",
    "ClientError",
    "Forbidden",
    "Gone",
    "JobState",
    "JobStatusClient",
    "ListedJob",
    "Listing",
    "NotFound",
    "PayloadTooLarge",
    "ReturnWhen",
    "ServerError",
    "TokenGrant",
    "Unauthorized",
    "Unavailable",
    "Until",
    "Waited",
    "WaitedMany",
    "retry_delay",
]


class Listing(Iterator[ListedJob]):
    """Every job of a list, page after page. ``cursor``, once it is spent,
    resumes the list later with only what changed since."""

    def __init__(self, client: JobStatusClient, paging: Paging) -> None:
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


class JobStatusClient(ClientBase):
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
        answer = self._send(Call("GET", job_path(job_id)), missing_ok=True)
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
        return Listing(self, Paging(params, cursor))

    def batch(self, job_ids: Iterable[str]) -> BatchResult:
        """Many jobs by id (over several requests past 1,000 ids)."""
        result = BatchResult(jobs={}, expired={}, unknown=[])
        for ids in batches(job_ids):
            answer = self._send(Call("POST", "/v1/jobs/batch", body={"job_ids": ids}))
            assert answer.envelope is not None
            merge(result, answer.envelope["response"])
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
            one = OneWait(job_ids, until, timeout, self.max_wait)
            while (call := one.call()) is not None:
                asked = time.monotonic()
                try:
                    answer = self._send(call, missing_ok=True)
                except BadRequest as error:
                    self._take_most(one, error)
                    continue
                if (done := one.feed(answer)) is not None:
                    return done
                time.sleep(early_pause(call, asked))
            return one.last
        many = ManyWait(job_ids, until, timeout, self.max_wait, return_when)
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
                time.sleep(early_pause(call, asked))
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
        state = Watch(status, job_ids, since_seconds)
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
                        error = error_of(
                            response.status_code,
                            envelope_of(response),
                            response.text,
                        )
                        if not state.refused(error) or self._gives_up(failures):
                            raise error
                        delay = retry_delay(
                            failures, response.headers.get("retry-after"), self.backoff
                        )
                    else:
                        check_stream(response)
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
                self._lost(exc, failures)
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

    def _send(self, call: Call, *, missing_ok: bool = False) -> Answer:
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
                    return answer_of(response, missing_ok=missing_ok)
                delay = retry_delay(
                    attempt, response.headers.get("retry-after"), self.backoff
                )
                if self._stops(call, attempt, delay):
                    return answer_of(response, missing_ok=missing_ok)
            attempt += 1
            time.sleep(delay)


class AsyncListing(AsyncIterator[ListedJob]):
    """``Listing``, for ``async for``."""

    def __init__(self, client: AsyncJobStatusClient, paging: Paging) -> None:
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


class AsyncJobStatusClient(ClientBase):
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
        answer = await self._send(Call("GET", job_path(job_id)), missing_ok=True)
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
        return AsyncListing(self, Paging(params, cursor))

    async def batch(self, job_ids: Iterable[str]) -> BatchResult:
        """Many jobs by id (over several requests past 1,000 ids)."""
        result = BatchResult(jobs={}, expired={}, unknown=[])
        for ids in batches(job_ids):
            answer = await self._send(
                Call("POST", "/v1/jobs/batch", body={"job_ids": ids})
            )
            assert answer.envelope is not None
            merge(result, answer.envelope["response"])
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
            one = OneWait(job_ids, until, timeout, self.max_wait)
            while (call := one.call()) is not None:
                asked = time.monotonic()
                try:
                    answer = await self._send(call, missing_ok=True)
                except BadRequest as error:
                    self._take_most(one, error)
                    continue
                if (done := one.feed(answer)) is not None:
                    return done
                await asyncio.sleep(early_pause(call, asked))
            return one.last
        many = ManyWait(job_ids, until, timeout, self.max_wait, return_when)
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
                await asyncio.sleep(early_pause(call, asked))
        return many.result()

    async def watch(
        self,
        *,
        status: str | Iterable[str] | None = None,
        job_ids: Iterable[str] | None = None,
        since_seconds: float | None = None,
    ) -> AsyncIterator[Change]:
        """``JobStatusClient.watch``, for ``async for``."""
        state = Watch(status, job_ids, since_seconds)
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
                        error = error_of(
                            response.status_code,
                            envelope_of(response),
                            response.text,
                        )
                        if not state.refused(error) or self._gives_up(failures):
                            raise error
                        delay = retry_delay(
                            failures, response.headers.get("retry-after"), self.backoff
                        )
                    else:
                        check_stream(response)
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
                self._lost(exc, failures)
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

    async def _send(self, call: Call, *, missing_ok: bool = False) -> Answer:
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
                    return answer_of(response, missing_ok=missing_ok)
                delay = retry_delay(
                    attempt, response.headers.get("retry-after"), self.backoff
                )
                if self._stops(call, attempt, delay):
                    return answer_of(response, missing_ok=missing_ok)
            attempt += 1
            await asyncio.sleep(delay)
