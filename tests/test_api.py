"""The reading endpoints of SPEC §9 on every store, through both adapters."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from jobstatus_backends import store_from_url
from jobstatus_core import Store

from .helpers import API_KEY, Clock, service_for
from .test_http_contract import assert_error, envelope_of

NOW = Clock().now


def put(
    store: Store, job_id: str, status: Any = "done", at: float = NOW, **extra: Any
) -> dict[str, Any]:
    record = {"job_id": job_id, "job_status": status, "response": None, **extra}
    store.put(record, at=at)
    return record


# --- GET /v1/job/{job_id} ---------------------------------------------------


def test_get_job_answers_the_record_with_etag(
    client: httpx.Client, store: Store
) -> None:
    record = put(store, "job-1", response={"file_url": "https://x/y.mp4"})
    response = client.get("/v1/job/job-1")
    body = envelope_of(response)
    assert response.status_code == 200
    assert body["response"] == record and body["job_id"] == "job-1"
    etag = response.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 2
    assert response.headers["last-modified"].endswith("GMT")
    again = client.get("/v1/job/job-1", headers={"if-none-match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    # Never kept by a browser by guesswork (it has a Last-Modified): each
    # poll reaches the server, which answers 304 while nothing changed.
    for answer in (response, again, client.get("/v1/job/nope")):
        assert answer.headers["cache-control"] == "no-cache, private"
    weak = client.get("/v1/job/job-1", headers={"if-none-match": f'W/{etag}, "x"'})
    assert weak.status_code == 304
    # `*` matches any version of a job that exists, and none of one that does not.
    anything = client.get("/v1/job/job-1", headers={"if-none-match": "*"})
    assert anything.status_code == 304 and anything.headers["etag"] == etag
    missing = client.get("/v1/job/nobody", headers={"if-none-match": "*"})
    assert_error(missing, 404, "Job not found")
    put(store, "job-1", "failed")
    changed = client.get("/v1/job/job-1", headers={"if-none-match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert envelope_of(changed)["response"]["job_status"] == "failed"


def test_get_job_errors(client: httpx.Client) -> None:
    assert_error(client.get("/v1/job/nope"), 404, "Job not found")
    assert_error(client.get("/v1/job/.hidden"), 400, "Invalid parameter: job_id")
    assert_error(client.get("/v1/job/" + "x" * 129), 400, "Invalid parameter: job_id")
    refused = client.post("/v1/job/abc")
    assert_error(refused, 405, "Method not allowed: POST; use GET or HEAD")
    assert refused.headers["allow"] == "GET, HEAD"
    assert_error(httpx.get(f"{client.base_url}/v1/job/abc"), 401, "Unauthorized")


def test_head_answers_get_s_head_without_its_body(
    client: httpx.Client, store: Store
) -> None:
    put(store, "job-1", response={"file_url": "https://x/y.mp4"})
    got = client.get("/v1/job/job-1")
    for path in ("/v1/job/job-1", "/v1/jobs?limit=5", "/v1/openapi.json"):
        head = client.head(path)
        assert head.status_code == 200 and head.content == b"", path
        whole = client.get(path)  # on the same kept connection: read whole
        assert whole.status_code == 200 and whole.content, path
        assert head.headers["content-type"] == whole.headers["content-type"]
    head = client.head("/v1/job/job-1")
    assert head.headers["etag"] == got.headers["etag"]
    # A GET's length, but for the envelope's run and total times (a few
    # digits each).
    assert abs(int(head.headers["content-length"]) - len(got.content)) <= 10
    again = client.head("/v1/job/job-1", headers={"if-none-match": got.headers["etag"]})
    assert again.status_code == 304
    missing = client.head("/v1/job/nope")
    assert missing.status_code == 404 and missing.content == b""
    assert client.get("/v1/job/nope").status_code == 404
    # A stream is all body: HEAD is not one of its methods.
    refused = client.head("/v1/jobs/events")
    assert refused.status_code == 405 and refused.headers["allow"] == "GET"
    assert client.get("/v1/job/job-1").json()["response"]["job_id"] == "job-1"


# --- GET /v1/jobs -------------------------------------------------------------


def page_all(client: httpx.Client, **params: Any) -> tuple[list[dict[str, Any]], str]:
    jobs: list[dict[str, Any]] = []
    cursor = params.pop("cursor", None)
    while True:
        query = dict(params)
        if cursor:
            query["cursor"] = cursor
        body = envelope_of(client.get("/v1/jobs", params=query))
        assert body["code"] == 200, body
        response = body["response"]
        jobs += response["jobs"]
        cursor = response["cursor"]
        if not response["has_more"]:
            return jobs, cursor


def test_list_pages_in_change_order_and_resumes(
    client: httpx.Client, store: Store
) -> None:
    for i in range(12):
        put(store, f"j{i:02}", "done" if i % 3 else "failed", at=NOW - 100 + i)
    jobs, cursor = page_all(client, limit=5)
    assert [job["job_id"] for job in jobs] == [f"j{i:02}" for i in range(12)]
    assert set(jobs[0]) == {"job_id", "job_status", "updated_at", "version"}
    assert jobs[0]["updated_at"] == NOW - 100
    again, cursor = page_all(client, cursor=cursor)
    assert again == []
    put(store, "j03", "running", at=NOW)
    put(store, "new", "queued", at=NOW)
    changed, _ = page_all(client, cursor=cursor)
    assert [(j["job_id"], j["job_status"]) for j in changed] == [
        ("j03", "running"),
        ("new", "queued"),
    ]


def test_list_filters_counts_and_records(client: httpx.Client, store: Store) -> None:
    put(store, "a", "done", at=NOW - 1000)
    put(store, "b", "failed", at=NOW - 10)
    put(store, "c", "done", at=NOW - 5)
    put(store, "d", "running", at=NOW - 1)
    done, _ = page_all(client, status="done")
    assert [job["job_id"] for job in done] == ["a", "c"]
    both, _ = page_all(client, status=["done", "running"])
    assert [job["job_id"] for job in both] == ["a", "c", "d"]
    comma, _ = page_all(client, status="done,failed")
    assert [job["job_id"] for job in comma] == ["a", "b", "c"]
    recent, _ = page_all(client, since_seconds=60)
    assert [job["job_id"] for job in recent] == ["b", "c", "d"]
    body = envelope_of(client.get("/v1/jobs", params={"counts": "true", "limit": 1}))
    assert body["response"]["counts"] == {"done": 2, "failed": 1, "running": 1}
    assert body["response"]["has_more"] is True
    windowed = envelope_of(
        client.get(
            "/v1/jobs", params={"counts": "1", "since_seconds": 60, "status": "done"}
        )
    )
    assert windowed["response"]["counts"] == {"done": 1}
    with_records = envelope_of(
        client.get("/v1/jobs", params={"include": "record", "status": "running"})
    )
    (item,) = with_records["response"]["jobs"]
    assert item["record"] == {"job_id": "d", "job_status": "running", "response": None}
    # A parameter that takes one value, given twice, takes the first.
    for twice, records in ((["record", "bogus"], True), (["", "bogus"], False)):
        asked = {"include": twice, "status": "running"}
        (item,) = envelope_of(client.get("/v1/jobs", params=asked))["response"]["jobs"]
        assert ("record" in item) is records


@pytest.mark.parametrize(
    "params, message",
    [
        ({"limit": "0"}, "Invalid parameter: limit"),
        ({"limit": "1001"}, "Invalid parameter: limit"),
        ({"limit": "ten"}, "Invalid parameter: limit"),
        ({"limit": "-1"}, "Invalid parameter: limit"),
        ({"since_seconds": "-1"}, "Invalid parameter: since_seconds"),
        ({"since_seconds": "nan"}, "Invalid parameter: since_seconds"),
        ({"since_seconds": "inf"}, "Invalid parameter: since_seconds"),
        ({"since_seconds": "soon"}, "Invalid parameter: since_seconds"),
        ({"since_seconds": "1_0"}, "Invalid parameter: since_seconds"),
        ({"since_seconds": "\uff11"}, "Invalid parameter: since_seconds"),
        ({"since_seconds": " 5"}, "Invalid parameter: since_seconds"),
        ({"counts": "maybe"}, "Invalid parameter: counts"),
        ({"include": "everything"}, "Invalid parameter: include"),
        ({"cursor": "abc"}, "Invalid cursor"),
        ({"cursor": "a.b"}, "Invalid cursor"),
        ({"cursor": "\u00e9.\u00e9"}, "Invalid cursor"),
        ({"cursor": "x" * 600}, "Invalid cursor"),
    ],
)
def test_list_bad_parameters_are_400(
    client: httpx.Client, params: dict[str, str], message: str
) -> None:
    assert_error(client.get("/v1/jobs", params=params), 400, message)


def test_cursors_are_tamper_evident_and_bound_to_their_filter(
    client: httpx.Client, store: Store
) -> None:
    put(store, "a")
    cursor = envelope_of(client.get("/v1/jobs", params={"status": "done"}))["response"][
        "cursor"
    ]
    payload, signature = cursor.split(".")
    forged = payload[:-1] + ("A" if payload[-1] != "A" else "B") + "." + signature
    assert_error(
        client.get("/v1/jobs", params={"status": "done", "cursor": forged}),
        400,
        "Invalid cursor",
    )
    assert_error(
        client.get("/v1/jobs", params={"status": "failed", "cursor": cursor}),
        400,
        "Invalid cursor: made for another filter",
    )
    assert_error(
        client.get("/v1/jobs", params={"cursor": cursor}),
        400,
        "Invalid cursor: made for another filter",
    )
    ok = client.get("/v1/jobs", params={"status": "done", "cursor": cursor})
    assert envelope_of(ok)["code"] == 200


@pytest.mark.memory
def test_a_cursor_of_another_life_of_the_store_is_410(serve_service: Any) -> None:
    first, second = store_from_url("memory://"), store_from_url("memory://")
    first.put({"job_id": "a", "job_status": "done"})
    url = serve_service(service_for(first))
    with httpx.Client(base_url=url, headers={"x-api-key": API_KEY}) as http:
        cursor = envelope_of(http.get("/v1/jobs"))["response"]["cursor"]
    url = serve_service(service_for(second))
    with httpx.Client(base_url=url, headers={"x-api-key": API_KEY}) as http:
        assert_error(
            http.get("/v1/jobs", params={"cursor": cursor}), 410, "Cursor expired"
        )


# --- POST /v1/jobs/batch --------------------------------------------------------


def test_batch_answers_found_and_unknown(client: httpx.Client, store: Store) -> None:
    a = put(store, "a")
    b = put(store, "b", "running")
    body = envelope_of(
        client.post("/v1/jobs/batch", json={"job_ids": ["b", "zz", "a", "b"], "id": 7})
    )
    assert body["code"] == 200 and body["id"] == 7
    assert body["response"] == {
        "jobs": {"b": b, "a": a},
        "expired": {},
        "unknown": ["zz"],
    }


@pytest.mark.parametrize(
    "payload, message",
    [
        ({}, "Invalid payload: job_ids is required"),
        ({"job_ids": "a"}, "Invalid payload: job_ids must be an array"),
        ({"job_ids": []}, "Invalid payload: job_ids must hold 1 to 1000"),
        ({"job_ids": ["a"] * 1001}, "Invalid payload: job_ids must hold 1 to 1000"),
        ({"job_ids": ["a", "b", "../x"]}, "Invalid payload: job_ids[2] must be"),
        ({"job_ids": ["a", 5]}, "Invalid payload: job_ids[1] must be"),
        ([], "Invalid payload: expected a JSON object"),
    ],
)
def test_batch_bad_payloads_are_400(
    client: httpx.Client, payload: Any, message: str
) -> None:
    assert_error(client.post("/v1/jobs/batch", json=payload), 400, message)


def test_batch_refuses_what_the_body_rules_refuse(client: httpx.Client) -> None:
    assert_error(
        client.post(
            "/v1/jobs/batch", content=b"{", headers={"content-type": "application/json"}
        ),
        400,
        "Invalid JSON",
    )
    assert_error(
        client.post(
            "/v1/jobs/batch",
            content=b"job_ids=a",
            headers={"content-type": "text/plain"},
        ),
        415,
        "Unsupported media type",
    )
    assert_error(client.get("/v1/jobs/batch"), 405, "Method not allowed: GET; use POST")


@pytest.mark.memory
def test_forged_shapes_in_signed_cursors_and_tokens_are_refused(
    serve_service: Any,
) -> None:
    import base64
    import hashlib
    import hmac
    import json as jsonlib

    from jobstatus_core import cursor as cursors
    from jobstatus_core import tokens

    store = store_from_url("memory://")
    store.put({"job_id": "a", "job_status": "done"})
    service = service_for(store)
    url = serve_service(service)

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    def signed_cursor(fields: Any) -> str:
        payload = b64(jsonlib.dumps(fields).encode())
        signature = hmac.new(service.secret, payload.encode(), hashlib.sha256)
        return f"{payload}.{b64(signature.digest()[:16])}"

    def signed_token(fields: Any) -> str:
        payload = b64(jsonlib.dumps(fields).encode())
        signature = hmac.new(
            service.secret, b"token\n" + payload.encode(), hashlib.sha256
        )
        return f"{tokens.PREFIX}.{payload}.{b64(signature.digest())}"

    digest = cursors.filter_digest(None, None)
    epoch = store.mark().epoch
    with httpx.Client(base_url=url, headers={"x-api-key": API_KEY}) as http:
        for fields in (
            [1, epoch],
            5,
            ["1", epoch, digest],
            [True, epoch, digest],
            [-1, epoch, digest],
            [2**63, epoch, digest],  # past any store's integers: SQL would overflow
        ):
            answer = http.get("/v1/jobs", params={"cursor": signed_cursor(fields)})
            assert_error(answer, 400, "Invalid cursor")
    with httpx.Client(base_url=url) as browser:
        for fields in ([5, 1e18], [[[1]], 1e18], [None, "later"], [None, True]):
            bearer = {"authorization": f"Bearer {signed_token(fields)}"}
            assert_error(browser.get("/v1/job/a", headers=bearer), 401, "Unauthorized")


@pytest.mark.memory
def test_a_host_with_its_own_auth_gets_a_secret_nobody_knows(
    serve_service: Any,
) -> None:
    from jobstatus_adapters.service import make_service

    first = make_service(store_from_url("memory://"), auth=lambda headers: False)
    second = make_service(store_from_url("memory://"), auth=lambda headers: False)
    assert first.secret != second.secret and len(first.secret) == 32


def test_times_no_http_date_can_say_are_refused_and_never_crash(
    client: httpx.Client, store: Store
) -> None:
    from jobstatus_core import InvalidRecord

    for at in (1e12 * 1000, float("nan"), float("inf"), -5.0):
        with pytest.raises(InvalidRecord):
            store.put({"job_id": "t", "job_status": "done"}, at=at)
    store.put({"job_id": "t", "job_status": "done"}, at=253_402_300_799.0)
    answer = client.get("/v1/job/t")
    assert envelope_of(answer)["code"] == 200 and "etag" in answer.headers


def test_a_path_with_a_trailing_newline_is_no_route(client: httpx.Client) -> None:
    for path in ("/v1/jobs%0A", "/v1/toolkit/jobs/status%0A"):
        assert_error(client.request("GET", path), 404, "Not found")
