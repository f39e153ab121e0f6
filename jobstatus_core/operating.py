"""Health, readiness and metrics (SPEC §15): answers for the people and
machines that run the service, with no job data in them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import WouldBlock
from .problems import ApiError, route_not_found, store_unavailable
from .requests import Request

if TYPE_CHECKING:
    from .service import Reply, StatusService


def healthz(service: StatusService, request: Request) -> Reply:
    """200 while the process serves: it does not touch the store."""
    return service.success(request, {"status": "serving"})


def readyz(service: StatusService, request: Request) -> Reply:
    """200 when the store answers ``mark()`` (within its own timeout), else
    503: a load balancer stops sending requests that could only fail."""
    try:
        service.store.mark()
    except WouldBlock:
        raise  # tried again on a thread: not a failure
    except Exception as exc:
        service.note_store_error(exc)
        return service.fail(request, store_unavailable())
    return service.success(request, {"status": "ready"})


def metrics(service: StatusService, request: Request) -> Reply:
    """Prometheus text, from the exposition an adapter installed."""
    from .service import Reply

    if service.exposition is None:
        # Routes mounted without an app of ours (``status_routes``) count
        # nothing: say so rather than answer empty metrics.
        return service.fail(request, route_not_found())
    try:
        media_type, body = service.exposition()
    except ApiError as err:
        return service.fail(request, err)
    return Reply(200, (("content-type", media_type),), body)
