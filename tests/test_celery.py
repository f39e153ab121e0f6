"""Celery: states recorded by real workers (examples/celery_app.py) through a
real redis-server broker into an SQLite file, read back over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from jobstatus_backends.sqlite import SQLiteStore

from .helpers import API_KEY, RedisServer, free_port, service_for, wait_for
from .queue_workers import reaches, record_of

if TYPE_CHECKING:
    # Imported where used: only the celery tox env installs Celery.
    from celery import Celery

    from jobstatus_adapters.celery import CeleryRecording

pytestmark = pytest.mark.celery

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


class Workers:
    """Real ``celery worker`` processes running the example app."""

    def __init__(self, broker: str, store_url: str, queue: str, cwd: Path) -> None:
        self.env = {
            **os.environ,
            "CELERY_BROKER_URL": broker,
            "JOBSTATUS_STORE": store_url,
            # The example app, and tests.celery_tasks (its edge cases).
            "PYTHONPATH": os.pathsep.join([str(EXAMPLES), str(ROOT)]),
        }
        self.queue = queue
        self.cwd = cwd
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, name: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "celery_app",
                "worker",
                "--include",
                "tests.celery_tasks",
                "--pool",
                "prefork",
                "--concurrency",
                "1",
                "--without-mingle",
                "--without-gossip",
                "--loglevel",
                "WARNING",
                "-Q",
                self.queue,
                "-n",
                f"{name}-{self.queue}@%h",
            ],
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


@pytest.fixture(scope="module")
def setup(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Celery, CeleryRecording, str, Workers]]:
    from celery import Celery

    from jobstatus_adapters.celery import install

    where = tmp_path_factory.mktemp("celery")
    store_url = f"sqlite://{where / 'jobs.db'}"
    queue = f"q-{uuid.uuid4().hex[:8]}"
    app = Celery("publisher", broker=redis_server.url)
    app.conf.update(task_default_queue=queue, broker_connection_retry_on_startup=True)
    recording = install(app, store_url)
    workers = Workers(redis_server.url, store_url, queue, where)
    workers.start("one")
    yield app, recording, store_url, workers
    workers.stop()
    recording.uninstall()
    app.close()


@pytest.fixture
def store(
    setup: tuple[Celery, CeleryRecording, str, Workers],
) -> Iterator[SQLiteStore]:
    opened = SQLiteStore(setup[2].removeprefix("sqlite://"))
    yield opened
    opened.close()


def send(app: Celery, name: str, *args: Any) -> str:
    return str(app.send_task(f"celery_app.{name}", args=args).id)


def test_a_task_is_queued_running_then_done_through_the_endpoints(
    setup: tuple[Celery, CeleryRecording, str, Workers],
    store: SQLiteStore,
    serve_service: Callable[..., str],
) -> None:
    app, *_ = setup
    url = serve_service(service_for(store))
    with httpx.Client(base_url=url, headers={"x-api-key": API_KEY}) as http:
        job_id = send(app, "resize", 640, 480)
        first = http.get(f"/v1/job/{job_id}").json()["response"]
        # Recorded when published, before any worker could take it.
        assert first["task"] == "celery_app.resize"
        assert first["job_status"] in ("queued", "running", "done")
        answer = http.get(f"/v1/job/{job_id}", params={"wait": 30}, timeout=40)
        record = answer.json()["response"]
        assert record["job_status"] == "done"
        assert record["response"] == {"width": 640, "height": 480}
        assert record["progress"] == {"done": 3, "total": 3, "message": "step 3 of 3"}
        assert record["attempt"] == 1
        assert record["created_at"] <= record["started_at"] <= record["finished_at"]
        toolkit = http.post("/v1/toolkit/job/status", json={"job_id": job_id})
        assert toolkit.json()["response"]["job_status"] == "done"


def test_a_failing_task_is_failed_with_its_exception(
    setup: tuple[Celery, CeleryRecording, str, Workers], store: SQLiteStore
) -> None:
    job_id = send(setup[0], "explode", "no such file")
    record = reaches(store, job_id, "failed")
    assert record["error"] == {"type": "ValueError", "message": "no such file"}
    assert record["task"] == "celery_app.explode"


def test_retries_are_new_attempts_that_end_done(
    setup: tuple[Celery, CeleryRecording, str, Workers], store: SQLiteStore
) -> None:
    job_id = send(setup[0], "flaky", 2)
    record = reaches(store, job_id, "done")
    assert record["attempt"] == 3
    assert record["response"] == 2
    assert "error" not in record


def test_a_non_json_return_value_is_recorded_as_its_repr(
    setup: tuple[Celery, CeleryRecording, str, Workers], store: SQLiteStore
) -> None:
    job_id = send(setup[0], "stamp")
    record = reaches(store, job_id, "done")
    assert record["response"] == {
        "repr": "datetime.date(2024, 5, 17)",
        "type": "datetime.date",
    }


def test_revoking_a_running_task_cancels_it(
    setup: tuple[Celery, CeleryRecording, str, Workers],
    store: SQLiteStore,
    tmp_path: Path,
) -> None:
    app = setup[0]
    gate = tmp_path / "gate"
    job_id = send(app, "hold", str(gate))
    reaches(store, job_id, "running")
    wait_for(lambda: Path(f"{gate}.pid").exists())
    app.control.revoke(job_id, terminate=True, signal="SIGKILL")
    record = reaches(store, job_id, "cancelled")
    assert record["finished_at"] >= record["started_at"]


def test_revoking_a_queued_task_cancels_it_and_it_never_runs(
    setup: tuple[Celery, CeleryRecording, str, Workers],
    store: SQLiteStore,
    tmp_path: Path,
) -> None:
    app = setup[0]
    gate = tmp_path / "gate"
    busy = send(app, "hold", str(gate))  # the only worker is busy with it
    reaches(store, busy, "running")
    waiting = send(app, "resize", 1, 1)
    assert record_of(store, waiting)["job_status"] == "queued"
    app.control.revoke(waiting)
    gate.touch()
    reaches(store, busy, "done")
    record = reaches(store, waiting, "cancelled")
    assert "started_at" not in record


def test_a_message_the_worker_drops_unrun_is_failed_with_why(
    setup: tuple[Celery, CeleryRecording, str, Workers], store: SQLiteStore
) -> None:
    """A task the worker does not know, or a message it refuses, never
    runs: recorded failed, not left looking queued."""
    app = setup[0]
    unknown = str(app.send_task("celery_app.not_deployed").id)
    record = reaches(store, unknown, "failed")
    assert record["error"] == {
        "type": "NotRegistered",
        "message": "Received unregistered task of type 'celery_app.not_deployed'",
    }
    assert record["attempt"] == 1
    bad_eta = str(app.send_task("celery_app.resize", args=(1, 1), eta="soon").id)
    error = reaches(store, bad_eta, "failed")["error"]
    assert error["type"] == "InvalidTaskError"
    assert error["message"].startswith("invalid ETA value 'soon'")


def test_a_pool_process_killed_mid_task_leaves_the_job_failed(
    setup: tuple[Celery, CeleryRecording, str, Workers],
    store: SQLiteStore,
    tmp_path: Path,
) -> None:
    gate = tmp_path / "gate"
    job_id = send(setup[0], "hold", str(gate))
    reaches(store, job_id, "running")
    wait_for(lambda: Path(f"{gate}.pid").exists())
    os.kill(int(Path(f"{gate}.pid").read_text()), signal.SIGKILL)
    record = reaches(store, job_id, "failed")
    assert record["error"]["type"] == "WorkerLostError"


def test_two_workers_run_tasks_at_once(
    setup: tuple[Celery, CeleryRecording, str, Workers],
    store: SQLiteStore,
    tmp_path: Path,
) -> None:
    app, _, _, workers = setup
    workers.start("two")
    gate = tmp_path / "gate"
    jobs = [send(app, "hold", str(gate)) for _ in range(2)]
    for job_id in jobs:  # both running at once: each worker holds one
        reaches(store, job_id, "running", 60)
    gate.touch()
    pids = {reaches(store, job_id, "done")["response"] for job_id in jobs}
    assert len(pids) == 2


def seven() -> int:
    return 7


def test_a_store_that_is_down_never_fails_a_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from celery import Celery

    from jobstatus_adapters.celery import install

    app = Celery("down", broker="memory://")
    task = app.task(seven, name="down.seven")
    # A Redis store on a port nobody listens on: every change fails.
    recording = install(app, f"redis://127.0.0.1:{free_port()}/0")
    try:
        with caplog.at_level("WARNING", logger="jobstatus.queues"):
            result = task.apply(task_id="down-1")
        assert result.successful() and result.get() == 7
        dropped = [r.getMessage() for r in caplog.records]
        # running tried 3 times, then dropped; done, the store taken for
        # down since, tried once.
        assert len(dropped) == 2
        assert "running not recorded after 3 tries, dropped" in dropped[0]
        assert "done not recorded after 1 try, dropped" in dropped[1]
    finally:
        recording.uninstall()
        app.close()


def test_a_dropped_change_names_its_state(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from celery import Celery

    from jobstatus_adapters.celery import install

    app = Celery("down", broker="memory://")
    task = app.task(seven, name="down.seven")
    recording = install(app, f"redis://127.0.0.1:{free_port()}/0")
    try:
        with caplog.at_level("WARNING", logger="jobstatus.queues"):
            task.apply(task_id="down-2")
        dropped = [r.getMessage().split(" not recorded")[0] for r in caplog.records]
        # Named as the other adapters name them, not "state".
        assert dropped == ["job down-2: running", "job down-2: done"]
    finally:
        recording.uninstall()
        app.close()


def test_an_exception_whose_str_raises_is_failed_with_a_stand_in(
    setup: tuple[Celery, CeleryRecording, str, Workers], store: SQLiteStore
) -> None:
    job_id = str(setup[0].send_task("tests.celery_tasks.bad_str").id)
    record = reaches(store, job_id, "failed")
    assert record["error"] == {"type": "BadStr", "message": "<exception str() failed>"}


def test_a_return_value_whose_repr_raises_is_done_with_a_stand_in(
    setup: tuple[Celery, CeleryRecording, str, Workers], store: SQLiteStore
) -> None:
    no_repr = str(setup[0].send_task("tests.celery_tasks.no_repr").id)
    assert reaches(store, no_repr, "done")["response"] == {
        "repr": "<NoRepr: repr() failed: ValueError: no repr>",
        "type": "tests.awkward.NoRepr",
    }


def test_an_int_too_long_to_show_fails_in_celery_itself(
    setup: tuple[Celery, CeleryRecording, str, Workers], store: SQLiteStore
) -> None:
    # Celery logs each return value as text before task_success: past
    # 4,300 digits that raises in Celery, which fails the task (task_failure).
    huge = str(setup[0].send_task("tests.celery_tasks.huge").id)
    error = reaches(store, huge, "failed")["error"]
    assert error["type"] == "ValueError"
    assert error["message"].startswith("Exceeds the limit (4300 digits)")
