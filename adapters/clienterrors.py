"""What the jobstatus client raises: one exception for each kind of error
answer (SPEC §9-§12), each carrying the envelope's message and status."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jobstatus_core.errors import JobStatusError
from jobstatus_core.types import Record


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


ERRORS: dict[int, type[ClientError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    410: Gone,
    413: PayloadTooLarge,
    503: Unavailable,
}


def error_of(status: int, envelope: dict[str, Any] | None, text: str) -> ClientError:
    message = envelope.get("message") if envelope is not None else None
    if not isinstance(message, str):
        message = text.strip()[:200] or "no message"
    kind = ERRORS.get(status) or (ServerError if status >= 500 else ClientError)
    return kind(message, status=status, envelope=envelope)
