"""jobstatus core: validation, the time window, the envelope and every error.

Pure logic: no file, network, clock or framework import.
"""

from __future__ import annotations

from . import jsontext
from .auth import API_KEY_HEADER, ApiKeyAuth
from .config import Settings
from .envelope import Host
from .errors import (
    ConfigError,
    InvalidRecord,
    JobStatusError,
    StoreError,
    StoreUnavailable,
    WouldBlock,
)
from .problems import ApiError
from .protocol import (
    Advising,
    AsyncReads,
    Checkable,
    Enumerable,
    Expiring,
    ForkSafe,
    Inline,
    Presence,
    ProcessLocal,
    RecordTexts,
    Store,
    TriesInline,
    Versioned,
    checked_at,
    checked_job_id,
)
from .registry import Registry
from .rows import Mark, Query, Row, Stale, Tombstone, Window
from .service import JOB_STATUS_PATH, JOBS_STATUS_PATH, Reply, StatusService
from .storebase import StoreBase, VersionedStoreBase
from .types import Auth, Headers, Record
from .validation import is_valid_job_id

__version__ = "0.1.0"

__all__ = [
    "API_KEY_HEADER",
    "JOBS_STATUS_PATH",
    "JOB_STATUS_PATH",
    "Advising",
    "ApiError",
    "ApiKeyAuth",
    "AsyncReads",
    "Auth",
    "Checkable",
    "ConfigError",
    "Enumerable",
    "Expiring",
    "ForkSafe",
    "Headers",
    "Host",
    "Inline",
    "InvalidRecord",
    "JobStatusError",
    "Mark",
    "Presence",
    "ProcessLocal",
    "Query",
    "Record",
    "RecordTexts",
    "Registry",
    "Reply",
    "Row",
    "Settings",
    "Stale",
    "StatusService",
    "Store",
    "StoreBase",
    "StoreError",
    "StoreUnavailable",
    "Tombstone",
    "TriesInline",
    "Versioned",
    "VersionedStoreBase",
    "Window",
    "WouldBlock",
    "__version__",
    "checked_at",
    "checked_job_id",
    "is_valid_job_id",
    "jsontext",
]
