"""The hosts in examples/, each run by a real server, next to their own routes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from jobstatus_backends.sqlite import SQLiteStore

from .helpers import free_port, wait_for

pytestmark = pytest.mark.hosts

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
KEY = "host-key"

HOSTS = {
    "flask": ["-m", "gunicorn", "--chdir", str(EXAMPLES), "flask_app:app"],
    "django": ["-m", "gunicorn", "--chdir", str(EXAMPLES), "django_app:application"],
    "starlette": ["-m", "uvicorn", "--app-dir", str(EXAMPLES), "starlette_app:app"],
    "fastapi": ["-m", "uvicorn", "--app-dir", str(EXAMPLES), "fastapi_app:app"],
}


@pytest.fixture(params=sorted(HOSTS))
def host(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    name = request.param
    db = tmp_path / "jobs.db"
    store = SQLiteStore(db)
    store.put({"job_id": "render-1", "job_status": "done", "response": {"url": "u"}})
    store.close()
    port = free_port()
    bind = (
        ["--bind", f"127.0.0.1:{port}"]
        if "gunicorn" in HOSTS[name]
        else ["--host", "127.0.0.1", "--port", str(port)]
    )
    env = {**os.environ, "API_KEY": KEY, "JOBSTATUS_STORE": f"sqlite://{db}"}
    process = subprocess.Popen(
        [sys.executable, *HOSTS[name], *bind],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"

    def answering() -> bool:
        assert process.poll() is None, process.communicate()[1].decode()
        try:
            httpx.get(url + "/hello", timeout=1)
        except httpx.TransportError:
            return False
        return True

    wait_for(answering, 30)
    yield name, url
    process.terminate()
    _, err = process.communicate(timeout=30)
    assert b"Traceback" not in err, err.decode()


def test_host_route_and_status_endpoints_side_by_side(host: tuple[str, str]) -> None:
    name, url = host
    assert httpx.get(url + "/hello").json() == {"hello": f"from {name}"}
    headers = {"x-api-key": KEY, "content-type": "application/json"}
    one = httpx.post(
        url + "/jobs-api/v1/toolkit/job/status",
        json={"job_id": "render-1"},
        headers=headers,
    )
    assert one.status_code == 200
    body = one.json()
    assert body["response"]["response"] == {"url": "u"}
    assert body["endpoint"] == "/jobs-api/v1/toolkit/job/status"
    many = httpx.post(url + "/jobs-api/v1/toolkit/jobs/status", headers=headers)
    assert many.json()["response"] == {"render-1": "done"}
    refused = httpx.post(
        url + "/jobs-api/v1/toolkit/jobs/status",
        headers={"x-api-key": "wrong", "content-type": "application/json"},
    )
    assert refused.status_code == 401
    assert refused.json()["message"] == "Unauthorized"
    wrong_method = httpx.get(url + "/jobs-api/v1/toolkit/job/status", headers=headers)
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "POST"
    # Outside the prefix, the endpoints are not there: the host answers.
    assert (
        httpx.post(url + "/v1/toolkit/job/status", headers=headers).status_code == 404
    )


@pytest.mark.parametrize("host", ["starlette"], indirect=True)
def test_cross_origin_preflight(host: tuple[str, str]) -> None:
    _, url = host
    answer = httpx.options(
        url + "/jobs-api/v1/job/render-1",
        headers={
            "origin": "https://app.example.com",
            "access-control-request-method": "GET",
            "access-control-request-headers": "authorization, if-none-match",
        },
    )
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "authorization" in answer.headers["access-control-allow-headers"]
    # What a browser's script may read of an answer: the ETag to send back.
    polled = httpx.get(
        url + "/jobs-api/v1/job/render-1",
        headers={"origin": "https://app.example.com", "x-api-key": KEY},
    )
    assert polled.status_code == 200
    assert "etag" in polled.headers["access-control-expose-headers"]


def test_host_records_jobs_through_the_recorder(host: tuple[str, str]) -> None:
    name, url = host
    assert httpx.post(url + f"/render/from-{name}").status_code == 202
    answer = httpx.get(
        url + f"/jobs-api/v1/job/from-{name}", headers={"x-api-key": KEY}
    ).json()
    record = answer["response"]
    assert record["job_status"] == "done" and record["task"] == "render"
    assert record["response"] == {"file_url": f"https://example.com/from-{name}.mp4"}
    assert record["created_at"] <= record["started_at"] <= record["finished_at"]
