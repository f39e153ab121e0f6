"""Every error the library raises, and the HTTP errors of the contract."""

from __future__ import annotations


class JobStatusError(Exception):
    """Base class: callers that want one thing to catch catch this."""


class ConfigError(JobStatusError):
    """A setting is wrong. The message names the setting and fits on one line."""


class InvalidRecord(JobStatusError, ValueError):
    """A record handed to ``Store.put`` is not a valid job record."""


class StoreError(JobStatusError):
    """The store failed. The message is a one-line reason safe to show a client."""


class StoreUnavailable(StoreError):
    """A network store is unreachable or timed out; the request may be retried."""


class ApiError(JobStatusError):
    """An error answer of the HTTP contract: a status code and its message."""

    def __init__(
        self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized")


def invalid_json(detail: str) -> ApiError:
    return ApiError(400, f"Invalid JSON: {detail}")


def invalid_payload(detail: str) -> ApiError:
    return ApiError(400, f"Invalid payload: {detail}")


def payload_too_large(limit: int) -> ApiError:
    return ApiError(413, f"Payload too large: the body limit is {limit} bytes")


def unsupported_media_type(content_type: str) -> ApiError:
    # Only the media type is echoed: parameters are client noise.
    media_type = content_type.split(";", 1)[0].strip()[:100]
    return ApiError(
        415,
        f"Unsupported media type: {media_type!r}; send Content-Type: application/json",
    )


def invalid_content_length() -> ApiError:
    return ApiError(400, "Invalid Content-Length: expected ASCII digits")


def method_not_allowed(method: str, allowed: tuple[str, ...] = ("POST",)) -> ApiError:
    methods = ", ".join(allowed)
    return ApiError(
        405,
        f"Method not allowed: {method[:20]}; use {' or '.join(allowed)}",
        (("allow", methods),),
    )


def route_not_found() -> ApiError:
    return ApiError(404, "Not found")


def job_not_found() -> ApiError:
    return ApiError(404, "Job not found")


def jobs_directory_not_found() -> ApiError:
    return ApiError(404, "Jobs directory not found")


def store_unavailable() -> ApiError:
    return ApiError(503, "Job store unavailable")


def store_failed(what: str, exc: BaseException) -> ApiError:
    return ApiError(500, f"Failed to retrieve {what}: {one_line_reason(exc)}")


def one_line_reason(exc: BaseException) -> str:
    """A reason fit for a client: one line, no traceback, no file paths.

    ``StoreError`` messages are written by backends for clients. Anything else
    may carry paths (``OSError.filename``) or secrets, so only its kind is shown.
    """
    if isinstance(exc, StoreError):
        text = str(exc)
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        text = type(exc).__name__
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first[:200]
