"""Log lines of ``jobstatus serve``: time, level, logger, message, on stderr.

One ``logging.config.dictConfig`` for the jobstatus loggers and uvicorn's, so
every line a server prints has the same shape, in every worker.
"""

from __future__ import annotations

from typing import Any

LEVELS = ("debug", "info", "warning", "error")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def logging_config(level: str, *, access_log: bool) -> dict[str, Any]:
    upper = level.upper()
    handler = {"class": "logging.StreamHandler", "formatter": "plain"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": FORMAT}},
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
