"""The example dbm store's own promises: its data's life across reopening."""

from __future__ import annotations

from pathlib import Path

import pytest

from .plugin_store import DbmStore

pytestmark = pytest.mark.plugin


def test_reopened_file_keeps_its_epoch_and_a_new_file_gets_another(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "jobs")
    store = DbmStore(path)
    store.put({"job_id": "a", "job_status": "done"}, at=1.0)
    mark, row = store.mark(), store.read("a")
    store.close()

    again = DbmStore(path)
    assert again.mark() == mark and again.read("a") == row
    again.close()

    for made in tmp_path.glob("jobs.*"):
        made.unlink()
    fresh = DbmStore(path)
    fresh.put({"job_id": "a", "job_status": "done"}, at=1.0)
    renewed = fresh.read("a")
    assert renewed is not None and row is not None
    # The same position in new data: a cursor or an ETag of the old file must
    # not be taken for one of this file.
    assert renewed.position == row.position and fresh.mark().head == mark.head
    assert fresh.mark().epoch != mark.epoch and renewed.version != row.version
    fresh.close()
