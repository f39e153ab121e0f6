"""Build a ``StatusService`` with the real clock, ids and pid.

Both adapters take the service this returns, so their knobs are the same.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import secrets
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from jobstatus_core import (
    ApiKeyAuth,
    Auth,
    ConfigError,
    ForkSafe,
    Host,
    Settings,
    StatusService,
    Store,
    StoreError,
    knobs,
)
from jobstatus_core import __version__ as version
from jobstatus_core.config import (
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_STREAMS,
    DEFAULT_MAX_WAIT,
    DEFAULT_MAX_WAITERS,
    DEFAULT_SINCE_SECONDS,
    DEFAULT_TERMINAL,
    METRICS_AUTH,
    MOST_MAX_WAIT,
)
from jobstatus_core.errors import OPENED_BEFORE_FORK
from jobstatus_core.wrapping import StoreWrapper, wrap

from .serverstack import json_parser


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset()


def new_request_id() -> str:
    """A fresh UUID4 string, as ``str(uuid.uuid4())`` writes it, without the
    ``UUID`` object between (2.5 → 1 µs: every GET answer makes one)."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # the RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def make_service(
    store: Store,
    *,
    api_keys: Iterable[str] | None = (),
    auth: Auth | _Unset | None = UNSET,
    queue_id: int | str | None = None,
    queue_length: Callable[[], int] = lambda: 0,
    build_number: str | None = None,
    default_since: float = DEFAULT_SINCE_SECONDS,
    max_body: int = DEFAULT_MAX_BODY,
    logger: logging.Logger | None = None,
    secret: str | None = None,
    max_wait: float = DEFAULT_MAX_WAIT,
    max_waiters: int = DEFAULT_MAX_WAITERS,
    max_streams: int = DEFAULT_MAX_STREAMS,
    stream_seconds: float = 0.0,
    terminal: Iterable[str] = DEFAULT_TERMINAL,
    metrics_auth: str = "key",
) -> StatusService:
    """The service behind both adapters.

    Give ``api_keys``, or your own ``auth`` callable, or ``auth=None`` to serve
    without authentication (say so explicitly: there is no silent default).
    ``secret`` signs cursors (``JOBSTATUS_TOKEN_SECRET``); instances sharing a
    store must share it. Unset, it is derived from the API keys.
    ``metrics_auth="none"`` serves ``GET /metrics`` without the API key.
    """
    if metrics_auth not in METRICS_AUTH:
        raise ConfigError(f"metrics_auth: expected one of {', '.join(METRICS_AUTH)}")
    keys = knobs.texts("api_keys", api_keys)
    terminal = knobs.texts("terminal", terminal)
    if not terminal:
        raise ConfigError("terminal: expected at least one status")
    default_since = knobs.seconds("default_since", default_since)
    max_body = knobs.count("max_body", max_body)
    max_wait = knobs.seconds("max_wait", max_wait, most=MOST_MAX_WAIT)
    max_waiters = knobs.count("max_waiters", max_waiters)
    max_streams = knobs.count("max_streams", max_streams)
    stream_seconds = knobs.seconds("stream_seconds", stream_seconds)
    if keys and not isinstance(auth, _Unset):
        raise ConfigError("give api_keys or auth, not both")
    if keys:
        checker: Auth | None = ApiKeyAuth(keys)
    elif isinstance(auth, _Unset):
        raise ConfigError(
            "no API keys: pass api_keys=[...], auth=<callable>, or auth=None"
        )
    else:
        checker = auth
    service = StatusService(
        store,
        auth=checker,
        host=Host(
            pid=os.getpid(),
            build_number=build_number or version,
            queue_id=queue_id,
            queue_length=queue_length,
        ),
        clock=time.time,
        timer=time.perf_counter,
        new_id=new_request_id,
        default_since=default_since,
        max_body=max_body,
        logger=logger,
        secret=signing_secret(secret, keys),
        max_wait=max_wait,
        max_waiters=max_waiters,
        max_streams=max_streams,
        stream_seconds=stream_seconds,
        terminal=terminal,
        open_operations=("metrics",) if metrics_auth == "none" else (),
        json_loads=json_parser(),
    )
    _services.add(service)
    return service


def service_from_settings(
    store: Store,
    settings: Settings,
    *,
    api_keys: Iterable[str] | None = None,
    auth: Auth | _Unset | None = UNSET,
) -> StatusService:
    """The service ``settings`` describe (``Settings.from_environ``: what
    ``jobstatus serve`` reads), over ``store``; ``api_keys`` in place of
    the settings' own (``serve`` passes the key it generated), or a host's
    ``auth`` where the settings hold no key. CORS and the dashboard are the
    adapter's (``create_app``), retention a ``Purger``'s."""
    return make_service(
        store,
        api_keys=settings.api_keys if api_keys is None else api_keys,
        auth=auth,
        build_number=settings.build_number,
        default_since=settings.default_since,
        max_body=settings.max_body,
        secret=settings.token_secret,
        max_wait=settings.max_wait,
        max_waiters=settings.max_waiters,
        max_streams=settings.max_streams,
        stream_seconds=settings.stream_seconds,
        terminal=settings.terminal,
        metrics_auth=settings.metrics_auth,
    )


def signing_secret(secret: str | None, api_keys: Iterable[str]) -> bytes:
    """The key that signs cursors and tokens: the one given, or one derived
    from the API keys (so instances configured alike agree without another
    setting). With neither — a host's own ``auth``, or none — a random key
    for this process: never a key anyone could know. Instances that share a
    store then need ``JOBSTATUS_TOKEN_SECRET`` to accept each other's."""
    if secret:
        return secret.encode()
    keys = sorted(api_keys)
    if not keys:
        return secrets.token_bytes(32)
    material = "\n".join(keys)
    return hashlib.sha256(b"jobstatus signing key\n" + material.encode()).digest()


#: Every service built here, so that a forked child can fix its own.
_services: weakref.WeakSet[StatusService] = weakref.WeakSet()


class OpenedBeforeFork(StoreWrapper):
    """Stands in, in a forked child, for a store that does not survive a fork.

    The file store's observer threads do not exist in the child and an
    SQLite connection must not cross a fork: every call fails with a reason
    that says how to fix it, instead of answering stale or corrupt data.
    """

    def _refuse(self, *args: object, **kwargs: object) -> Any:
        raise StoreError(OPENED_BEFORE_FORK)

    get = read = read_many = changed_since = window = page = _refuse
    counts = mark = put = swap = exists = _refuse

    def close(self) -> None:
        # The original's threads and connection belong to the parent.
        pass


def _after_fork_in_child() -> None:
    pid = os.getpid()
    for service in list(_services):
        # The envelope's pid is the process that answers, not the one that
        # built the service.
        service.host = dataclasses.replace(service.host, pid=pid)
        if not isinstance(service.store, ForkSafe | OpenedBeforeFork):
            # Refused on use, not here: a child forked for other work (a
            # multiprocessing pool) never serves and should stay quiet.
            service.replace_store(wrap(service.store, OpenedBeforeFork))


os.register_at_fork(after_in_child=_after_fork_in_child)
