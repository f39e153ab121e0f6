"""The one JSON encoding of every answer, and listings pre-encoded by stores.

A listing of 1,000 jobs is most of a ``jobs/status`` answer; stores that keep
each job's ``"job_id":status`` member already encoded (``member``) let the
answer be joined instead of encoded, byte for byte what ``encode`` would make.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

# Compact, ASCII-only (lone surrogates from a client stay encodable), and
# built once: json.dumps with separators= builds an encoder on every call.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def encode(value: Any) -> str:
    return _ENCODER.encode(value)


def member(job_id: str, status: Any) -> str:
    """``"job_id":<status>``, as ``encode`` writes it inside an object.

    Valid job ids are plain ASCII without quotes or backslashes, so quoting
    them needs no escaping.
    """
    return f'"{job_id}":{_ENCODER.encode(status)}'


def join_members(members: Iterable[str]) -> str:
    """The object text of ``members``: equal to ``encode`` of the dict."""
    return "{" + ",".join(members) + "}"


def status_of(job_id: str, member_text: str) -> Any:
    """The status a ``member`` text holds."""
    return json.loads(member_text[len(job_id) + 3 :])
