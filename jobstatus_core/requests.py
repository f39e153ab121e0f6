"""A request as the core sees it: what an adapter read off the wire."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .tokens import EVERYTHING, Grant
from .types import Headers, RequestId
from .validation import parse_body

if TYPE_CHECKING:
    from .cursor import Cursor
    from .pages import PageKey
    from .protocol import AsyncReads
    from .rows import Mark, Row
    from .waiting import Waiting


# Not frozen: a frozen dataclass sets each field through object.__setattr__,
# five times the cost of making one (about 0.9 µs here), and one is made per
# request. Nothing changes a Request after it is made (``replace`` copies),
# but for the body it parses once.
@dataclass(slots=True)
class Request:
    #: The path as the client sent it, mount prefix included (the envelope's
    #: ``endpoint``).
    endpoint: str
    method: str
    headers: Headers
    body: bytes = b""
    query: Mapping[str, Sequence[str]] = field(default_factory=dict)
    path_params: Mapping[str, str] = field(default_factory=dict)
    #: The service's timer when the request arrived.
    started: float = 0.0
    #: What it may read: every job, or a scoped token's.
    grant: Grant = EVERYTHING
    #: A wait under way: what the handler returned last time (SPEC §10).
    waiting: Waiting | None = None
    #: Reads the body (``StatusService.parse_body``: with the fast parser
    #: the adapter's service was given).
    parser: Callable[[bytes], dict[str, Any]] = parse_body
    #: The store's mark, read for this request after it arrived (an
    #: adapter's awaited ``OneRead`` that did not answer it): the handler
    #: starts from it rather than reading it again.
    mark: Mark | None = None
    _payload: dict[str, Any] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def payload(self) -> dict[str, Any]:
        """The body as a JSON object (``parser``; raises ``ApiError``),
        parsed once: a handler tried on the event loop runs again, whole,
        after the round trip its store asked for."""
        if self._payload is None:
            self._payload = self.parser(self.body)
        return self._payload


F = TypeVar("F")


class Asked(Protocol[F]):
    """What a ``contract.OneRead`` asks for: a request read and checked
    (``JobAsked``, ``ListingAsked``, ``PageAsked``), naming the one store
    read (``F``: what it gives) its answer needs."""

    request: Request

    def read(self, store: AsyncReads) -> Awaitable[F]:
        """The read, awaited on the event loop."""
        ...

    def for_handler(self, found: F) -> Request:
        """The request the handler answers when ``OneRead.answer`` does
        not, with what was read."""
        ...


@dataclass(slots=True)
class JobAsked:
    """A request about one job read and checked, before the one store read
    its answer needs (``contract.OneRead``): the job's row and text."""

    request: Request
    job_id: str
    #: The body's ``id``, which the answer echoes.
    request_id: RequestId = None

    def read(self, store: AsyncReads) -> Awaitable[tuple[Row, str] | None]:
        return store.read_text_async(self.job_id)

    def for_handler(self, found: tuple[Row, str] | None) -> Request:
        """The request its handler answers when ``OneRead.answer`` does
        not (a job not there: the handler reads it again, then its
        tombstone)."""
        return self.request


class _ReadsMark:
    """An ``Asked`` whose one read is the store's mark: the two listings'."""

    __slots__ = ()
    request: Request

    def read(self, store: AsyncReads) -> Awaitable[Mark]:
        return store.mark_async()

    def for_handler(self, found: Mark) -> Request:
        """The request its handler answers when ``OneRead.answer`` does not
        (nothing kept under the mark): with the mark, not read again."""
        return replace(self.request, mark=found)


@dataclass(slots=True)
class ListingAsked(_ReadsMark):
    """A ``jobs/status`` request read and checked, before the one store
    read a kept listing needs (``contract.OneRead``): the store's mark."""

    request: Request
    request_id: RequestId
    #: The window's oldest time, from the request's ``since_seconds``.
    cutoff: float


@dataclass(slots=True)
class PageAsked(_ReadsMark):
    """A ``GET /v1/jobs`` request read and checked, before the store's mark
    (``contract.OneRead``): a kept page needs that read alone."""

    request: Request
    statuses: frozenset[str] | None
    since: float | None
    limit: int
    counts: bool
    records: bool
    #: The filter's digest, which the page's cursor is bound to.
    digest: str
    #: Where the page starts: the request's cursor (None: the first page).
    resume: Cursor | None
    #: The window's oldest time (None: no ``since_seconds``).
    cutoff: float | None
    #: What a kept page is found by; None for a token's page, never kept.
    key: PageKey | None
