"""Log lines of ``jobstatus serve``: time, level, logger, message, on stderr.

One ``logging.config.dictConfig`` for the jobstatus loggers and uvicorn's, so
every line a server prints has the same shape, in every worker.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import unquote_plus

LEVELS = ("debug", "info", "warning", "error")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


# A scoped token may travel as ?token= (an EventSource cannot set headers),
# and a client may put a key where it should not: neither reaches a log,
# however its name is spelled (%74oken is token once decoded).
_QUERY = re.compile(r"\?[^\s\"#]*")
SECRET_PARAMETERS = frozenset({"token", "api_key", "x-api-key"})


def _redact_query(match: re.Match[str]) -> str:
    parts = []
    for part in match.group(0)[1:].split("&"):
        name, eq, _ = part.partition("=")
        if eq and unquote_plus(name).lower() in SECRET_PARAMETERS:
            part = f"{name}=***"
        parts.append(part)
    return "?" + "&".join(parts)


class RedactSecrets(logging.Filter):
    """Blanks query-string secrets in a record (access log lines carry paths)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _QUERY.sub(_redact_query, arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        if isinstance(record.msg, str):
            record.msg = _QUERY.sub(_redact_query, record.msg)
        return True


def logging_config(level: str, *, access_log: bool) -> dict[str, Any]:
    upper = level.upper()
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "plain",
        "filters": ["secrets"],
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": FORMAT}},
        "filters": {"secrets": {"()": RedactSecrets}},
        "handlers": {"stderr": {**handler, "stream": "ext://sys.stderr"}},
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
