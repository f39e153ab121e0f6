"""Request targets, read the same way by both adapters."""

from __future__ import annotations

import re

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
