"""The store protocol v2 on every store, through the public conformance kit."""

from __future__ import annotations

from jobstatus_backends.conformance import StoreConformance


class TestEveryStore(StoreConformance):
    """Runs the kit with the ``store`` fixture of conftest.py: every store."""
