"""The dashboard served below a prefix, on real uvicorn servers: mounted in
a Starlette or FastAPI host, and behind ``uvicorn --root-path``. Its redirect
and the API base it hands the page must lead back under the prefix, as the
browser resolves them (tests/test_dashboard.py signs in through one)."""

from __future__ import annotations

import html
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.routing import Mount

from jobstatus_adapters.dashboard import dashboard_routes
from jobstatus_adapters.service import make_service
from jobstatus_adapters.starlette import create_app, status_routes
from jobstatus_backends import store_from_url
from jobstatus_core import StatusService

from .helpers import clean_env, free_port, wait_for

KEY = "dashboard-key-0123456789"


def starlette_host(service: StatusService) -> Any:
    return Starlette(routes=[Mount("/outer", app=create_app(service))])


def fastapi_host(service: StatusService) -> Any:
    host = FastAPI()
    host.mount("/js", create_app(service))
    return host


def routes_host(service: StatusService) -> Any:
    # The host's own routes, under a mount of their own: a page two
    # segments deep, the API beside it under its own prefix.
    routes = [
        *status_routes(service, "/jobs-api"),
        *dashboard_routes("/jobs-api", path="/ops/jobs"),
    ]
    return Starlette(routes=[Mount("/host", routes=routes)])


@pytest.mark.parametrize(
    ("host", "page", "api_base", "api"),
    [
        (starlette_host, "/outer/dashboard", "..", "/outer"),
        (fastapi_host, "/js/dashboard", "..", "/js"),
        (routes_host, "/host/ops/jobs", "../../jobs-api", "/host/jobs-api"),
    ],
    ids=["starlette-mount", "fastapi-mount", "host-routes"],
)
def test_the_page_leads_back_under_the_mount(
    serve: Callable[[Any], str],
    host: Callable[[StatusService], Any],
    page: str,
    api_base: str,
    api: str,
) -> None:
    service = make_service(store_from_url("memory://"), api_keys=[KEY])
    url = serve(host(service))
    assert_leads_back(url + page, url + page + "/", api_base, api)
    # By its file's name, the same page: never the template.
    by_name = httpx.get(url + page + "/index.html")
    assert by_name.status_code == 200 and "{{" not in by_name.text
    assert by_name.text == httpx.get(url + page + "/").text


@pytest.fixture
def root_path_server(tmp_path: Path) -> Iterator[str]:
    """``uvicorn --root-path /api`` serving ``create_app``, as behind a proxy
    that strips ``/api``."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "jobstatus_adapters.cli:app_from_environ",
            "--root-path",
            "/api",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=tmp_path,
        env=clean_env(API_KEY=KEY, JOBSTATUS_STORE="memory://"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert process.poll() is None, "uvicorn exited"
        try:
            return httpx.get(url + "/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(ready, 30)
        yield url
    finally:
        process.terminate()
        process.wait(30)


def test_the_page_leads_back_under_uvicorns_root_path(root_path_server: str) -> None:
    # Reached directly (the proxy's stripped path), the app names /api in
    # its envelope; the page's relative addresses work from either side.
    url = root_path_server
    assert_leads_back(url + "/dashboard", url + "/dashboard/", "..", "/api")
    # Through the proxy the browser's address keeps /api, and so does
    # everything the page resolves against it.
    public = httpx.URL("https://example.com/api/dashboard")
    location = httpx.get(url + "/dashboard").headers["location"]
    page_url = public.join(location)
    assert page_url == "https://example.com/api/dashboard/"
    assert page_url.join("../v1/tokens") == "https://example.com/api/v1/tokens"


def assert_leads_back(moved_from: str, page_url: str, api_base: str, api: str) -> None:
    """The redirect from ``moved_from`` reaches ``page_url``, whose files and
    API base (``api_base``, the envelope naming ``api``) resolve under it."""
    moved = httpx.get(moved_from)
    assert moved.status_code == 307
    assert moved.headers["location"] == "./" + moved_from.rsplit("/", 1)[1] + "/"
    assert moved.url.join(moved.headers["location"]) == page_url
    answer = httpx.get(page_url)
    assert answer.status_code == 200
    found = re.search(r'<body data-api="([^"]*)"', answer.text)
    assert found is not None
    assert html.unescape(found[1]) == api_base
    for name in ("app.js", "style.css"):
        assert httpx.get(answer.url.join(name)).status_code == 200, name
    # What the page's sign-in does: POST {API}/v1/tokens, resolved by the
    # browser against the page's own address.
    minted = httpx.post(
        answer.url.join(api_base + "/v1/tokens"),
        headers={"x-api-key": KEY},
        json={"all": True, "ttl_seconds": 60},
    )
    assert minted.status_code == 200, minted.text
    assert minted.json()["endpoint"] == api + "/v1/tokens"
