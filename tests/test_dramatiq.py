"""Dramatiq records job states: a real redis-server as broker, two real
``dramatiq`` worker processes, a SQLite file as the store, and every state
read back through the live endpoints."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from jobstatus_backends import store_from_url
from jobstatus_core import Store

from .helpers import API_KEY, RedisServer, service_for, wait_for
from .queue_workers import (
    Worker,
    finished,
    reaches,
    run_example,
    status_of,
    task_env,
)

pytestmark = pytest.mark.dramatiq


@pytest.fixture(scope="module")
def queue(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ModuleType, Path, str]]:
    """The task module (imported here, the sending side), its gates folder,
    and the store URL, with two workers running it."""
    where = tmp_path_factory.mktemp("dramatiq")
    gates = where / "gates"
    gates.mkdir()
    store_url = f"sqlite://{where / 'jobs.db'}"
    env = task_env(f"{redis_server.url[:-1]}5", store_url, gates)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        tasks = importlib.import_module("tests.dramatiq_tasks")
    args = ["-m", "dramatiq", "tests.dramatiq_tasks", "-p", "1", "-t", "1"]
    # One message at a time per worker, so that two held tasks take both.
    worker_env = {**env, "dramatiq_queue_prefetch": "1"}
    workers = [Worker(args, worker_env, where / f"worker-{i}.log") for i in range(2)]
    yield tasks, gates, store_url
    (gates / "all").touch()  # releases any task a failed test left held
    for worker in workers:
        worker.stop()
    tasks.broker.close()


@pytest.fixture
def http(
    queue: tuple[ModuleType, Path, str], serve_service: Callable[..., str]
) -> Iterator[httpx.Client]:
    store = store_from_url(queue[2])
    url = serve_service(service_for(store))
    with httpx.Client(base_url=url, headers={"x-api-key": API_KEY}) as client:
        yield client
    store.close()


@pytest.fixture
def store(queue: tuple[ModuleType, Path, str]) -> Iterator[Store]:
    opened = store_from_url(queue[2])
    yield opened
    opened.close()


def test_two_workers_run_at_once_and_a_waiting_task_stays_queued(
    queue: tuple[ModuleType, Path, str], http: httpx.Client, store: Store
) -> None:
    tasks, gates, _ = queue
    gate = os.urandom(4).hex()
    held = [tasks.hold.send(f"{gate}-{i}") for i in range(2)]
    wait_for(lambda: all(status_of(store, m.message_id) == "running" for m in held), 30)
    # Both workers are busy, so this one is recorded by the sender and waits.
    waiting = tasks.add.send(2, 3)
    record = http.get(f"/v1/job/{waiting.message_id}").json()["response"]
    assert record["job_status"] == "queued" and record["task"] == "add"
    assert record["attempt"] == 1 and "created_at" in record
    assert "started_at" not in record
    for i in range(2):
        (gates / f"{gate}-{i}").touch()
    pids = {finished(http, m.message_id)["response"] for m in held}
    assert len(pids) == 2  # two worker processes
    done = finished(http, waiting.message_id)
    assert done["job_status"] == "done" and done["response"] == 5
    assert done["progress"] == {"done": 1, "total": 2, "message": "adding"}
    assert done["created_at"] <= done["started_at"] <= done["finished_at"]


def test_a_failing_task_is_failed_with_its_exception(
    queue: tuple[ModuleType, Path, str], http: httpx.Client
) -> None:
    message = queue[0].fail.send("no such file")
    record = finished(http, message.message_id)
    assert record["job_status"] == "failed" and record["task"] == "fail"
    assert record["error"] == {"type": "ValueError", "message": "no such file"}


def test_a_retried_task_records_its_second_attempt(
    queue: tuple[ModuleType, Path, str], http: httpx.Client
) -> None:
    message = queue[0].flaky.send(os.urandom(4).hex())
    record = finished(http, message.message_id)
    assert record["job_status"] == "done", record
    assert record["attempt"] == 2 and record["response"] == "the second attempt works"
    assert "error" not in record


def test_a_value_that_is_not_json_is_recorded_as_its_repr(
    queue: tuple[ModuleType, Path, str], http: httpx.Client
) -> None:
    message = queue[0].odd.send()
    record = finished(http, message.message_id)
    assert record["response"] == {"repr": "{1, 2}", "type": "builtins.set"}


def test_an_exception_whose_str_raises_is_failed_with_a_stand_in(
    queue: tuple[ModuleType, Path, str], http: httpx.Client
) -> None:
    message = queue[0].bad_str.send()
    record = finished(http, message.message_id)
    assert record["job_status"] == "failed"
    assert record["error"] == {"type": "BadStr", "message": "<exception str() failed>"}


def test_a_return_value_whose_repr_raises_is_done_with_a_stand_in(
    queue: tuple[ModuleType, Path, str], http: httpx.Client
) -> None:
    no_repr = queue[0].no_repr.send()
    huge = queue[0].huge.send()
    assert finished(http, no_repr.message_id)["response"] == {
        "repr": "<NoRepr: repr() failed: ValueError: no repr>",
        "type": "tests.awkward.NoRepr",
    }
    shown = finished(http, huge.message_id)["response"]
    assert shown["type"] == "builtins.int"
    assert shown["repr"].startswith("<int: repr() failed: ValueError: Exceeds")


def test_a_skipped_message_is_cancelled(
    queue: tuple[ModuleType, Path, str], http: httpx.Client, store: Store
) -> None:
    tasks, gates, _ = queue
    gate = os.urandom(4).hex()
    held = [tasks.hold.send(f"{gate}-{i}") for i in range(2)]
    wait_for(lambda: all(status_of(store, m.message_id) == "running" for m in held), 30)
    # Older than its age limit by the time a worker is free: Dramatiq skips it.
    stale = tasks.add.send_with_options(args=(1, 1), max_age=1)
    assert status_of(store, stale.message_id) == "queued"
    for i in range(2):
        (gates / f"{gate}-{i}").touch()
    record = finished(http, stale.message_id)
    assert record["job_status"] == "cancelled" and "response" in record
    assert record["response"] is None


def test_a_message_for_an_actor_the_worker_lacks_is_failed(
    queue: tuple[ModuleType, Path, str], store: Store
) -> None:
    """Dramatiq moves it to the dead-letter queue unrun: recorded failed,
    not left looking queued."""
    import dramatiq

    message = dramatiq.Message(
        queue_name="default",
        actor_name="not_deployed",
        args=(),
        kwargs={},
        options={},
    )
    sent = queue[0].broker.enqueue(message)
    record = reaches(store, sent.message_id, "failed")
    assert record["error"] == {
        "type": "ActorNotFound",
        "message": "no actor 'not_deployed' in the worker",
    }
    assert record["attempt"] == 1


def test_the_example_app_records_its_task(
    redis_server: RedisServer, tmp_path: Path, serve_service: Callable[..., str]
) -> None:
    store_url = f"sqlite://{tmp_path / 'jobs.db'}"
    env = {"REDIS_URL": f"{redis_server.url[:-1]}8", "JOBSTATUS_STORE": store_url}
    job_id, worker = run_example(
        "dramatiq_app",
        ["dramatiq_app.py"],
        ["-m", "dramatiq", "dramatiq_app", "-p", "1", "-t", "1"],
        env,
        tmp_path,
    )
    store = store_from_url(store_url)
    try:
        url = serve_service(service_for(store))
        with httpx.Client(base_url=url, headers={"x-api-key": API_KEY}) as http:
            record = finished(http, job_id)
    finally:
        worker.stop()
        store.close()
    assert record["job_status"] == "done" and record["task"] == "resize"
    assert record["response"] == {"file_url": "https://example.com/640.png"}
    assert record["progress"] == {"done": 3, "total": 3, "message": "resizing"}
