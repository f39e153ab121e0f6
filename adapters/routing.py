"""Request targets, read the same way by both adapters."""

from __future__ import annotations

import re
from types import MappingProxyType
from urllib.parse import parse_qs

from jobstatus_core.params import Query

# scheme "://" authority, then the path (RFC 3986 §3); the query is not part
# of a WSGI PATH_INFO or an ASGI path.
_ABSOLUTE_FORM = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*(?P<path>[^?#]*)")


def origin_path(target: str) -> str | None:
    """The path a request target names: itself when it is one (``/...``), the
    path of an absolute-form target (``http://host/x`` is ``/x``), or None
    (``*``, or no path at all)."""
    if target.startswith("/"):
        return target
    match = _ABSOLUTE_FORM.fullmatch(target)
    if match is None:
        return None
    return match["path"] or "/"


#: Queries read once: at most ``KEPT_QUERIES``, the table starting over when
#: full. Clients poll with the same query (parse_qs takes 1.6 µs of a
#: ``GET /v1/jobs?limit=100``); threads may race to read one, alike.
KEPT_QUERIES = 256
#: Only a query a poll sends is kept: short (a cursor is ~80 characters),
#: of a few parameters, and without a token. Any client may send a long
#: one, before it is authenticated: kept, 256 of them would hold hundreds
#: of megabytes; and a token is not kept past its request.
KEPT_QUERY_LENGTH = 256
KEPT_QUERY_PARAMETERS = 8
_QUERIES: dict[str, Query] = {}
_NO_QUERY: Query = MappingProxyType({})


def query_of(raw: str) -> Query:
    """A query string's parameters, every value kept (blank ones too), read
    once per text when it is a poll's: what is answered may be shared, so
    it cannot be changed."""
    if not raw:
        return _NO_QUERY
    query = _QUERIES.get(raw)
    if query is None:
        parsed = parse_qs(raw, keep_blank_values=True)
        query = MappingProxyType({name: tuple(v) for name, v in parsed.items()})
        if (
            len(raw) <= KEPT_QUERY_LENGTH
            and raw.count("&") < KEPT_QUERY_PARAMETERS
            and "token" not in query
        ):
            if len(_QUERIES) >= KEPT_QUERIES:
                _QUERIES.clear()
            _QUERIES[raw] = query
    return query
