"""jobstatus: job-status endpoints over HTTP for any Python web app.

The one import a host needs::

    from jobstatus import open_store, make_service, status_routes, WSGIApp

Everything here is also importable from where it lives (``jobstatus_core``,
``jobstatus_backends``, ``jobstatus_adapters``); this package only gathers
the public names. Importing it imports Starlette (a dependency), not uvicorn,
gunicorn, redis-py, watchdog or httpx: those load when used. The client
(``JobStatusClient``, ``AsyncJobStatusClient``) needs the ``client`` extra and
loads on first use, so that a host without it can still import this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jobstatus_adapters.service import make_service, service_from_settings
from jobstatus_adapters.starlette import create_app, status_routes
from jobstatus_adapters.wsgi import WSGIApp
from jobstatus_backends import default_registry, registry
from jobstatus_backends import store_from_url as open_store
from jobstatus_backends.recorder import AsyncRecorder, Recorder
from jobstatus_core import (
    Advising,
    ApiKeyAuth,
    Auth,
    Checkable,
    ConfigError,
    Enumerable,
    ForkSafe,
    Headers,
    Inline,
    InvalidRecord,
    JobStatusError,
    Mark,
    Presence,
    ProcessLocal,
    Query,
    Record,
    RecordTexts,
    Registry,
    Settings,
    StatusService,
    Store,
    StoreBase,
    StoreError,
    StoreUnavailable,
    Window,
    __version__,
)
from jobstatus_core.rows import Row
from jobstatus_core.wrapping import StoreWrapper, wrap

if TYPE_CHECKING:
    from jobstatus_adapters.client import AsyncJobStatusClient, JobStatusClient

#: Names that load on first use: their module needs an optional extra.
_LAZY = ("AsyncJobStatusClient", "JobStatusClient")

__all__ = [
    "Advising",
    "ApiKeyAuth",
    "AsyncJobStatusClient",
    "AsyncRecorder",
    "Auth",
    "Checkable",
    "ConfigError",
    "Enumerable",
    "ForkSafe",
    "Headers",
    "Inline",
    "InvalidRecord",
    "JobStatusClient",
    "JobStatusError",
    "Mark",
    "Presence",
    "ProcessLocal",
    "Query",
    "Record",
    "RecordTexts",
    "Recorder",
    "Registry",
    "Row",
    "Settings",
    "StatusService",
    "Store",
    "StoreBase",
    "StoreError",
    "StoreUnavailable",
    "StoreWrapper",
    "WSGIApp",
    "Window",
    "__version__",
    "create_app",
    "default_registry",
    "make_service",
    "open_store",
    "registry",
    "service_from_settings",
    "status_routes",
    "wrap",
]


def __getattr__(name: str) -> object:
    # PEP 562: the client's module imports httpx, which only the client
    # extra installs; without it, using a name fails with the pip line.
    if name in _LAZY:
        from jobstatus_adapters import client

        return getattr(client, name)
    raise AttributeError(f"module 'jobstatus' has no attribute {name!r}")
