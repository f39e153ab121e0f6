"""``jobstatus migrate``: every job copied, times kept, nothing dropped silently."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from jobstatus_adapters.cli import main
from jobstatus_backends import store_from_url
from jobstatus_backends.migrate import copy_jobs
from jobstatus_core import Enumerable, Store

from .helpers import store_url_for, wait_for

pytestmark = pytest.mark.sqlite  # and the file store, as source or target

PAIRS = [
    ("filesystem", "sqlite"),
    ("sqlite", "filesystem"),
    ("memory", "sqlite"),
    ("sqlite", "dbm"),
]


def fill(store: Store, n: int = 50) -> None:
    for i in range(n):
        store.put(
            {
                "job_id": f"j{i}",
                "job_status": "done" if i % 3 else "running",
                "i": i,
                "response": {"ü": [i]},
            },
            at=1_000.0 + i * 0.123456,
        )


def times(store: Store) -> dict[str, float]:
    assert isinstance(store, Enumerable)
    return dict(store.jobs())


@pytest.mark.parametrize("src_kind, dst_kind", PAIRS)
def test_copy_keeps_records_and_times(
    tmp_path: Path, src_kind: str, dst_kind: str
) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    src = store_from_url(store_url_for(src_kind, tmp_path / "src"))
    dst = store_from_url(store_url_for(dst_kind, tmp_path / "dst"))
    fill(src)
    report = copy_jobs(src, dst)
    assert (report.copied, report.skipped, report.failed) == (50, 0, [])
    for job_id, at in times(src).items():
        assert dst.get(job_id) == src.get(job_id)
        assert times(dst)[job_id] == pytest.approx(at, abs=1e-6)
    assert dict(dst.changed_since(1_003.0)) == dict(src.changed_since(1_003.0))
    again = copy_jobs(src, dst)
    assert (again.copied, again.skipped, again.failed) == (0, 50, [])
    src.put({"job_id": "j7", "job_status": "retried"}, at=2_000.0)
    third = copy_jobs(src, dst)
    assert (third.copied, third.skipped) == (1, 49)
    assert dst.get("j7") == {"job_id": "j7", "job_status": "retried"}
    src.close()
    dst.close()


def test_unreadable_jobs_are_reported_not_dropped(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "good.json").write_text('{"job_id": "good", "job_status": "done"}')
    (jobs / "half.json").write_text('{"job_id": "half", "job_')
    (jobs / "nostatus.json").write_text('{"job_id": "nostatus"}')
    (jobs / "renamed.json").write_text('{"job_id": "other", "job_status": "done"}')
    src = store_from_url(f"file://{tmp_path}?index=off")
    dst = store_from_url("memory://")
    report = copy_jobs(src, dst)
    assert report.copied == 1
    failed = dict(report.failed)
    assert set(failed) == {"half", "nostatus", "renamed"}
    assert "not a JSON object" in failed["half"]
    assert "job_status" in failed["nostatus"]
    assert "other" in failed["renamed"]
    src.close()


def test_cli_prints_a_summary_and_fails_on_failures(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    for i in range(20):
        path = tmp_path / "jobs" / f"t{i}.json"
        path.write_text(json.dumps({"job_id": f"t{i}", "job_status": "done"}))
        os.utime(path, (5_000.0 + i, 5_000.0 + i))
    db = tmp_path / "out.db"

    def migrate() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "jobstatus_adapters.cli",
                "migrate",
                f"file://{tmp_path}",
                f"sqlite://{db}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )

    first = migrate()
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "copied 20, skipped 0, failed 0"
    assert migrate().stdout.strip() == "copied 0, skipped 20, failed 0"
    (tmp_path / "jobs" / "bad.json").write_text("{")
    third = migrate()
    assert third.returncode == 1
    assert third.stdout.strip() == "copied 0, skipped 20, failed 1"
    assert "failed to copy bad" in third.stderr
    dst = store_from_url(f"sqlite://{db}")
    assert times(dst)["t3"] == 5_003.0
    dst.close()


def file_source(tmp_path: Path, n: int) -> Path:
    root = tmp_path / "src"
    (root / "jobs").mkdir(parents=True)
    for i in range(n):
        record = {"job_id": f"m{i}", "job_status": "done"}
        (root / "jobs" / f"m{i}.json").write_text(json.dumps(record))
    return root


def temp_files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.name.endswith(".tmp")]


def test_ctrl_c_leaves_no_temp_file_and_no_traceback(tmp_path: Path) -> None:
    src = file_source(tmp_path, 3000)
    dst = tmp_path / "dst"
    (dst / "jobs").mkdir(parents=True)
    urls = [f"file://{src}?index=off", f"file://{dst}?index=off"]
    process = subprocess.Popen(
        [sys.executable, "-m", "jobstatus_adapters.cli", "migrate", *urls],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: len(list((dst / "jobs").iterdir())) > 20, 30)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert err == "jobstatus: interrupted\n" and out == ""
    assert temp_files(dst) == []


@pytest.mark.parametrize("fault", ["interrupt", "disk-full"])
def test_a_write_stopped_halfway_leaves_no_temp_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fault: str,
) -> None:
    src = file_source(tmp_path, 30)
    dst = tmp_path / "dst"
    (dst / "jobs").mkdir(parents=True)
    writes = 0
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        # Injected fault: the tenth write stops after its temp file exists.
        nonlocal writes
        writes += 1
        if writes == 10:
            if fault == "interrupt":
                raise KeyboardInterrupt
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    code = main(["migrate", f"file://{src}?index=off", f"file://{dst}?index=off"])
    out, err = capsys.readouterr()
    assert temp_files(dst) == []
    assert len(list((dst / "jobs").iterdir())) == 9
    if fault == "interrupt":
        assert (code, err) == (130, "jobstatus: interrupted\n")
    else:
        assert code == 1 and out == ""
        assert err.count("\n") == 1 and "No space left on device" in err
        assert "9 copied before it; run again to resume" in err
