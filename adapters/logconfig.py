"""Log lines of ``jobstatus serve``: time, level, logger, message, on stderr.

One ``logging.config.dictConfig`` for the jobstatus loggers and uvicorn's, so
every line a server prints has the same shape, in every worker. Secrets in
query strings are blanked there, and in the access logs of the servers a
host runs the adapters under (``guard_access_logs``).
"""

from __future__ import annotations

import datetime
import json
import logging
import re
from typing import Any
from urllib.parse import unquote_plus

from jobstatus_core.tokens import PREFIX

LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


# A scoped token may travel as ?token= (an EventSource cannot set headers),
# and a client may put a key where it should not: neither reaches a log,
# however its name is spelled (%74oken is token once decoded).
_QUERY = re.compile(r"\?[^\s\"#]*")
SECRET_PARAMETERS = frozenset({"token", "api_key", "x-api-key"})


#: What every scoped token starts with (``tokens.PREFIX``): a value holding
#: one is blanked whatever its parameter's name (``?token[]=``, ``?x=1;token=``).
_TOKEN_START = f"{PREFIX}."


def _redact_query(match: re.Match[str]) -> str:
    parts = []
    for part in match.group(0)[1:].split("&"):
        name, eq, value = part.partition("=")
        if _TOKEN_START in unquote_plus(name):
            part = "***"  # a token where a name goes: ``?jst1…`` alone
        elif eq and (
            unquote_plus(name).lower() in SECRET_PARAMETERS
            or _TOKEN_START in unquote_plus(value)
        ):
            part = f"{name}=***"
        parts.append(part)
    return "?" + "&".join(parts)


#: gunicorn's access-log atoms that hold a secret whole: the request
#: headers that carry the key or a token (``%({x-api-key}i)s``).
SECRET_ATOMS = frozenset({"{x-api-key}i", "{authorization}i"})
#: The access loggers of the servers the adapters run under.
ACCESS_LOGGERS = ("uvicorn.access", "gunicorn.access", "hypercorn.access")


class RedactSecrets(logging.Filter):
    """Blanks query-string secrets in a record (access log lines carry paths):
    in its message and its arguments, a tuple (uvicorn's) or gunicorn's
    mapping of atoms, where ``q`` is the query without its ``?``."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(_blanked(arg) for arg in args)
        elif isinstance(args, dict):
            # Changed in place, keeping its type: gunicorn's atoms are a dict
            # of its own that answers "-" for an atom it lacks (a header the
            # request did not send), where a plain dict raises while the
            # line is formatted. The record's own: made for this log call.
            for name, value in list(args.items()):
                blank = "***" if name in SECRET_ATOMS else _atom(name, value)
                dict.__setitem__(args, name, blank)
        if isinstance(record.msg, str):
            record.msg = _QUERY.sub(_redact_query, record.msg)
        return True


def _blanked(value: object) -> object:
    return _QUERY.sub(_redact_query, value) if isinstance(value, str) else value


def _atom(name: str, value: object) -> object:
    """A gunicorn atom blanked: ``q`` is a query without its ``?``."""
    if name == "q" and isinstance(value, str):
        return _QUERY.sub(_redact_query, "?" + value)[1:]
    return _blanked(value)


def guard_access_logs() -> None:
    """Adds ``RedactSecrets`` to the access loggers of uvicorn, gunicorn and
    hypercorn, once each: a host serving the adapters logs its requests
    through its server, which would write a ``?token=`` as it came (SPEC
    §7: neither keys nor tokens are logged). A filter on the logger itself,
    as the servers log access records on it; a server configuring its
    logging later (``dictConfig``) keeps a logger's filters."""
    for name in ACCESS_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(kept, RedactSecrets) for kept in logger.filters):
            logger.addFilter(RedactSecrets())


class JsonLines(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger,
    message, and the exception's traceback when there is one. Newlines in a
    message stay inside its JSON string, so a line is always one record."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
        line: dict[str, Any] = {
            "time": moment.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def logging_config(
    level: str, *, access_log: bool, log_format: str = "text"
) -> dict[str, Any]:
    upper = level.upper()
    # The libraries' own loggers (psycopg's pool, redis-py, watchdog) reach
    # the root: through the same handler, so each of their lines has the
    # chosen shape too (with none, Python printed them bare, a message over
    # two lines as two). Their warnings at least: their debug is not ours.
    libraries = upper if upper in ("WARNING", "ERROR") else "WARNING"
    handler = {
        "class": "logging.StreamHandler",
        "formatter": log_format,
        "filters": ["secrets"],
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"text": {"format": FORMAT}, "json": {"()": JsonLines}},
        "filters": {"secrets": {"()": RedactSecrets}},
        "handlers": {"stderr": {**handler, "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": libraries},
        "loggers": {
            "jobstatus": {"handlers": ["stderr"], "level": upper, "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": upper, "propagate": False},
            "uvicorn.access": {
                "handlers": ["stderr"],
                "level": "INFO" if access_log else "CRITICAL",
                "propagate": False,
            },
        },
    }
