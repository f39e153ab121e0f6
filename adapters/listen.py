"""The address ``jobstatus serve`` listens on, checked before it says so,
and the sockets its workers listen on (``run_workers``)."""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import sys
from collections.abc import Callable
from typing import Any

from jobstatus_core import ConfigError

logger = logging.getLogger("jobstatus.serve")

#: The port range a server can listen on (0, "any free port", is refused:
#: nobody could find the server).
PORTS = range(1, 65536)


def port_number(text: str) -> int:
    """``--port``'s text as a port; raises ``ConfigError`` naming it."""
    # ASCII digits alone: isdigit() and int() also take " 80" and full-width
    # digits.
    if not (text.isascii() and text.isdigit()) or int(text) not in PORTS:
        raise ConfigError(f"--port: expected a whole number 1-65535, got {text!r}")
    return int(text)


def check_address(host: str, port: int) -> None:
    """Bind ``host:port`` once and let go, so a bad host or a port in use
    stops the start with one line instead of a server's traceback."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else "not a name"
        raise ConfigError(f"--host: cannot resolve {host!r}: {reason}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        # As the servers do: a port in TIME_WAIT is free to use.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"--port: {port} is already in use on {host}"
                ) from None
            if exc.errno == errno.EACCES:
                raise ConfigError(
                    f"--port: not allowed to listen on {port} (below 1024 needs"
                    " privileges)"
                ) from None
            raise ConfigError(
                f"--host: cannot listen on {host!r}: {exc.strerror}"
            ) from None


def run_workers(factory: str, workers: int, **options: Any) -> None:
    """Serve the app ``factory`` (an import string) builds in each of
    ``workers`` processes, spawned and kept running by uvicorn's supervisor,
    each listening on a socket of its own (``worker_listener``) where the
    kernel spreads connections, else on one socket they share."""
    import uvicorn

    own = worker_listener(options["host"], options["port"])
    if own is None:
        uvicorn.run(factory, factory=True, workers=workers, **options)
        return
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config(factory, factory=True, workers=workers, **options)
    with own, contextlib.suppress(KeyboardInterrupt):  # as uvicorn.run
        Multiprocess(config, sockets=[own]).run()


def worker_listener(host: str, port: int) -> socket.socket | None:
    """What ``serve --workers N`` hands uvicorn's supervisor in place of the
    one socket its workers would share; None where the kernel would not
    spread connections over sockets of a port (not Linux).

    Workers sharing one socket race to accept, and the first to wake takes
    every connection waiting: a client or proxy that opens its connections
    at once can put them all on one worker, for as long as they stay open,
    while the others idle. Here each worker listens on a socket of its own,
    bound with ``SO_REUSEPORT``, and Linux hands each new connection to one
    of them by a hash of its addresses. The supervisor sends its sockets to
    each worker it spawns, restarts included, by pickling them; this one
    unpickles as such a socket of the worker's own.

    This one holds the port in this process, bound but not listening (it
    takes no connection), and without ``SO_REUSEADDR``: while every worker
    is down no other socket can take the port, short of one of this user's
    with ``SO_REUSEPORT``. Where that bind is refused (an earlier server's
    connections in TIME_WAIT, which only ``SO_REUSEADDR`` passes), None: the
    workers share one socket for this run."""
    if sys.platform != "linux" or not hasattr(socket, "SO_REUSEPORT"):
        return None
    # The family as uvicorn's own socket takes it ("localhost": 127.0.0.1).
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    holder = _OwnListeners(family, socket.SOCK_STREAM)
    try:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind((host, port))
    except OSError as exc:
        holder.close()
        logger.warning(
            "the workers share one listening socket: a socket of each refused (%s)",
            exc.strerror,
        )
        return None
    return holder


class _OwnListeners(socket.socket):
    def __reduce__(self) -> tuple[Callable[..., socket.socket], tuple[Any, ...]]:
        return (_worker_socket, (self.family, self.getsockname()))


def _worker_socket(family: int, address: Any) -> socket.socket:
    """Unpickled in a worker: a socket of its own, bound to ``address`` with
    ``SO_REUSEPORT``. A bind refused ends the worker as uvicorn's own
    start-up failures do, which its supervisor does not restart."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # As the servers do: a port in TIME_WAIT is free to use.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError as exc:
        from uvicorn.config import STARTUP_FAILURE

        sock.close()
        logger.error("a worker cannot listen on %s: %s", address, exc.strerror)
        sys.exit(STARTUP_FAILURE)
    return sock
