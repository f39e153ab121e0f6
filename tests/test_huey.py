"""Huey records job states: a real redis-server as broker, two real
``huey_consumer`` processes, a SQLite file as the store, and every state
read back through the live endpoints."""

from __future__ import annotations

import importlib
import logging
import os
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from jobstatus_backends import store_from_url
from jobstatus_core import Store
from jobstatus_core.validation import JOB_ID_RULE

from .helpers import API_KEY, RedisServer, free_port, service_for, wait_for
from .queue_workers import Worker, finished, run_example, status_of, task_env

pytestmark = pytest.mark.huey


@pytest.fixture(scope="module")
def queue(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ModuleType, Path, str]]:
    """The task module (imported here, the sending side), its gates folder,
    and the store URL, with two workers running it."""
    where = tmp_path_factory.mktemp("huey")
    gates = where / "gates"
    gates.mkdir()
    store_url = f"sqlite://{where / 'jobs.db'}"
    env = task_env(f"{redis_server.url[:-1]}6", store_url, gates)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        tasks = importlib.import_module("tests.huey_tasks")
    # One worker thread each; poll the queue every 0.1 s at most.
    args = ["-m", "huey.bin.huey_consumer", "tests.huey_tasks.huey"]
    args += ["-w", "1", "-k", "thread", "-d", "0.05", "-m", "0.1"]
    workers = [Worker(args, env, where / f"worker-{i}.log") for i in range(2)]
    yield tasks, gates, store_url
    (gates / "all").touch()  # releases any task a failed test left held
    for worker in workers:
        worker.stop()


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
    held = [tasks.hold(f"{gate}-{i}") for i in range(2)]
    wait_for(lambda: all(status_of(store, m.id) == "running" for m in held), 30)
    # Both workers are busy, so this one is recorded by the sender and waits.
    waiting = tasks.add(2, 3)
    record = http.get(f"/v1/job/{waiting.id}").json()["response"]
    assert record["job_status"] == "queued" and record["task"] == "add"
    assert record["attempt"] == 1 and "created_at" in record
    assert "started_at" not in record
    for i in range(2):
        (gates / f"{gate}-{i}").touch()
    pids = {finished(http, m.id)["response"] for m in held}
    assert len(pids) == 2  # two worker processes
    done = finished(http, waiting.id)
    assert done["job_status"] == "done" and done["response"] == 5
    assert done["progress"] == {"done": 1, "total": 2, "message": "adding"}
    assert done["created_at"] <= done["started_at"] <= done["finished_at"]


def test_a_failing_task_is_failed_with_its_exception(
    queue: tuple[ModuleType, Path, str], http: httpx.Client
) -> None:
    message = queue[0].fail("no such file")
    record = finished(http, message.id)
    assert record["job_status"] == "failed" and record["task"] == "fail"
    assert record["error"] == {"type": "ValueError", "message": "no such file"}


def test_a_retried_task_records_its_second_attempt(
    queue: tuple[ModuleType, Path, str], http: httpx.Client
) -> None:
    message = queue[0].flaky(os.urandom(4).hex())
    record = finished(http, message.id)
    assert record["job_status"] == "done", record
    assert record["attempt"] == 2 and record["response"] == "the second attempt works"
    assert "error" not in record


def test_a_value_that_is_not_json_is_recorded_as_its_repr(
    queue: tuple[ModuleType, Path, str], http: httpx.Client
) -> None:
    message = queue[0].odd()
    record = finished(http, message.id)
    assert record["response"] == {"repr": "{1, 2}", "type": "builtins.set"}


def test_an_exception_whose_str_raises_is_failed_with_a_stand_in(
    queue: tuple[ModuleType, Path, str], http: httpx.Client
) -> None:
    message = queue[0].bad_str()
    record = finished(http, message.id)
    assert record["job_status"] == "failed"
    assert record["error"] == {"type": "BadStr", "message": "<exception str() failed>"}


def test_a_return_value_whose_repr_raises_is_done_with_a_stand_in(
    queue: tuple[ModuleType, Path, str], http: httpx.Client
) -> None:
    no_repr = queue[0].no_repr()
    huge = queue[0].huge()
    assert finished(http, no_repr.id)["response"] == {
        "repr": "<NoRepr: repr() failed: ValueError: no repr>",
        "type": "tests.awkward.NoRepr",
    }
    shown = finished(http, huge.id)["response"]
    assert shown["type"] == "builtins.int"
    assert shown["repr"].startswith("<int: repr() failed: ValueError: Exceeds")


def test_a_revoked_task_is_cancelled(
    queue: tuple[ModuleType, Path, str], http: httpx.Client, store: Store
) -> None:
    tasks, gates, _ = queue
    gate = os.urandom(4).hex()
    held = [tasks.hold(f"{gate}-{i}") for i in range(2)]
    wait_for(lambda: all(status_of(store, m.id) == "running" for m in held), 30)
    waiting = tasks.add(1, 1)
    waiting.revoke()
    assert status_of(store, waiting.id) == "queued"
    for i in range(2):
        (gates / f"{gate}-{i}").touch()
    record = finished(http, waiting.id)
    assert record["job_status"] == "cancelled" and record["response"] is None


class Unpicklable:
    """An argument Huey cannot pickle into a message."""

    def __reduce__(self) -> Any:
        raise pickle.PicklingError("not this one")


def test_a_task_whose_enqueue_failed_is_never_queued(
    queue: tuple[ModuleType, Path, str], store: Store
) -> None:
    tasks = queue[0]
    refused = tasks.add.s(Unpicklable(), 1)
    with pytest.raises(pickle.PicklingError):
        tasks.huey.enqueue(refused)
    assert store.get(refused.id) is None
    # A task that is written is queued by the time enqueue returns (an
    # hour's delay: no consumer starts it meanwhile).
    later = tasks.add.schedule(args=(1, 2), delay=3600)
    assert status_of(store, later.id) == "queued"


def test_a_task_the_broker_never_took_is_never_queued(tmp_path: Path) -> None:
    import redis.exceptions
    from huey import RedisHuey

    from jobstatus_adapters.huey import install

    app = RedisHuey("down", url=f"redis://127.0.0.1:{free_port()}/0")
    store_url = f"sqlite://{tmp_path / 'jobs.db'}"
    install(app, store_url)

    @app.task()
    def double(n: int) -> int:
        return 2 * n

    task = double.s(21)
    with pytest.raises(redis.exceptions.ConnectionError):
        app.enqueue(task)
    store = store_from_url(store_url)
    try:
        assert store.get(task.id) is None
    finally:
        store.close()


def test_a_job_id_outside_the_rule_is_one_warning_and_the_task_runs(
    queue: tuple[ModuleType, Path, str], caplog: pytest.LogCaptureFixture
) -> None:
    tasks, gates, _ = queue
    job_id = f"order:{os.urandom(4).hex()}"
    with caplog.at_level(logging.WARNING, logger="jobstatus.queues"):
        result = tasks.huey.enqueue(tasks.add.s(2, 3, id=job_id))
    assert result.get(blocking=True, timeout=30) == 5
    warning = f"job {job_id!r} not recorded: a job id must be {JOB_ID_RULE}"
    assert [r.getMessage() for r in caplog.records] == [warning]  # queued
    # The consumer that ran it: running, progress and done, one warning.
    logs = "".join(log.read_text() for log in gates.parent.glob("worker-*.log"))
    assert logs.count(warning) == 1
    assert "without its value" not in logs


def test_a_store_that_is_down_never_fails_a_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from huey import MemoryHuey

    from jobstatus_adapters.huey import install, progress

    app = MemoryHuey("down", immediate=True)
    # Nobody listens on this port: every recording fails, after its tries.
    install(app, f"redis://127.0.0.1:{free_port()}/0?timeout=0.2")

    @app.task()
    def double(n: int) -> int:
        progress(1, 1)
        return 2 * n

    with caplog.at_level(logging.WARNING, logger="jobstatus.queues"):
        assert double(21).get() == 42
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 4  # queued, running, progress, done


def test_the_example_app_records_its_task(
    redis_server: RedisServer, tmp_path: Path, serve_service: Callable[..., str]
) -> None:
    store_url = f"sqlite://{tmp_path / 'jobs.db'}"
    env = {"REDIS_URL": f"{redis_server.url[:-1]}7", "JOBSTATUS_STORE": store_url}
    job_id, worker = run_example(
        "huey_app",
        ["-c", "import huey_app; print(huey_app.resize(640).id)"],
        ["-m", "huey.bin.huey_consumer", "huey_app.huey", "-d", "0.05", "-m", "0.1"],
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
