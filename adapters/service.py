"""Build a ``StatusService`` with the real clock, ids and pid.

Both adapters take the service this returns, so their knobs are the same.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable

from jobstatus_core import ApiKeyAuth, Auth, ConfigError, Host, StatusService, Store
from jobstatus_core import __version__ as version
from jobstatus_core.config import DEFAULT_MAX_BODY, DEFAULT_SINCE_SECONDS


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset()


def new_request_id() -> str:
    return str(uuid.uuid4())


def make_service(
    store: Store,
    *,
    api_keys: Iterable[str] = (),
    auth: Auth | _Unset | None = UNSET,
    queue_id: int | str | None = None,
    queue_length: Callable[[], int] = lambda: 0,
    build_number: str | None = None,
    default_since: float = DEFAULT_SINCE_SECONDS,
    max_body: int = DEFAULT_MAX_BODY,
    logger: logging.Logger | None = None,
) -> StatusService:
    """The service behind both adapters.

    Give ``api_keys``, or your own ``auth`` callable, or ``auth=None`` to serve
    without authentication (say so explicitly: there is no silent default).
    """
    keys = tuple(api_keys)
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
    return StatusService(
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
    )
