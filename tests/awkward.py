"""Values and exceptions that fail to show themselves: what the queue
integrations must record a task's end with all the same. Imported by the
workers' task modules (tests.celery_tasks, tests.dramatiq_tasks,
tests.huey_tasks) and by tests/test_queue_edges.py."""

from __future__ import annotations


class BadStr(Exception):
    """An exception whose ``str()`` raises."""

    def __str__(self) -> str:
        raise RuntimeError("no str for you")


class NoRepr:
    """A return value whose ``repr()`` raises (it pickles: Huey stores it)."""

    def __repr__(self) -> str:
        raise ValueError("no repr")
