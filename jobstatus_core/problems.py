"""The error answers of the HTTP contract: a status code and its message."""

from __future__ import annotations

from .errors import JobStatusError, one_line_reason


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


def job_expired() -> ApiError:
    """Retention removed the job (SPEC §14); the answer carries its tombstone."""
    return ApiError(410, "Job expired")


def jobs_directory_not_found() -> ApiError:
    return ApiError(404, "Jobs directory not found")


def store_unavailable() -> ApiError:
    # As the 503s of the stream and waiter limits: an outage's refusals last
    # about one store timeout (1 s by default), and clients back off by it.
    return ApiError(503, "Job store unavailable", (("retry-after", "1"),))


def store_failed(what: str, exc: BaseException) -> ApiError:
    return ApiError(500, f"Failed to retrieve {what}: {one_line_reason(exc)}")
