"""Scoped read tokens (SPEC §12) on every store, through both adapters."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobstatus_core import Store

from .helpers import API_KEY, Clock, free_port, wait_for
from .test_http_contract import assert_error, envelope_of

NOW = Clock().now


def token_for(client: httpx.Client, **payload: Any) -> dict[str, Any]:
    body = envelope_of(client.post("/v1/tokens", json=payload))
    assert body["code"] == 200, body
    return body["response"]  # type: ignore[no-any-return]


def anonymous(client: httpx.Client) -> httpx.Client:
    return httpx.Client(base_url=client.base_url)


def test_a_token_reads_its_jobs_only(
    client: httpx.Client, store: Store, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for job_id, status in (("a", "done"), ("b", "running"), ("c", "failed")):
        store.put({"job_id": job_id, "job_status": status}, at=NOW)
    granted = token_for(client, job_ids=["a", "c"], ttl_seconds=60)
    assert granted["expires_at"] == clock.now + 60
    token = granted["token"]
    bearer = {"authorization": f"Bearer {token}"}
    with anonymous(client) as browser:
        assert envelope_of(browser.get("/v1/job/a", headers=bearer))["code"] == 200
        via_query = browser.get("/v1/job/c", params={"token": token})
        assert envelope_of(via_query)["response"]["job_status"] == "failed"
        assert_error(browser.get("/v1/job/b", headers=bearer), 403, "Forbidden")
        listed = envelope_of(
            browser.get("/v1/jobs", params={"counts": "true"}, headers=bearer)
        )["response"]
        assert [job["job_id"] for job in listed["jobs"]] == ["a", "c"]
        assert listed["counts"] == {"done": 1, "failed": 1}
        done = envelope_of(
            browser.get("/v1/jobs", params={"status": "done", "token": token})
        )["response"]
        assert [job["job_id"] for job in done["jobs"]] == ["a"]
        # Tokens read; they do not write, mint tokens or use the Toolkit routes.
        for refused in (
            browser.post("/v1/tokens", json={"all": True}, headers=bearer),
            browser.post("/v1/jobs/batch", json={"job_ids": ["a"]}, headers=bearer),
            browser.post(
                "/v1/toolkit/job/status", json={"job_id": "a"}, headers=bearer
            ),
        ):
            assert_error(refused, 401, "Unauthorized")
        clock.now += 61
        assert_error(browser.get("/v1/job/a", headers=bearer), 401, "Unauthorized")
    # The server's own loggers never write a token (the test's HTTP client,
    # logging its URLs at DEBUG, is not the server).
    served = [
        record
        for record in caplog.records
        if record.name.split(".")[0] in ("jobstatus", "uvicorn", "waitress")
    ]
    assert not any(token in record.getMessage() for record in served)


def test_an_all_token_reads_every_job(client: httpx.Client, store: Store) -> None:
    store.put({"job_id": "x", "job_status": "done"}, at=NOW)
    token = token_for(client, all=True)["token"]
    with anonymous(client) as browser:
        got = browser.get("/v1/job/x", headers={"authorization": f"Bearer {token}"})
        assert envelope_of(got)["code"] == 200


def test_an_empty_token_is_no_token(client: httpx.Client, store: Store) -> None:
    store.put({"job_id": "x", "job_status": "done"}, at=NOW)
    for empty in ({"params": {"token": ""}}, {"headers": {"authorization": "Bearer"}}):
        assert envelope_of(client.get("/v1/job/x", **empty))["code"] == 200
        with anonymous(client) as browser:
            assert_error(browser.get("/v1/job/x", **empty), 401, "Unauthorized")


def test_altered_and_foreign_tokens_are_401(client: httpx.Client) -> None:
    token = token_for(client, job_ids=["a"])["token"]
    prefix, payload, signature = token.split(".")
    forged = f"{prefix}.{payload[:-2]}AA.{signature}"
    with anonymous(client) as browser:
        for bad in (forged, token[:-3], "jst1.x.y", "nonsense", token + "x"):
            assert_error(
                browser.get("/v1/job/a", headers={"authorization": f"Bearer {bad}"}),
                401,
                "Unauthorized",
            )
        # An API key is never taken from a query string.
        assert_error(
            browser.get("/v1/job/a", params={"api_key": API_KEY, "x-api-key": API_KEY}),
            401,
            "Unauthorized",
        )


@pytest.mark.parametrize(
    "payload, message",
    [
        ({}, "Invalid payload: job_ids or all is required"),
        ({"all": "yes"}, "Invalid payload: all must be true or false"),
        ({"all": True, "job_ids": ["a"]}, "Invalid payload: give job_ids or all"),
        ({"job_ids": ["../x"]}, "Invalid payload: job_ids[0]"),
        ({"all": True, "ttl_seconds": 0}, "Invalid payload: ttl_seconds"),
        ({"all": True, "ttl_seconds": 86_401}, "Invalid payload: ttl_seconds"),
        ({"all": True, "ttl_seconds": "1"}, "Invalid payload: ttl_seconds"),
    ],
)
def test_bad_token_requests_are_400(
    client: httpx.Client, payload: dict[str, Any], message: str
) -> None:
    assert_error(client.post("/v1/tokens", json=payload), 400, message)


@pytest.mark.core
def test_access_log_lines_never_carry_a_token() -> None:
    from jobstatus_adapters.logconfig import RedactSecrets

    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        (
            "127.0.0.1:5",
            "GET",
            "/v1/jobs?status=done&token=jst1.abc.def&x=1&%74oken=jst1.ghi&API_KEY=k"
            "&y=1;token=jst1.jkl&token[]=jst1%2Emno&jst1.pqr",
            "1.1",
            200,
        ),
        None,
    )
    assert RedactSecrets().filter(record)
    line = record.getMessage()
    assert "jst1" not in line and "=k" not in line
    # A token under a name no server reads as token is blanked all the same.
    assert "?status=done&token=***&x=1&%74oken=***&API_KEY=***" in line
    assert "&y=***&token[]=***&*** HTTP/1.1" in line


HOST_APP = """
from jobstatus import WSGIApp, create_app, make_service, open_store

service = make_service(open_store("memory://"), api_keys=["k" * 16])
asgi = create_app(service)
wsgi = WSGIApp(service)
"""


@pytest.mark.core
@pytest.mark.parametrize(
    "server",
    [
        ["uvicorn", "--app-dir", "{dir}", "host:asgi", "--port", "{port}"],
        [
            "gunicorn",
            "--chdir",
            "{dir}",
            "-b",
            "127.0.0.1:{port}",
            "host:wsgi",
            "--access-logfile",
            "-",
            "--access-logformat",
            "%(r)s %(q)s %({x-api-key}i)s %(s)s",
        ],
    ],
    ids=["uvicorn", "gunicorn"],
)
def test_a_host_s_own_server_logs_no_token(tmp_path: Path, server: list[str]) -> None:
    """The host runs its server with its own logging; the adapters still
    keep tokens and keys out of its access log."""
    (tmp_path / "host.py").write_text(HOST_APP)
    port = free_port()
    command = [
        sys.executable,
        "-m",
        *(
            part.replace("{dir}", str(tmp_path)).replace("{port}", str(port))
            for part in server
        ),
    ]
    log = tmp_path / "log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"

            def up() -> bool:
                try:
                    return httpx.get(url + "/healthz").status_code == 200
                except httpx.TransportError:
                    return False

            wait_for(up, timeout=20)
            secret = "jst1.c2VjcmV0.dG9rZW4"
            answer = httpx.get(
                f"{url}/v1/jobs?limit=1&token={secret}",
                headers={"x-api-key": "k" * 16},
            )
            assert answer.status_code in (200, 401)
        finally:
            process.terminate()
            process.wait(timeout=20)
    written = log.read_text()
    assert "/v1/jobs?limit=1&token=***" in written, written
    assert secret not in written and "k" * 16 not in written
    # Every line written: the health probes without the key too (an atom
    # the request lacks is gunicorn's "-", not an error while formatting).
    assert "Logging error" not in written, written
    assert "/healthz" in written
