"""Operating endpoints over real servers: the OpenAPI document, health,
readiness, metrics, CORS, and JSON log lines (SPEC §15)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from jobstatus_adapters.starlette import create_app
from jobstatus_adapters.wsgi import WSGIApp
from jobstatus_backends import store_from_url
from jobstatus_core import StoreUnavailable
from jobstatus_core.contract import OPERATIONS

from .helpers import (
    API_KEY,
    ServeProcess,
    clean_env,
    in_progress,
    service_for,
    wait_for,
)

ROOT = Path(__file__).resolve().parent.parent
ORIGIN = "https://app.example.com"
METHODS = ("POST", "PUT", "PATCH", "DELETE")


@pytest.fixture
def adapter(
    request: pytest.FixtureRequest,
    serve: Callable[[Any], str],
    serve_wsgi: Callable[[Any], str],
) -> Callable[..., str]:
    """Serve a service through ``request.param``'s adapter, with options."""

    def start(service: Any, **options: Any) -> str:
        if request.param == "asgi":
            return serve(create_app(service, **options))
        return serve_wsgi(WSGIApp(service, **options))

    return start


both = pytest.mark.parametrize("adapter", ["asgi", "wsgi"], indirect=True)


@both
def test_openapi_document_is_valid_and_lists_every_operation(
    adapter: Callable[..., str],
) -> None:
    store = store_from_url("memory://")
    url = adapter(service_for(store))
    answer = httpx.get(url + "/v1/openapi.json")  # no key needed
    assert answer.status_code == 200
    document = answer.json()
    validate(document)
    listed = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
    }
    assert listed == {(op.method, op.path) for op in OPERATIONS}
    job = document["paths"]["/v1/job/{job_id}"]["get"]
    assert {p["name"] for p in job["parameters"]} >= {"job_id", "wait", "until"}
    assert job["security"] == [{"apiKey": []}, {"bearerToken": []}, {"queryToken": []}]
    wait = next(p for p in job["parameters"] if p["name"] == "wait")
    assert wait["schema"]["maximum"] == 60.0  # the service's max_wait
    assert document["paths"]["/healthz"]["get"]["security"] == []
    # What a generated client reads: the version headers, and every field a
    # schema requires declared among its properties (job_status above all).
    for code in ("200", "304"):
        assert set(job["responses"][code]["headers"]) == {"etag", "last-modified"}
    undeclared = [
        (name, sorted(set(schema["required"]) - set(schema.get("properties", {}))))
        for name, schema in _schemas(document)
        if set(schema.get("required", ())) - set(schema.get("properties", {}))
        and schema.get("type") == "object"
    ]
    assert undeclared == []
    store.close()


def _schemas(value: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every object schema inside ``value``, with where it is."""
    if isinstance(value, dict):
        if "required" in value and isinstance(value["required"], list):
            yield where, value
        for key, item in value.items():
            yield from _schemas(item, f"{where}/{key}")
    elif isinstance(value, list):
        for n, item in enumerate(value):
            yield from _schemas(item, f"{where}/{n}")


@both
@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_operating_paths_answer_get_only_and_ignore_bodies(
    adapter: Callable[..., str], path: str
) -> None:
    store = store_from_url("memory://")
    url = adapter(service_for(store, metrics_auth="none"))
    with httpx.Client(base_url=url) as http:
        got = http.request("GET", path + "?x=%00&since_seconds=-1", content=b"{nope")
        assert got.status_code == 200
        for method in METHODS:
            refused = http.request(method, path, content=b'{"a": 1}')
            assert refused.status_code == 405
            assert refused.headers["allow"] == "GET, HEAD"
            assert refused.json()["message"].startswith("Method not allowed")
        # A load balancer's HEAD check: GET's head, no body, and the kept
        # connection's next answer read whole.
        head = http.head(path)
        assert head.status_code == 200 and head.content == b""
        whole = http.get(path)
        assert head.headers["content-type"] == whole.headers["content-type"]
        if path != "/metrics":  # the counts move between the two
            # but for the envelope's run and total times (a few digits each)
            length = int(head.headers["content-length"])
            assert abs(length - len(whole.content)) <= 10
    store.close()


@both
def test_health_and_ready_need_no_key_and_hold_no_job_data(
    adapter: Callable[..., str],
) -> None:
    store = store_from_url("memory://")
    store.put({"job_id": "secret-job", "job_status": "done"})
    url = adapter(service_for(store))
    for path, status in (("/healthz", "serving"), ("/readyz", "ready")):
        answer = httpx.get(url + path)
        assert answer.status_code == 200
        assert answer.json()["response"] == {"status": status}
        assert "secret-job" not in answer.text
    store.close()


@both
def test_readyz_is_503_while_the_store_does_not_answer(
    adapter: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = store_from_url("memory://")
    url = adapter(service_for(store))

    def down() -> None:
        raise StoreUnavailable("connection refused")

    monkeypatch.setattr(store, "mark", down)  # fault injection
    monkeypatch.setattr(store, "counts", lambda *given: down())
    answer = httpx.get(url + "/readyz")
    assert answer.status_code == 503
    assert answer.json()["message"] == "Job store unavailable"
    assert httpx.get(url + "/healthz").status_code == 200
    metrics = httpx.get(url + "/metrics", headers={"x-api-key": API_KEY}).text
    assert 'jobstatus_store_errors_total{kind="unavailable"} 1.0' in metrics
    # The scrape's own read of the counts failed too, and says so.
    assert "\njobstatus_store_up 0.0\n" in metrics
    assert "\njobstatus_jobs{" not in metrics
    store.close()


@both
def test_metrics_need_the_key_unless_opened_and_count_requests(
    adapter: Callable[..., str],
) -> None:
    store = store_from_url("memory://")
    store.put({"job_id": "a", "job_status": "done"})
    store.put({"job_id": "b", "job_status": "running"})
    url = adapter(service_for(store))
    assert httpx.get(url + "/metrics").status_code == 401
    assert (
        httpx.get(url + "/metrics", headers={"x-api-key": "wrong"}).status_code == 401
    )
    httpx.get(url + "/v1/job/a", headers={"x-api-key": API_KEY})
    httpx.get(url + "/v1/job/nope", headers={"x-api-key": API_KEY})
    answer = httpx.get(url + "/metrics", headers={"x-api-key": API_KEY})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    text = answer.text
    assert 'jobstatus_requests_total{code="200",operation="get_job"} 1.0' in text
    assert 'jobstatus_requests_total{code="404",operation="get_job"} 1.0' in text
    assert 'jobstatus_requests_total{code="401",operation="metrics"} 2.0' in text
    assert 'jobstatus_jobs{status="done"} 1.0' in text
    assert 'jobstatus_jobs{status="running"} 1.0' in text
    assert "\njobstatus_store_up 1.0\n" in text
    assert "jobstatus_request_duration_seconds_bucket" in text
    assert "secret" not in text and API_KEY not in text
    store.close()
    opened = store_from_url("memory://")
    url = adapter(service_for(opened, metrics_auth="none"))
    assert httpx.get(url + "/metrics").status_code == 200
    opened.close()


@both
def test_in_progress_counts_the_open_waits_not_the_quick_answers(
    adapter: Callable[..., str],
) -> None:
    store = store_from_url("memory://")
    store.put({"job_id": "a", "job_status": "running"})
    url = adapter(service_for(store))
    key = {"x-api-key": API_KEY}
    assert httpx.get(url + "/v1/job/a", headers=key).status_code == 200
    # Answered at once: never in progress, nor is the scrape itself.
    assert in_progress(url + "/metrics", "get_job") is None
    assert in_progress(url + "/metrics", "metrics") is None
    answers: list[httpx.Response] = []
    waiter = threading.Thread(
        target=lambda: answers.append(
            httpx.get(
                url + "/v1/job/a",
                params={"wait": 10},
                headers=key,
                timeout=15,
            )
        )
    )
    waiter.start()
    try:
        wait_for(lambda: in_progress(url + "/metrics", "get_job") == 1.0, timeout=5)
    finally:
        store.put({"job_id": "a", "job_status": "done"})
        waiter.join(15)
    assert answers[0].json()["response"]["job_status"] == "done"
    wait_for(lambda: in_progress(url + "/metrics", "get_job") == 0.0, timeout=5)
    store.close()


def test_in_progress_counts_the_open_streams(serve: Callable[[Any], str]) -> None:
    store = store_from_url("memory://")
    url = serve(create_app(service_for(store)))
    with httpx.stream(
        "GET", url + "/v1/jobs/events", headers={"x-api-key": API_KEY}, timeout=15
    ) as events:
        assert events.status_code == 200
        wait_for(lambda: in_progress(url + "/metrics", "jobs_events") == 1.0, timeout=5)
    wait_for(lambda: in_progress(url + "/metrics", "jobs_events") == 0.0, timeout=5)
    store.close()


@both
@pytest.mark.filesystem
def test_metrics_report_the_file_index_size(
    adapter: Callable[..., str], tmp_path: Any
) -> None:
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "t1.json").write_text('{"job_id": "t1", "job_status": "done"}')
    store = store_from_url(f"file://{tmp_path}")
    store.put({"job_id": "t2", "job_status": "running"})
    url = adapter(service_for(store))
    text = httpx.get(url + "/metrics", headers={"x-api-key": API_KEY}).text
    assert "jobstatus_index_jobs 2.0" in text
    store.close()
    memory = store_from_url("memory://")
    url = adapter(service_for(memory))
    assert (
        "jobstatus_index_jobs"
        not in httpx.get(url + "/metrics", headers={"x-api-key": API_KEY}).text
    )
    memory.close()


@both
def test_cors_answers_listed_origins_only(adapter: Callable[..., str]) -> None:
    store = store_from_url("memory://")
    store.put({"job_id": "a", "job_status": "done"})
    url = adapter(service_for(store), cors_origins=(ORIGIN,))
    preflight = {
        "origin": ORIGIN,
        "access-control-request-method": "GET",
        "access-control-request-headers": "x-api-key, if-none-match, last-event-id",
    }
    with httpx.Client(base_url=url) as http:
        ok = http.options("/v1/job/a", headers=preflight)
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == ORIGIN
        allowed = ok.headers["access-control-allow-headers"].lower()
        for name in ("authorization", "content-type", "if-none-match", "last-event-id"):
            assert name in allowed
        other = http.options(
            "/v1/job/a", headers={**preflight, "origin": "https://evil.example"}
        )
        assert other.status_code == 400
        assert "access-control-allow-origin" not in other.headers
        bad_method = http.options(
            "/v1/job/a",
            headers={**preflight, "access-control-request-method": "DELETE"},
        )
        assert bad_method.status_code == 400
        read = http.get("/v1/job/a", headers={"origin": ORIGIN, "x-api-key": API_KEY})
        assert read.headers["access-control-allow-origin"] == ORIGIN
        assert "etag" in read.headers["access-control-expose-headers"]
        stranger = http.get(
            "/v1/job/a",
            headers={"origin": "https://evil.example", "x-api-key": API_KEY},
        )
        assert stranger.status_code == 200
        assert not [name for name in stranger.headers if name.startswith("access-")]
    store.close()


@both
def test_cors_is_off_by_default(adapter: Callable[..., str]) -> None:
    store = store_from_url("memory://")
    url = adapter(service_for(store))
    answer = httpx.options(
        url + "/v1/jobs",
        headers={"origin": ORIGIN, "access-control-request-method": "GET"},
    )
    assert answer.status_code == 405
    assert "access-control-allow-origin" not in answer.headers
    store.close()


@pytest.mark.sqlite
def test_a_request_counted_by_one_worker_appears_in_every_scrape(
    tmp_path: Path,
) -> None:
    env = clean_env(API_KEY=API_KEY, JOBSTATUS_STORE=f"sqlite://{tmp_path}/jobs.db")
    server = ServeProcess(tmp_path, env, "--workers", "2")
    try:
        httpx.get(server.url + "/v1/job/counted", headers={"x-api-key": API_KEY})
        line = 'jobstatus_requests_total{code="404",operation="get_job"} 1.0'
        pids = set()
        for _ in range(12):  # a new connection each: both workers answer
            scrape = httpx.get(server.url + "/metrics", headers={"x-api-key": API_KEY})
            assert line in scrape.text
            pids.add(httpx.get(server.url + "/healthz").json()["pid"])
    finally:
        server.stop()
    assert len(pids) >= 1


@pytest.mark.sqlite
def test_serve_logs_json_lines(tmp_path: Path) -> None:
    env = clean_env(API_KEY=API_KEY, JOBSTATUS_STORE=f"sqlite://{tmp_path}/jobs.db")
    server = ServeProcess(tmp_path, env, "--log-format", "json", "--access-log")
    httpx.get(server.url + "/healthz?token=hidden-token")
    _, stderr = server.stop()
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    assert lines
    for line in lines:
        assert set(line) >= {"time", "level", "logger", "message"}
    assert any(line["logger"] == "uvicorn.access" for line in lines)
    assert "hidden-token" not in stderr


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_a_library_s_log_lines_take_the_chosen_format(log_format: str) -> None:
    """psycopg's pool logs a connection it discards, over two lines: bare,
    without time or level, and two lines of which neither was JSON."""
    import subprocess
    import sys

    script = (
        "import logging, logging.config\n"
        "from jobstatus_adapters.logconfig import logging_config\n"
        "logging.config.dictConfig(logging_config("
        f"'info', access_log=False, log_format={log_format!r}))\n"
        "logging.getLogger('psycopg.pool').warning('error connecting\\n\\tIs it up?')\n"
        "logging.getLogger('psycopg.pool').info('not shown: not a warning')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    if log_format == "json":
        (line,) = done.stderr.splitlines()
        record = json.loads(line)
        assert record["level"] == "WARNING" and record["logger"] == "psycopg.pool"
        assert record["message"] == "error connecting\n\tIs it up?"
    else:
        first, second = done.stderr.splitlines()
        assert first.endswith(" WARNING psycopg.pool: error connecting")
        assert second == "\tIs it up?"


@pytest.mark.parametrize(
    ("name", "value"),
    [("JOBSTATUS_CORS_ORIGINS", "app.example.com"), ("JOBSTATUS_METRICS_AUTH", "open")],
)
def test_bad_operating_settings_stop_the_start(
    tmp_path: Path, name: str, value: str
) -> None:
    import subprocess
    import sys

    env = clean_env(API_KEY=API_KEY, **{name: value})
    done = subprocess.run(
        [sys.executable, "-m", "jobstatus_adapters.cli", "serve"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert name in done.stderr


def test_fastapi_merge_snippet_runs(serve: Callable[[Any], str]) -> None:
    text = (ROOT / "docs" / "embedding.md").read_text()
    (snippet,) = re.findall(r"```py\n(.*?)```", text, re.S)
    namespace: dict[str, Any] = {}
    exec(snippet, namespace)
    url = serve(namespace["app"])
    document = httpx.get(url + "/openapi.json").json()
    validate(document)
    assert "/jobs-api/v1/job/{job_id}" in document["paths"]
    assert "/hello" in document["paths"]
    namespace["store"].close()
