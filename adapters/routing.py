"""Where the endpoints live, shared by both adapters."""

from __future__ import annotations

from jobstatus_core import JOB_STATUS_PATH, JOBS_STATUS_PATH


def endpoint_paths(prefix: str = "") -> tuple[str, str]:
    """The paths of ``job/status`` and ``jobs/status`` under a host's prefix."""
    prefix = prefix.rstrip("/")
    if prefix and not prefix.startswith("/"):
        prefix = "/" + prefix
    return prefix + JOB_STATUS_PATH, prefix + JOBS_STATUS_PATH
