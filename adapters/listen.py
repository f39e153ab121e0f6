"""The address ``jobstatus serve`` listens on, checked before it says so."""

from __future__ import annotations

import errno
import socket

from jobstatus_core import ConfigError

#: The port range a server can listen on (0, "any free port", is refused:
#: nobody could find the server).
PORTS = range(1, 65536)


def port_number(text: str) -> int:
    """``--port``'s text as a port; raises ``ConfigError`` naming it."""
    if not text.strip().isdigit() or int(text) not in PORTS:
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
