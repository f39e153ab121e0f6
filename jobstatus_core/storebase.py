"""A base class for stores: the protocol's derivable calls, derived once."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .rows import Row, Window
from .types import Record


class StoreBase:
    """Derives ``get``, ``read_many`` and ``changed_since`` from ``read`` and
    ``window``. Optional: a store may implement the whole protocol itself, and
    overrides ``read_many`` when it can read many jobs in one round trip."""

    def read(self, job_id: str) -> Row | None:
        raise NotImplementedError

    def window(self, cutoff: float) -> Window:
        raise NotImplementedError

    def get(self, job_id: str) -> Record | None:
        row = self.read(job_id)
        return None if row is None else row.record

    def read_many(self, job_ids: Sequence[str]) -> dict[str, Row]:
        rows = {}
        for job_id in job_ids:
            row = self.read(job_id)
            if row is not None:
                rows[job_id] = row
        return rows

    def changed_since(self, cutoff: float) -> list[tuple[str, Any]]:
        listing: dict[str, Any] = json.loads(
            "{" + ",".join(self.window(cutoff).members) + "}"
        )
        return list(listing.items())


class VersionedStoreBase(StoreBase):
    """``StoreBase`` for a store that declares ``Versioned``: ``swap`` is
    derived from ``swapped``, which the store implements."""

    def swapped(
        self,
        record: Mapping[str, Any],
        *,
        expected: str | None,
        at: float | None = None,
    ) -> str | None:
        raise NotImplementedError

    def swap(
        self,
        record: Mapping[str, Any],
        *,
        expected: str | None,
        at: float | None = None,
    ) -> bool:
        return self.swapped(record, expected=expected, at=at) is not None


def parsed_version(version: str) -> tuple[str, int] | None:
    """``(epoch, position)`` of a version written ``<epoch>-<position in
    hex>`` (the SQL stores' and memory's), else None: a version no such store
    gave matches no job."""
    epoch, dash, position = version.rpartition("-")
    if not dash:
        return None
    try:
        return epoch, int(position, 16)
    except ValueError:
        return None
