"""Both adapters give the same answer to the same request, and mount cleanly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

from jobstatus_adapters.starlette import create_app, status_routes
from jobstatus_adapters.wsgi import WSGIApp
from jobstatus_backends import store_from_url
from jobstatus_core import JOB_STATUS_PATH, JOBS_STATUS_PATH, ConfigError

from .helpers import API_KEY, free_port, service_for, wait_for

pytestmark = pytest.mark.memory

# Fields that differ per request or per process, not per adapter.
VOLATILE = {"job_id", "run_time", "total_time"}

REQUESTS: list[tuple[str, str, dict[str, str], bytes]] = [
    ("POST", JOB_STATUS_PATH, {}, b'{"job_id": "a", "id": 3}'),
    ("POST", JOB_STATUS_PATH, {}, b'{"job_id": "nope"}'),
    ("POST", JOB_STATUS_PATH, {}, b'{"job_id": "../x"}'),
    ("POST", JOBS_STATUS_PATH, {}, b""),
    ("POST", JOBS_STATUS_PATH, {}, b'{"since_seconds": NaN}'),
    ("POST", JOBS_STATUS_PATH, {}, b"[1]"),
    ("POST", JOBS_STATUS_PATH, {}, b"{"),
    ("POST", JOBS_STATUS_PATH, {"x-api-key": "bad"}, b"{}"),
    ("POST", JOBS_STATUS_PATH, {"content-type": "text/plain"}, b"{}"),
    ("POST", JOBS_STATUS_PATH, {}, b"{" + b" " * 70_000 + b"}"),
    ("GET", JOBS_STATUS_PATH, {}, b""),
    ("DELETE", JOB_STATUS_PATH, {}, b""),
    ("POST", "/elsewhere", {}, b"{}"),
]


def answer(
    url: str, method: str, path: str, headers: dict[str, str], body: bytes
) -> tuple[int, dict[str, str], dict[str, Any]]:
    sent = {"x-api-key": API_KEY, "content-type": "application/json", **headers}
    response = httpx.request(method, url + path, headers=sent, content=body)
    kept = {
        k: response.headers[k]
        for k in ("content-type", "allow")
        if k in response.headers
    }
    envelope = {
        k: v for k, v in json.loads(response.content).items() if k not in VOLATILE
    }
    return response.status_code, kept, envelope


def test_same_request_same_answer(
    serve: Callable[[ASGIApp], str], serve_wsgi: Callable[[Any], str]
) -> None:
    store = store_from_url("memory://")
    store.put({"job_id": "a", "job_status": "done", "response": [1]}, at=4e9)
    service = service_for(store)
    asgi_url = serve(create_app(service))
    wsgi_url = serve_wsgi(WSGIApp(service))
    for method, path, headers, body in REQUESTS:
        asgi = answer(asgi_url, method, path, headers, body)
        wsgi = answer(wsgi_url, method, path, headers, body)
        assert asgi == wsgi, (method, path, body[:40])
        assert asgi[0] == asgi[2]["code"]


def test_prefix_is_the_same_on_both(
    serve: Callable[[ASGIApp], str], serve_wsgi: Callable[[Any], str]
) -> None:
    service = service_for(store_from_url("memory://"))
    for url in (
        serve(create_app(service, "/api/")),
        serve_wsgi(WSGIApp(service, "api")),
    ):
        inside = httpx.post(
            url + "/api" + JOBS_STATUS_PATH, headers={"x-api-key": API_KEY}
        )
        assert inside.status_code == 200
        assert inside.json()["endpoint"] == "/api" + JOBS_STATUS_PATH
        outside = httpx.post(url + JOBS_STATUS_PATH, headers={"x-api-key": API_KEY})
        assert outside.status_code == 404 and outside.json()["message"] == "Not found"


def test_routes_mount_next_to_a_host_route(serve: Callable[[ASGIApp], str]) -> None:
    service = service_for(store_from_url("memory://"))
    host = Starlette(
        routes=[
            Route("/own", lambda request: PlainTextResponse("own")),
            Mount("/jobs-api", routes=status_routes(service)),
        ]
    )
    url = serve(host)
    assert httpx.get(url + "/own").text == "own"
    response = httpx.post(
        url + "/jobs-api" + JOBS_STATUS_PATH, headers={"x-api-key": API_KEY}
    )
    assert response.json()["endpoint"] == "/jobs-api" + JOBS_STATUS_PATH


def test_the_whole_app_mounts_in_a_host_app(serve: Callable[[ASGIApp], str]) -> None:
    # A Mount keeps the whole path and names its own part in root_path: the
    # app routes by what lies below it, and answers with the whole path.
    service = service_for(store_from_url("memory://"))
    host = Starlette(routes=[Mount("/outer", app=create_app(service))])
    url = serve(host)
    response = httpx.post(
        url + "/outer" + JOBS_STATUS_PATH, headers={"x-api-key": API_KEY}
    )
    assert response.status_code == 200
    assert response.json()["endpoint"] == "/outer" + JOBS_STATUS_PATH
    wrong = httpx.get(url + "/outer" + JOBS_STATUS_PATH, headers={"x-api-key": API_KEY})
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    elsewhere = httpx.post(url + "/outer/v1/nothing", headers={"x-api-key": API_KEY})
    assert elsewhere.status_code == 404
    assert elsewhere.json()["message"] == "Not found"


@pytest.mark.parametrize("path", ["/a%0Ab", "/v1/jobs%0Ax", "/v1/job/a%0A"])
def test_a_path_with_a_line_end_is_404_in_the_envelope(
    serve_service: Callable[..., str], path: str
) -> None:
    url = serve_service(service_for(store_from_url("memory://")))
    response = httpx.get(url + path, headers={"x-api-key": API_KEY})
    assert response.status_code == 404
    assert response.json()["message"] == "Not found"


def test_wsgi_fallback_and_script_name(serve_wsgi: Callable[[Any], str]) -> None:
    def host(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("content-type", "text/plain")])
        return [b"host:" + environ["PATH_INFO"].encode()]

    service = service_for(store_from_url("memory://"))
    app = WSGIApp(service, prefix="/jobs-api", fallback=host)

    def mounted(environ: dict[str, Any], start_response: Any) -> Any:
        # What a dispatcher does when it mounts an app under /outer.
        environ["SCRIPT_NAME"] = "/outer"
        environ["PATH_INFO"] = environ["PATH_INFO"].removeprefix("/outer")
        return app(environ, start_response)

    url = serve_wsgi(mounted)
    assert httpx.get(url + "/outer/anything").text == "host:/anything"
    response = httpx.post(
        url + "/outer/jobs-api" + JOBS_STATUS_PATH, headers={"x-api-key": API_KEY}
    )
    assert response.status_code == 200
    assert response.json()["endpoint"] == "/outer/jobs-api" + JOBS_STATUS_PATH


def test_custom_auth_and_envelope_knobs(serve_service: Callable[..., str]) -> None:
    def tenant_auth(headers: Any) -> bool:
        return headers.get("authorization") == "Bearer tenant-7"

    service = service_for(
        store_from_url("memory://"),
        api_keys=(),
        auth=tenant_auth,
        queue_id="eu-1",
        queue_length=lambda: 42,
        build_number="build-99",
    )
    url = serve_service(service)
    ok = httpx.post(
        url + JOBS_STATUS_PATH, headers={"authorization": "Bearer tenant-7"}
    )
    assert ok.status_code == 200
    body = ok.json()
    assert (body["queue_id"], body["queue_length"], body["build_number"]) == (
        "eu-1",
        42,
        "build-99",
    )
    assert (
        httpx.post(url + JOBS_STATUS_PATH, headers={"x-api-key": API_KEY}).status_code
        == 401
    )


def test_bodies_are_read_with_orjson_as_json_reads_them(
    serve_service: Callable[..., str],
) -> None:
    """The service reads bodies with orjson (installed with the test
    extra) and leaves to json what orjson reads otherwise: an id past 64
    bits, which orjson makes a float, is json's integer, echoed as null."""
    import orjson

    store = store_from_url("memory://")
    store.put({"job_id": "a", "job_status": "done"})
    service = service_for(store)
    assert service.parse_body.keywords == {"fast": orjson.loads}  # type: ignore[attr-defined]
    url = serve_service(service)
    for id_text, echoed in [
        ("9007199254740993", "9007199254740993"),
        ("123456789012345678901234567890", "null"),
        ("-0.0", "-0.0"),
        ("NaN", "null"),
    ]:
        response = httpx.post(
            url + JOB_STATUS_PATH,
            headers={"x-api-key": API_KEY, "content-type": "application/json"},
            content=f'{{"job_id": "a", "id": {id_text}}}'.encode(),
        )
        assert response.status_code == 200, response.text
        assert f'"id":{echoed},' in response.text


def test_no_auth_must_be_explicit(serve_service: Callable[..., str]) -> None:
    store = store_from_url("memory://")
    with pytest.raises(ConfigError, match="auth=None"):
        service_for(store, api_keys=())
    url = serve_service(service_for(store, api_keys=(), auth=None))
    assert httpx.post(url + JOBS_STATUS_PATH).status_code == 200


@pytest.mark.parametrize(
    "knobs, message",
    [
        # One string iterated is its characters: "s3cret" would have
        # opened the API to the key "s".
        ({"api_keys": "s3cret-long-key"}, "api_keys: expected a list of texts"),
        ({"api_keys": None}, "no API keys"),  # os.environ.get of an unset one
        ({"api_keys": [b"s3cret"]}, "api_keys: expected texts"),
        ({"terminal": "done"}, "terminal: expected a list of texts"),
        ({"terminal": []}, "terminal: expected at least one status"),
        ({"max_wait": 0}, "max_wait: expected a number of seconds > 0"),
        ({"max_wait": float("nan")}, "max_wait: "),
        ({"max_wait": 10**9}, "max_wait: "),
        ({"max_body": -1}, "max_body: expected a whole number >= 1"),
        ({"max_body": 1.5}, "max_body: "),
        ({"max_waiters": 0}, "max_waiters: "),
        ({"max_streams": True}, "max_streams: "),
        ({"default_since": -1}, "default_since: expected a finite number >= 0"),
        ({"stream_seconds": float("inf")}, "stream_seconds: "),
        ({"stream_seconds": "10"}, "stream_seconds: expected a number of seconds"),
    ],
)
def test_impossible_knobs_fail_when_the_service_is_built(
    knobs: dict[str, Any], message: str
) -> None:
    store = store_from_url("memory://")
    with pytest.raises(ConfigError) as info:
        service_for(store, **knobs)
    assert message in str(info.value)
    assert "s3cret" not in str(info.value) and "\n" not in str(info.value)


def test_a_service_from_the_environments_settings(tmp_path: Any) -> None:
    """``service_from_settings``: the service `jobstatus serve` builds."""
    from jobstatus import Settings, service_from_settings

    store = store_from_url("memory://")
    environ = {"API_KEY": "env-key", "JOBSTATUS_MAX_WAIT": "5"}
    settings = Settings.from_environ(environ, cwd=str(tmp_path))
    service = service_from_settings(store, settings)
    assert service.max_wait == 5.0
    assert service.auth is not None and service.auth({"x-api-key": "env-key"})
    # No key in the environment: the host's own check, or none said so.
    keyless = Settings.from_environ({}, cwd=str(tmp_path))
    with pytest.raises(ConfigError, match="no API keys"):
        service_from_settings(store, keyless)
    assert service_from_settings(store, keyless, auth=None).auth is None
    store.close()


def test_impossible_adapter_knobs_fail_when_the_app_is_built() -> None:
    service = service_for(store_from_url("memory://"))
    for build in (
        lambda origins: create_app(service, cors_origins=origins),
        lambda origins: WSGIApp(service, cors_origins=origins),
    ):
        with pytest.raises(ConfigError, match="cors_origins: expected a list"):
            build("https://app.example.com")
        with pytest.raises(ConfigError, match="cors_origins: expected origins like"):
            build(["app.example.com"])
    with pytest.raises(ConfigError, match="max_waiters: "):
        WSGIApp(service, max_waiters=0)


def test_logger_gets_store_failures_without_the_key(
    serve_service: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from .test_http_contract import FailingStore

    logger = logging.getLogger("host.jobs")
    service = service_for(FailingStore(RuntimeError("disk on fire")), logger=logger)  # type: ignore[arg-type]
    url = serve_service(service)
    with caplog.at_level(logging.ERROR, logger="host.jobs"):
        response = httpx.post(url + JOBS_STATUS_PATH, headers={"x-api-key": API_KEY})
    assert response.status_code == 500
    assert any(
        r.name == "host.jobs" and "disk on fire" in str(r.exc_info)
        for r in caplog.records
    )
    assert API_KEY not in caplog.text


def test_wsgi_server_forks_workers_that_open_their_own_store() -> None:
    port = free_port()
    code = (
        "from jobstatus_adapters import wsgi_server\n"
        "from jobstatus_adapters.service import make_service\n"
        "from jobstatus_adapters.wsgi import WSGIApp\n"
        "from jobstatus_backends.memory import MemoryStore\n"
        "wsgi_server.run(MemoryStore, lambda store: WSGIApp(make_service(store,"
        f" api_keys=[{API_KEY!r}])), host='127.0.0.1', port={port}, workers=2)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}{JOBS_STATUS_PATH}"

    def answering() -> bool:
        assert parent.poll() is None, parent.communicate()
        try:
            return httpx.post(url, headers={"x-api-key": API_KEY}).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(answering, 30)
        pids = {
            httpx.post(url, headers={"x-api-key": API_KEY}).json()["pid"]
            for _ in range(20)
        }
    finally:
        parent.terminate()
        _, stderr = parent.communicate(timeout=30)
    assert parent.returncode == 0, stderr
    # Served by workers (each built its service, and store, after the fork)...
    assert pids and parent.pid not in pids
    # ...which the parent stopped and reaped before it exited.
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_request_ids_are_fresh_uuid4_strings() -> None:
    import uuid

    from jobstatus_adapters.service import new_request_id

    ids = [new_request_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for value in ids:
        parsed = uuid.UUID(value)
        assert str(parsed) == value  # lower-case, hyphenated, 36 characters
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


@pytest.mark.parametrize(
    "raw",
    ["", "limit=100", "status=done&status=failed,queued&limit=", "a=1&a=2&b&c=%20x"],
)
def test_queries_are_read_as_parse_qs_reads_them_and_shared_unchangeable(
    raw: str,
) -> None:
    from urllib.parse import parse_qs

    from jobstatus_adapters import routing

    query = routing.query_of(raw)
    assert {k: list(v) for k, v in query.items()} == parse_qs(
        raw, keep_blank_values=True
    )
    assert routing.query_of(raw) is query  # read once, then shared
    with pytest.raises(TypeError):
        query["limit"] = ("1",)  # type: ignore[index]


def test_the_table_of_queries_read_is_bounded() -> None:
    from jobstatus_adapters import routing

    for n in range(3 * routing.KEPT_QUERIES):
        assert routing.query_of(f"cursor={n}")["cursor"] == (str(n),)
    assert len(routing._QUERIES) <= routing.KEPT_QUERIES


@pytest.mark.parametrize(
    "raw",
    [
        "pad=" + "x" * 300,  # long: anyone may send one, before any key
        "&".join(f"p{n}=" for n in range(10)),  # many parameters
        "token=secret&limit=5",  # a token is not kept past its request
    ],
)
def test_queries_no_poll_sends_are_read_but_not_kept(raw: str) -> None:
    from urllib.parse import parse_qs

    from jobstatus_adapters import routing

    query = routing.query_of(raw)
    assert {k: list(v) for k, v in query.items()} == parse_qs(
        raw, keep_blank_values=True
    )
    assert raw not in routing._QUERIES
    assert routing.query_of(raw) is not query


def test_both_adapters_read_queries_through_the_table(
    serve: Callable[[ASGIApp], str], serve_wsgi: Callable[[Any], str]
) -> None:
    from jobstatus_adapters import routing

    for n, url in enumerate(
        (
            serve(create_app(service_for(store_from_url("memory://")))),
            serve_wsgi(WSGIApp(service_for(store_from_url("memory://")))),
        )
    ):
        raw = f"limit={n + 7}"
        routing._QUERIES.pop(raw, None)
        response = httpx.get(f"{url}/v1/jobs?{raw}", headers={"x-api-key": API_KEY})
        assert response.status_code == 200
        assert routing._QUERIES[raw] == {"limit": (str(n + 7),)}
