"""Property tests: whatever a client sends, the answer is a JSON envelope < 500.

Thousands of generated requests go over real HTTP to both adapters.
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobstatus_backends import store_from_url
from jobstatus_core import JOB_STATUS_PATH, JOBS_STATUS_PATH

from .helpers import API_KEY, service_for

pytestmark = pytest.mark.filesystem  # the store that touches files: the riskiest

EXAMPLES = 1000  # per run, each sent to both adapters (schemathesis adds its own)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)

job_ids = st.one_of(
    st.text(max_size=140),
    st.text(
        alphabet=string.ascii_letters + string.digits + "._-/\\:%\x00 ", max_size=140
    ),
    st.sampled_from(["../x", "..", ".", "/etc/passwd", "a/../../b", "CON", "nul.json"]),
    json_values,
)


def encoded(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


bodies = st.one_of(
    st.builds(encoded, json_values),
    st.builds(lambda j, i: encoded({"job_id": j, "id": i}), job_ids, json_values),
    st.builds(
        lambda s, i: encoded({"since_seconds": s, "id": i}), json_values, json_values
    ),
    st.binary(max_size=300),
    st.builds(
        lambda v, enc: json.dumps(v).encode(enc),
        json_values,
        st.sampled_from(["utf-16", "utf-32", "utf-8-sig"]),
    ),
    st.builds(lambda n: b"[" * n + b"]" * n, st.integers(0, 30_000)),
    st.builds(lambda n: b'{"a":' * n + b"1" + b"}" * n, st.integers(0, 10_000)),
    st.builds(
        lambda d: b'{"since_seconds": ' + d.encode() + b"}",
        st.sampled_from(
            [
                "1e999",
                "-1e999",
                "NaN",
                "Infinity",
                "1" * 5000,
                "0x10",
                "1_000",
                "--1",
                "1e-400",
            ]
        ),
    ),
    st.builds(lambda k: b'{"job_id": "a", "job_id": ' + encoded(k) + b"}", job_ids),
    st.just(b'{"job_id": "a\\u0000b"}'),
    st.just(b'{"id": "\\ud800"}'),
)

# The client (h11) refuses values with surrounding spaces; HTTP strips them.
header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60
).map(str.strip)
content_types = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "application/json",
            "text/plain",
            "application/x+json",
            "",
            "application/json; charset=latin-1",
            "*/*",
        ]
    ),
    header_text,
)
methods = st.sampled_from(
    # PROPFIND: a method HTTP parsers know and no route serves. A method no
    # parser knows ("FOO") never reaches the app under httptools: uvicorn
    # refuses the request line itself (docs/api.md).
    [
        "POST",
        "POST",
        "POST",
        "GET",
        "PUT",
        "DELETE",
        "PATCH",
        "OPTIONS",
        "TRACE",
        "PROPFIND",
    ]
)
paths = st.one_of(
    st.sampled_from([JOB_STATUS_PATH, JOBS_STATUS_PATH]),
    st.builds(
        lambda s: "/" + s, st.text(alphabet=string.ascii_letters + "/._-%", max_size=40)
    ),
)


@pytest.fixture
def urls(
    tmp_path: Path, serve: Callable[..., str], serve_wsgi: Callable[..., str]
) -> Any:
    from jobstatus_adapters.starlette import create_app
    from jobstatus_adapters.wsgi import WSGIApp

    (tmp_path / "jobs").mkdir()
    store = store_from_url(f"file://{tmp_path}")
    store.put({"job_id": "a", "job_status": "done", "response": {"ok": True}})
    service = service_for(store, max_body=4096 * 16)
    yield str(tmp_path), [serve(create_app(service)), serve_wsgi(WSGIApp(service))]
    store.close()


def check(response: httpx.Response, root: str) -> None:
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["code"] == response.status_code < 500, body
    text = response.text
    assert "Traceback" not in text and 'File "' not in text and root not in text
    assert API_KEY not in text


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_any_request_gets_an_envelope_below_500(urls: Any, data: st.DataObject) -> None:
    root, bases = urls
    method = data.draw(methods)
    path = data.draw(paths)
    body = data.draw(bodies)
    headers = {"x-api-key": data.draw(st.one_of(st.just(API_KEY), header_text))}
    content_type = data.draw(content_types)
    if content_type is not None:
        headers["content-type"] = content_type
    for base in bases:
        with httpx.Client(base_url=base) as http:
            check(http.request(method, path, content=body, headers=headers), root)
