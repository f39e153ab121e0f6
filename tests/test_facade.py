"""``import jobstatus``: the public API in one place, and nothing else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jobstatus
from jobstatus_backends import store_from_url


def test_every_exported_name_is_there_and_public() -> None:
    assert jobstatus.__all__ == sorted(jobstatus.__all__)
    for name in jobstatus.__all__:
        assert hasattr(jobstatus, name), name
        assert not name.startswith("_") or name == "__version__", name
    public = {name for name in vars(jobstatus) if not name.startswith("_")}
    housekeeping = {"annotations", "TYPE_CHECKING"}
    # The client's names load on first use (they need the client extra).
    lazy = {"JobStatusClient", "AsyncJobStatusClient"}
    assert (public - housekeeping) | lazy == set(jobstatus.__all__) - {"__version__"}


def test_the_client_is_the_adapters_client() -> None:
    from jobstatus_adapters import client

    assert jobstatus.JobStatusClient is client.JobStatusClient
    assert jobstatus.AsyncJobStatusClient is client.AsyncJobStatusClient


def test_the_names_a_host_needs() -> None:
    assert jobstatus.open_store is store_from_url
    for name in (
        "open_store",
        "make_service",
        "status_routes",
        "create_app",
        "WSGIApp",
        "Settings",
        "ConfigError",
        "StoreError",
    ):
        assert name in jobstatus.__all__


def test_it_is_typed() -> None:
    assert (Path(jobstatus.__file__).parent / "py.typed").is_file()


def test_importing_it_loads_no_server_and_no_store_client() -> None:
    code = (
        "import sys, jobstatus\n"
        "print(sorted(m for m in ('uvicorn', 'gunicorn', 'redis', 'watchdog',"
        " 'sqlite_utils', 'httpx', 'httpx_sse') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
