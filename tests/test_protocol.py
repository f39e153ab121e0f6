"""The store protocol v2 on every store, through the public conformance kit."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jobstatus_backends import store_from_url
from jobstatus_backends.conformance import ExpiryConformance, StoreConformance
from jobstatus_core import Store

from .helpers import expiring


class TestEveryStore(StoreConformance):
    """Runs the kit with the ``store`` fixture of conftest.py: every store."""


class TestEveryStoreExpires(ExpiryConformance):
    """Retention's store side, on every store."""

    @pytest.fixture
    def store(self, store_url: str) -> Iterator[Store]:
        store = store_from_url(expiring(store_url))
        yield store
        store.close()
