"""Tasks of the edge cases tests/test_celery.py sends, added to the example
app its workers run (``--include tests.celery_tasks``)."""

from __future__ import annotations

from celery_app import app

from tests.awkward import BadStr, NoRepr


@app.task
def bad_str() -> None:
    raise BadStr()


@app.task
def no_repr() -> NoRepr:
    return NoRepr()


@app.task
def huge() -> int:
    return 10**5000  # past Python's 4,300 digits for an int as text
