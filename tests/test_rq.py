"""RQ: states recorded by real ``rq worker -w RecordingWorker`` processes
running examples/rq_app.py, through a real redis-server into an SQLite file,
read back over HTTP."""

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
    # Imported where used: only the rq tox env installs RQ.
    from rq import Queue

pytestmark = pytest.mark.rq

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
RECORDING = "jobstatus_adapters.rq.RecordingWorker"
SIMPLE = "jobstatus_adapters.rq.SimpleRecordingWorker"


class Workers:
    """Real ``rq worker`` processes with the recording worker class."""

    def __init__(self, redis_url: str, store_url: str, queue: str, cwd: Path) -> None:
        self.env = {
            **os.environ,
            "RQ_REDIS_URL": redis_url,
            "RQ_QUEUE": queue,
            "JOBSTATUS_STORE": store_url,
            "PYTHONPATH": str(EXAMPLES),
        }
        self.redis_url = redis_url
        self.queue = queue
        self.cwd = cwd
        self.processes: list[subprocess.Popen[bytes]] = []

    def command(self, worker: str, queue: str) -> list[str]:
        rq = Path(sys.executable).parent / "rq"
        return [str(rq), "worker", "-w", worker, "--url", self.redis_url, queue]

    def start(self) -> None:
        self.processes.append(
            subprocess.Popen(
                [*self.command(RECORDING, self.queue), "--quiet"],
                cwd=self.cwd,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    def burst(self, queue: str, worker: str = RECORDING) -> int:
        """Run one worker until ``queue`` is empty; its exit status."""
        return subprocess.run(
            [*self.command(worker, queue), "--burst"],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            timeout=120,
        ).returncode

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
) -> Iterator[tuple[Queue, str, Workers]]:
    from redis import Redis
    from rq import Queue

    from jobstatus_adapters.rq import install

    where = tmp_path_factory.mktemp("rq")
    store_url = f"sqlite://{where / 'jobs.db'}"
    name = f"q-{uuid.uuid4().hex[:8]}"
    connection = Redis.from_url(redis_server.url)
    queue = install(Queue(name, connection=connection), store_url)
    workers = Workers(redis_server.url, store_url, name, where)
    workers.start()
    yield queue, store_url, workers
    workers.stop()
    connection.close()


@pytest.fixture
def store(setup: tuple[Queue, str, Workers]) -> Iterator[SQLiteStore]:
    opened = SQLiteStore(setup[1].removeprefix("sqlite://"))
    yield opened
    opened.close()


def send(queue: Queue, name: str, *args: Any, **options: Any) -> str:
    return str(queue.enqueue(f"rq_app.{name}", *args, **options).id)


def test_a_job_is_queued_running_then_done_through_the_endpoints(
    setup: tuple[Queue, str, Workers],
    store: SQLiteStore,
    serve_service: Callable[..., str],
) -> None:
    url = serve_service(service_for(store))
    with httpx.Client(base_url=url, headers={"x-api-key": API_KEY}) as http:
        job_id = send(setup[0], "resize", 640, 480)
        first = http.get(f"/v1/job/{job_id}").json()["response"]
        assert first["task"] == "rq_app.resize"
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


def test_a_failing_job_is_failed_with_its_exception(
    setup: tuple[Queue, str, Workers], store: SQLiteStore
) -> None:
    job_id = send(setup[0], "explode", "no such file")
    record = reaches(store, job_id, "failed")
    assert record["error"] == {"type": "ValueError", "message": "no such file"}


def test_retries_are_new_attempts_that_end_done(
    setup: tuple[Queue, str, Workers], store: SQLiteStore, tmp_path: Path
) -> None:
    from rq import Retry

    job_id = send(setup[0], "flaky", str(tmp_path / "runs"), 2, retry=Retry(max=3))
    record = reaches(store, job_id, "done")
    assert record["attempt"] == 3
    assert record["response"] == 3
    assert "error" not in record


def test_a_job_past_its_timeout_is_failed_with_rqs_exception(
    setup: tuple[Queue, str, Workers], store: SQLiteStore, tmp_path: Path
) -> None:
    job_id = send(setup[0], "hold", str(tmp_path / "gate"), job_timeout=1)
    record = reaches(store, job_id, "failed")
    assert record["error"] == {
        "type": "JobTimeoutException",
        "message": "Task exceeded maximum timeout value (1 seconds)",
    }


@pytest.fixture
def own_queue(setup: tuple[Queue, str, Workers]) -> Queue:
    """A queue no running worker listens to: a test runs it with a burst."""
    from rq import Queue

    from jobstatus_adapters.rq import install

    name = f"own-{uuid.uuid4().hex[:8]}"
    return install(Queue(name, connection=setup[0].connection), setup[1])


def test_a_job_rq_deletes_as_it_ends_is_recorded_from_the_workers_copy(
    setup: tuple[Queue, str, Workers], own_queue: Queue, store: SQLiteStore
) -> None:
    failed = send(own_queue, "explode", "gone", failure_ttl=0)
    done = send(own_queue, "resize", 1, 2, result_ttl=0)
    either = send(own_queue, "explode", "gone", failure_ttl=0, result_ttl=0)
    assert setup[2].burst(own_queue.name) == 0
    # The horse's traceback never reaches the worker: the job is gone.
    assert record_of(store, failed)["job_status"] == "failed"
    assert record_of(store, failed)["error"] == {"type": "Error", "message": "failed"}
    assert record_of(store, done)["job_status"] == "done"
    assert record_of(store, done)["response"] is None
    # Either end deletes it: which one it reached is not known.
    assert record_of(store, either)["job_status"] == "running"


def test_a_failed_job_requeued_runs_again_as_its_next_attempt(
    setup: tuple[Queue, str, Workers],
    own_queue: Queue,
    store: SQLiteStore,
    tmp_path: Path,
) -> None:
    """``job.requeue()`` (what ``rq requeue`` does) runs a failed job again
    under its id: the run is the next attempt, and its states are recorded,
    whether the ``Job`` requeued is the one held since it was enqueued (its
    meta as it was then) or one fetched since."""
    from rq.job import Job

    held = own_queue.enqueue("rq_app.flaky", str(tmp_path / "runs"), 2)  # fails twice
    assert setup[2].burst(own_queue.name) == 0
    record = record_of(store, held.id)
    assert record["job_status"] == "failed" and record["attempt"] == 1
    held.requeue()
    assert setup[2].burst(own_queue.name) == 0
    record = record_of(store, held.id)
    assert record["job_status"] == "failed" and record["attempt"] == 2
    Job.fetch(held.id, connection=own_queue.connection).requeue()
    assert setup[2].burst(own_queue.name) == 0
    record = record_of(store, held.id)
    assert record["job_status"] == "done" and record["attempt"] == 3
    assert record["response"] == 3 and "error" not in record
    assert record["started_at"] <= record["finished_at"]


def test_a_job_returning_retry_past_its_max_is_failed_so(
    setup: tuple[Queue, str, Workers], own_queue: Queue, store: SQLiteStore
) -> None:
    job_id = send(own_queue, "again")
    assert setup[2].burst(own_queue.name) == 0
    record = record_of(store, job_id)
    assert record["job_status"] == "failed"
    assert record["attempt"] == 2
    assert record["error"] == {"type": "Error", "message": "max retries exceeded"}


def test_a_simple_worker_keeps_the_exception_of_a_job_rq_deleted(
    setup: tuple[Queue, str, Workers], own_queue: Queue, store: SQLiteStore
) -> None:
    job_id = send(own_queue, "explode", "gone", failure_ttl=0)
    assert setup[2].burst(own_queue.name, SIMPLE) == 0
    record = record_of(store, job_id)
    assert record["job_status"] == "failed"
    assert record["error"] == {"type": "ValueError", "message": "gone"}


def test_a_return_value_the_worker_cannot_load_is_done_and_the_worker_goes_on(
    setup: tuple[Queue, str, Workers], own_queue: Queue, store: SQLiteStore
) -> None:
    unreadable = send(own_queue, "receipt", "order-7", 12)
    after = send(own_queue, "resize", 3, 4)
    assert setup[2].burst(own_queue.name) == 0
    record = record_of(store, unreadable)
    assert record["job_status"] == "done"
    assert record["response"]["type"] is None
    assert record["response"]["repr"].startswith("<unreadable result: TypeError: ")
    assert record["response"]["repr"].endswith(">")
    assert record_of(store, after)["job_status"] == "done"


def test_each_run_of_a_repeated_job_is_an_attempt_that_ends_done(
    setup: tuple[Queue, str, Workers], own_queue: Queue, store: SQLiteStore
) -> None:
    from rq.repeat import Repeat

    job_id = send(own_queue, "resize", 5, 6, repeat=Repeat(times=2))
    assert setup[2].burst(own_queue.name) == 0
    record = record_of(store, job_id)
    assert record["job_status"] == "done"
    assert record["attempt"] == 3
    assert record["response"] == {"width": 5, "height": 6}
    assert record["started_at"] <= record["finished_at"]


def test_a_simple_recording_worker_records_every_state(
    setup: tuple[Queue, str, Workers], own_queue: Queue, store: SQLiteStore
) -> None:
    from rq import Retry

    done = send(own_queue, "resize", 640, 480)
    failed = send(own_queue, "explode", "no such file")
    retried = send(own_queue, "explode", "again", retry=Retry(max=1), failure_ttl=60)
    assert setup[2].burst(own_queue.name, SIMPLE) == 0
    record = record_of(store, done)
    assert record["job_status"] == "done"
    assert record["response"] == {"width": 640, "height": 480}
    assert record["progress"] == {"done": 3, "total": 3, "message": "step 3 of 3"}
    assert record_of(store, failed)["error"] == {
        "type": "ValueError",
        "message": "no such file",
    }
    assert record_of(store, retried)["job_status"] == "failed"
    assert record_of(store, retried)["attempt"] == 2


def reports_progress() -> int:
    """A job of the synchronous queue below: it reports, then returns."""
    from jobstatus_adapters.rq import progress

    progress(1, 2, "half")
    return 1


def test_a_dropped_progress_is_named_progress(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    from redis import Redis
    from rq import Queue

    from jobstatus_adapters.rq import install

    connection = Redis.from_url(redis_server.url)
    # A store nobody listens for: every change is dropped, with a warning.
    down = f"redis://127.0.0.1:{free_port()}/0?timeout=0.2"
    name = f"down-{uuid.uuid4().hex[:8]}"
    queue = install(Queue(name, connection=connection, is_async=False), down)
    try:
        with caplog.at_level("WARNING", logger="jobstatus.queues"):
            job = queue.enqueue(reports_progress)
    finally:
        connection.close()
    dropped = [
        r.getMessage().split(" not recorded")[0]
        for r in caplog.records
        if r.name == "jobstatus.queues"
    ]
    # Named as the other adapters name it, not "state".
    assert f"job {job.id}: progress" in dropped
    assert f"job {job.id}: state" not in dropped


class Nested:
    class Refused(Exception):
        pass


def traceback_of(raise_it: Callable[[], None]) -> str:
    """The text RQ stores for a job that raised: the formatted exception."""
    import traceback

    try:
        raise_it()
    except Exception as exc:
        return "".join(traceback.format_exception(exc))
    raise AssertionError("did not raise")


def test_the_error_read_back_from_rqs_traceback_is_the_exceptions() -> None:
    from jobstatus_adapters.rq import error_of

    def several_lines() -> None:
        raise ValueError("first line\nsecond: line")

    def qualified() -> None:
        raise Nested.Refused("no")

    def chained() -> None:
        try:
            raise KeyError("inner")
        except KeyError as exc:
            raise RuntimeError("outer") from exc

    def empty() -> None:
        raise OSError

    assert error_of(traceback_of(several_lines)) == {
        "type": "ValueError",
        "message": "first line\nsecond: line",
    }
    assert error_of(traceback_of(qualified)) == {"type": "Refused", "message": "no"}
    assert error_of(traceback_of(chained)) == {
        "type": "RuntimeError",
        "message": "outer",
    }
    assert error_of(traceback_of(empty)) == {"type": "OSError", "message": ""}

    def separators() -> None:
        raise ValueError("a\r\nb\x0bc\x1cd\u2028e  ")

    # As raised: only traceback's own "\n" splits it.
    assert error_of(traceback_of(separators)) == {
        "type": "ValueError",
        "message": "a\r\nb\x0bc\x1cd\u2028e  ",
    }

    def handled() -> None:
        try:
            raise KeyError("inner")
        except KeyError:
            raise RuntimeError("while handling") from None

    def during() -> None:
        try:
            raise KeyError("inner")
        except KeyError:
            raise LookupError("during")  # noqa: B904 - the implicit chain

    def remote() -> None:
        raise RuntimeError(
            "remote call failed:\nTraceback (most recent call last):\n"
            "  File \"w.py\", line 1, in f\nKeyError: 'x'"
        )

    assert error_of(traceback_of(handled)) == {
        "type": "RuntimeError",
        "message": "while handling",
    }
    assert error_of(traceback_of(during)) == {
        "type": "LookupError",
        "message": "during",
    }
    # A message that holds a traceback is the raised exception's, whole.
    assert error_of(traceback_of(remote)) == {
        "type": "RuntimeError",
        "message": "remote call failed:\nTraceback (most recent call last):\n"
        "  File \"w.py\", line 1, in f\nKeyError: 'x'",
    }
    # What RQ fails a job with outside the horse's exception: its last line.
    killed = "Work-horse terminated unexpectedly; waitpid returned 9 (signal 9); "
    assert error_of(killed) == {
        "type": "Error",
        "message": "Work-horse terminated unexpectedly; waitpid returned 9 (signal 9);",
    }
    assert error_of("") == {"type": "Error", "message": "failed"}


@pytest.mark.skipif(sys.version_info < (3, 11), reason="exception groups")
def test_the_error_of_an_exception_group_is_the_groups() -> None:
    from jobstatus_adapters.rq import error_of

    def group() -> None:
        raise ExceptionGroup("several", [ValueError("a"), KeyError("b")])  # noqa: F821

    def chained_group() -> None:
        try:
            group()
        except Exception as exc:
            raise ExceptionGroup("outer", [TypeError("c")]) from exc  # noqa: F821

    assert error_of(traceback_of(group)) == {
        "type": "ExceptionGroup",
        "message": "several (2 sub-exceptions)",
    }
    assert error_of(traceback_of(chained_group)) == {
        "type": "ExceptionGroup",
        "message": "outer (1 sub-exception)",
    }


def test_a_non_json_return_value_is_recorded_as_its_repr(
    setup: tuple[Queue, str, Workers], store: SQLiteStore
) -> None:
    job_id = send(setup[0], "stamp")
    record = reaches(store, job_id, "done")
    assert record["response"] == {
        "repr": "datetime.date(2024, 5, 17)",
        "type": "datetime.date",
    }


def test_stopping_a_running_job_cancels_it(
    setup: tuple[Queue, str, Workers], store: SQLiteStore, tmp_path: Path
) -> None:
    from rq.command import send_stop_job_command

    queue = setup[0]
    gate = tmp_path / "gate"
    job_id = send(queue, "hold", str(gate))
    reaches(store, job_id, "running")
    wait_for(lambda: Path(f"{gate}.pid").exists())
    send_stop_job_command(queue.connection, job_id)
    record = reaches(store, job_id, "cancelled")
    assert record["finished_at"] >= record["started_at"]


def test_a_work_horse_killed_mid_job_leaves_the_job_failed(
    setup: tuple[Queue, str, Workers], store: SQLiteStore, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    job_id = send(setup[0], "hold", str(gate))
    reaches(store, job_id, "running")
    wait_for(lambda: Path(f"{gate}.pid").exists())
    os.kill(int(Path(f"{gate}.pid").read_text()), signal.SIGKILL)
    record = reaches(store, job_id, "failed")
    assert "Work-horse terminated unexpectedly" in record["error"]["message"]


def test_two_workers_run_jobs_at_once(
    setup: tuple[Queue, str, Workers], store: SQLiteStore, tmp_path: Path
) -> None:
    queue, _, workers = setup
    workers.start()
    gate = tmp_path / "gate"
    jobs = [send(queue, "hold", str(gate)) for _ in range(2)]
    for job_id in jobs:  # both running at once: each worker holds one
        reaches(store, job_id, "running", 60)
    gate.touch()
    pids = {reaches(store, job_id, "done")["response"] for job_id in jobs}
    assert len(pids) == 2


def store_files_open(pid: int, database: str) -> int:
    """How many of ``pid``'s file descriptors are on the SQLite store's
    files (the database, its WAL and shared memory)."""
    count = 0
    for descriptor in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(descriptor)
        except OSError:  # closed in between
            continue
        count += target.startswith(database)
    return count


def parent_of(pid: int) -> int:
    # /proc/PID/stat: "pid (name) state ppid ...", the name may hold spaces.
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


def store_files_of_a_held_job(
    queue: Queue, store: SQLiteStore, gate: Path, report: bool
) -> tuple[int, int]:
    """Store files open in the horse of a held ``hold`` job, and in its
    worker; then the job is released."""
    database = str(store.path)
    job_id = send(queue, "hold", str(gate), report=report)
    pid_file = Path(f"{gate}.pid")
    wait_for(pid_file.exists)
    if report:
        wait_for(lambda: "progress" in (store.get(job_id) or {}))
    horse = int(pid_file.read_text())
    opened = (
        store_files_open(horse, database),
        store_files_open(parent_of(horse), database),
    )
    gate.touch()
    reaches(store, job_id, "done")
    return opened


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc")
def test_a_work_horse_opens_the_store_only_for_a_job_that_reports_progress(
    setup: tuple[Queue, str, Workers], store: SQLiteStore, tmp_path: Path
) -> None:
    silent = store_files_of_a_held_job(setup[0], store, tmp_path / "silent", False)
    reporting = store_files_of_a_held_job(setup[0], store, tmp_path / "report", True)
    # A horse holds what it inherited from its worker, which has the store
    # open (the worker may open more after the fork, never the horse); one
    # that opened the store holds more.
    assert silent[1] > 0
    assert silent[0] <= silent[1]
    assert reporting[0] > reporting[1] and reporting[0] > silent[0]


def test_a_return_value_whose_repr_raises_is_done_with_a_stand_in(
    setup: tuple[Queue, str, Workers], store: SQLiteStore
) -> None:
    # An int past Python's 4,300 digits for an int as text.
    job_id = str(setup[0].enqueue("builtins.pow", 10, 5000).id)
    shown = reaches(store, job_id, "done")["response"]
    assert shown["type"] == "builtins.int"
    assert shown["repr"].startswith("<int: repr() failed: ValueError: Exceeds")


def test_jobs_enqueued_many_at_once_are_queued(
    own_queue: Queue, store: SQLiteStore
) -> None:
    from rq import Queue

    jobs = own_queue.enqueue_many(
        [Queue.prepare_data("builtins.pow", (2, n)) for n in (3, 4)]
    )
    for job in jobs:  # no worker listens: recorded by the enqueue alone
        record = record_of(store, job.id)
        assert record["job_status"] == "queued" and record["task"] == "builtins.pow"


def test_a_synchronous_queue_records_every_state(
    setup: tuple[Queue, str, Workers], store: SQLiteStore
) -> None:
    from rq import Queue

    from jobstatus_adapters.rq import install

    name = f"sync-{uuid.uuid4().hex[:8]}"
    queue = install(
        Queue(name, connection=setup[0].connection, is_async=False), setup[1]
    )
    done = queue.enqueue("builtins.pow", 2, 10)
    failed = queue.enqueue("builtins.int", "not a number")
    # No result kept in Redis: the value is the run's own, not read back.
    unkept = queue.enqueue("builtins.pow", 3, 3, result_ttl=0)
    assert record_of(store, unkept.id)["response"] == 27
    record = record_of(store, done.id)
    assert record["job_status"] == "done" and record["response"] == 1024
    assert record["task"] == "builtins.pow"
    assert record["created_at"] <= record["started_at"] <= record["finished_at"]
    record = record_of(store, failed.id)
    assert record["job_status"] == "failed"
    assert record["error"]["type"] == "ValueError"
