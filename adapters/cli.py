"""The ``jobstatus`` command: serve the endpoints, or read and write a store."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import logging
import logging.config
import math
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from jobstatus_backends import (
    recording_store_from_url,
    registry,
    serving_store_from_url,
    store_from_url,
)
from jobstatus_core import (
    Advising,
    Checkable,
    ConfigError,
    Enumerable,
    Expiring,
    InvalidRecord,
    Presence,
    ProcessLocal,
    Settings,
    Store,
    StoreError,
)
from jobstatus_core import __version__ as version
from jobstatus_core.errors import one_line_reason
from jobstatus_core.params import decimal
from jobstatus_core.registry import redact
from jobstatus_core.retention import expiring_store, purge
from jobstatus_core.validation import JOB_ID_RULE, is_valid_job_id
from jobstatus_core.window import cutoff

from . import listen
from .logconfig import LEVELS, LOG_FORMATS
from .serverstack import ServerStack, server_stack, settle_heap

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from .client import JobStatusClient

EXIT_USAGE = 2
#: `jobstatus wait`: the job failed or was cancelled; the time was up; the
#: server could not be asked (refused, unreachable).
EXIT_FAILED = 1
EXIT_TIMED_OUT = 2
EXIT_UNANSWERED = 3
#: Commands that ask a server instead of opening a store.
CLIENT_COMMANDS = ("wait", "watch")
#: Commands that read or write one job: they open the store as a recorder
#: does (the file store without its index: no scan of every file first).
ONE_JOB_COMMANDS = ("record", "get")
#: Commands that read the store they are given, or remove from it, and never
#: make one: a store that is not there (a mistyped SQLite path) is refused,
#: where opening it would make it, empty.
READING_COMMANDS = ("get", "list", "purge")
DEFAULT_URL = "http://127.0.0.1:8080"
#: 128 + SIGINT, what shells report for a command stopped by Ctrl-C.
EXIT_INTERRUPTED = 130

logger = logging.getLogger("jobstatus.serve")

D = TypeVar("D", bound=str | None)

#: prometheus_client's multiprocess directory; read when it is first imported.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:
        # Ctrl-C: whatever was being written has been cleaned up on the way.
        print("jobstatus: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `jobstatus list | head`: the reader has all it wanted. Later
        # writes (the interpreter's own flush at exit) go nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _main(argv: Sequence[str] | None) -> int:
    # A status a console's encoding cannot show (a latin-1 locale) is shown
    # escaped, not a traceback halfway through a table.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    args = _parser().parse_args(argv)
    if args.command in CLIENT_COMMANDS:
        return _ask(args)
    if args.command == "serve":
        # Before any store opens: what it warns of (a job file skipped)
        # follows --log-format and --log-level as the server's lines do.
        # Its information waits for the start's checks: a bad setting is
        # still the one line on stderr.
        _logging_config(args, least="warning")
    stores: list[Store] = []
    try:
        settings = Settings.from_environ(os.environ, cwd=os.getcwd())
        if args.command == "serve":
            # Before the store opens: a million-file index takes a minute.
            _check_serving(args)
        if args.command in ONE_JOB_COMMANDS and not is_valid_job_id(args.job_id):
            # Before the store opens: as the API answers it, no store holds
            # such an id, and the store named may not even be there.
            raise ConfigError(f"job_id must be {JOB_ID_RULE}")
        opener = _opener(args)
        serve = args.command == "serve"
        for setting, url, reads in _store_urls(args, settings):
            try:
                if reads:
                    registry.require_present(url)
                store = opener(url)
                stores.append(store)
                if serve and args.workers > 1 and isinstance(store, ProcessLocal):
                    # Each worker would serve an empty store of its own.
                    raise ConfigError(
                        f"{redact(url)} is one process's store:"
                        " serve it with --workers 1"
                    )
                if isinstance(store, Checkable):
                    store.check()
                if serve and isinstance(store, Advising):
                    # Once, where an operator reads: not at each `record`.
                    for line in store.advice():
                        logger.warning("%s", line)
            except ConfigError as exc:
                raise ConfigError(f"{setting}: {exc}") from None
            except StoreError as exc:
                # Exit 1, not 2: a store down is no bad setting, and a
                # script retries it.
                raise StoreError(f"{setting}: {redact(url)!r}: {exc}") from None
        return int(args.run(args, settings, *stores))
    except ConfigError as exc:
        print(f"jobstatus: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (StoreError, InvalidRecord) as exc:
        print(f"jobstatus: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):
            raise
        print(f"jobstatus: error: {one_line_reason(exc)}", file=sys.stderr)
        return 1
    finally:
        for store in stores:
            store.close()


def _store_urls(
    args: argparse.Namespace, settings: Settings
) -> list[tuple[str, str, bool]]:
    """The stores a command uses, each with the setting that named it and
    whether the command only reads it (then it must be there already)."""
    if args.command == "migrate":
        return [("SRC_URL", args.src, True), ("DST_URL", args.dst, False)]
    reads = args.command in READING_COMMANDS
    if args.store is not None:
        if not args.store.strip():
            # Not the environment's store instead: a variable that expanded
            # to nothing (`--store "$URL"`) writes where nobody looks.
            raise ConfigError("--store: empty")
        return [("--store", args.store, reads)]
    return [(settings.store_setting, settings.store_url, reads)]


def _check_serving(args: argparse.Namespace) -> None:
    """``serve``'s own settings, each refused in one line."""
    from . import wsgi_server

    if args.interface == "wsgi":
        wsgi_server.require_server()  # before a key is printed for nothing
        if args.access_log:
            raise ConfigError("--access-log: only with --interface asgi")
    args.port = listen.port_number(args.port)
    listen.check_address(args.host, args.port)


def _opener(args: argparse.Namespace) -> Callable[[str], Store]:
    """How a command opens its stores."""
    if args.command in ONE_JOB_COMMANDS or _serves_from_workers(args):
        # To read or write one job, or only to prove the settings (serve's
        # workers each open their own): the file store's index, a read of
        # every file, would serve nobody.
        return recording_store_from_url
    if args.command == "serve":
        return serving_store_from_url  # listens while the index builds
    return store_from_url


def _serves_from_workers(args: argparse.Namespace) -> bool:
    """Whether ``serve`` answers from worker processes, each with a store of
    its own: the one it opens itself only proves the settings."""
    serve: bool = args.command == "serve"
    return serve and (args.interface == "wsgi" or args.workers > 1)


def _serve(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    if settings.retention.active:
        expiring_store(store)  # stops here, in one line, if it cannot expire
    # Before anything imports prometheus_client, which reads it once.
    metrics_dir = _metrics_directory(args.workers)
    with metrics_dir:
        return _serve_with_metrics(args, settings, store)


def _serve_with_metrics(
    args: argparse.Namespace, settings: Settings, store: Store
) -> int:
    log_config = _logging_config(args)

    keys = settings.api_keys
    if not keys:
        keys = (secrets.token_urlsafe(24),)
        # Printed once, here, so the operator can use it; never logged after.
        print(
            f"jobstatus: no API key configured; this run's key: {keys[0]}", flush=True
        )
    url = args.store or settings.store_url
    stack = server_stack()
    if settings.store_setting == "the default store" and not args.store:
        for name in ("JOBSTATUS_STORE", "LOCAL_STORAGE_PATH"):
            if name in os.environ:
                # Empty is unset, as the shell's VAR= is; a Toolkit
                # operator would otherwise see only 404s and {}.
                logger.warning("%s is empty: serving the default store", name)
    logger.info(
        "serving %s on http://%s:%s (%s, %d worker%s, retention %s)",
        redact(url),
        args.host,
        args.port,
        f"asgi on {stack.describe()}" if args.interface == "asgi" else "wsgi",
        args.workers,
        "" if args.workers == 1 else "s",
        _retention_said(settings, store),
    )
    with _purging(
        settings, store, url, shared=args.interface == "asgi" and args.workers == 1
    ):
        return _run_server(args, settings, store, url, keys, log_config, stack)


def _logging_config(args: argparse.Namespace, least: str = "debug") -> dict[str, Any]:
    """``serve``'s logging, applied here and handed to the server; its
    level ``least`` at the least."""
    from .logconfig import logging_config

    level = max(args.log_level, least, key=LEVELS.index)
    log_config = logging_config(
        level, access_log=args.access_log, log_format=args.log_format
    )
    logging.config.dictConfig(log_config)
    return log_config


@contextlib.contextmanager
def _purging(
    settings: Settings, store: Store, url: str, *, shared: bool
) -> Iterator[None]:
    """A purger thread for as long as the server runs, while a policy is set.

    It uses the server's own store where this process serves from it (one
    ASGI worker: ``memory://`` must be that very store); else a store of its
    own, since the one that proved the settings is closed for the workers.
    """
    if not settings.retention.active:
        yield
        return
    from .purging import Purger

    own = None
    if not shared:
        own = serving_store_from_url(url)
    purger = Purger(
        store if own is None else own,
        settings.retention,
        tombstones=settings.tombstones,
    )
    try:
        with purger:
            yield
    finally:
        if own is not None:
            own.close()


def _retention_said(settings: Settings, store: Store) -> str:
    """The policy, and where it deletes the Toolkit's own files: said at
    start, since the job files are the Toolkit's data."""
    from jobstatus_backends.filesystem import FileStore  # only serve needs it

    said = settings.retention.describe()
    if settings.retention.active and isinstance(store, FileStore):
        said += f", deleting expired job files in {store.jobs_dir}"
    return said


def _run_server(
    args: argparse.Namespace,
    settings: Settings,
    store: Store,
    url: str,
    keys: tuple[str, ...],
    log_config: dict[str, Any],
    stack: ServerStack,
) -> int:
    from .service import service_from_settings

    if args.interface == "wsgi":
        from . import wsgi_server
        from .wsgi import WSGIApp

        # The store opened here proved the settings; each worker opens its own.
        store.close()
        wsgi_server.run(
            lambda: serving_store_from_url(url),
            lambda opened: WSGIApp(
                service_from_settings(opened, settings, api_keys=keys),
                cors_origins=settings.cors_origins,
            ),
            host=args.host,
            port=args.port,
            workers=args.workers,
        )
        return 0

    import uvicorn

    from .shutdown import ClosesStore
    from .starlette import create_app

    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "log_config": log_config,
        "access_log": args.access_log,
        "loop": stack.loop,
        "http": stack.protocol(),
    }
    if args.workers == 1:
        app = create_app(
            service_from_settings(store, settings, api_keys=keys),
            cors_origins=settings.cors_origins,
            dashboard=settings.dashboard,
        )
        settle_heap()
        uvicorn.run(ClosesStore(app, store), **options)
        return 0
    # Workers are new processes: they read the store and the keys of this
    # run from the environment, as `app_from_environ` does.
    store.close()
    os.environ["JOBSTATUS_STORE"] = url
    os.environ["JOBSTATUS_API_KEYS"] = ",".join(keys)
    listen.run_workers(f"{__name__}:app_from_environ", args.workers, **options)
    return 0


@contextlib.contextmanager
def _metrics_directory(workers: int) -> Iterator[None]:
    """With several workers, a fresh directory where each writes its metrics
    (prometheus_client's multiprocess mode), removed when serving stops: a
    scrape of any worker then counts the requests of all of them."""
    if workers == 1:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="jobstatus-metrics-") as directory:
        os.environ[MULTIPROC_ENV] = directory
        try:
            yield
        finally:
            os.environ.pop(MULTIPROC_ENV, None)


def app_from_environ() -> ASGIApp:
    """The app a uvicorn worker of `jobstatus serve --workers N` serves."""
    from .service import service_from_settings
    from .shutdown import ClosesStore
    from .starlette import create_app

    settings = Settings.from_environ(os.environ, cwd=os.getcwd())
    store = serving_store_from_url(settings.store_url)
    app = create_app(
        service_from_settings(store, settings),
        cors_origins=settings.cors_origins,
        dashboard=settings.dashboard,
    )
    settle_heap()
    return ClosesStore(app, store)


#: The recorder's calls by status, and the options each takes beside
#: ``--attempt`` (any other status writes a whole record: ``--response``).
RECORDED = {
    "queued": (),
    "running": (),
    "progress": ("done", "total", "message"),
    "done": ("response",),
    "failed": ("error",),
    "cancelled": (),
    "meta": ("meta",),
}
#: The options that say something of one kind of status only.
STATE_OPTIONS = ("response", "error", "done", "total", "message", "meta")


def _record(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    job_id, status, attempt = args.job_id, args.status, args.attempt
    if not status or not status.isprintable():
        raise ConfigError("status must be printable text, not empty")
    # An option the status does not take is refused, not dropped: `record
    # J progress` wrote a whole record over the job, its response and
    # times lost, before progress was the recorder's call here.
    takes = RECORDED.get(status, ("response",))
    for name in STATE_OPTIONS:
        if getattr(args, name) is not None and name not in takes:
            raise ConfigError(f"--{name} does not go with {status!r}")
    if status == "progress" and args.done is None:
        raise ConfigError("progress takes --done N")
    if status == "meta" and attempt is not None:
        raise ConfigError("meta patches the current attempt: no --attempt")
    response = _json_option("--response", args.response)
    meta = _json_option("--meta", args.meta)
    if status == "meta" and not isinstance(meta, dict):
        raise ConfigError("--meta must be a JSON object")
    from jobstatus_backends.recorder import Recorder

    recorder = Recorder(store)
    if status == "queued":
        applied = recorder.queued(job_id, attempt=attempt)
    elif status == "running":
        applied = recorder.running(job_id, attempt=attempt)
    elif status == "progress":
        applied = recorder.progress(
            job_id, args.done, args.total, args.message, attempt=attempt
        )
    elif status == "done":
        applied = recorder.done(job_id, response, attempt=attempt)
    elif status == "failed":
        applied = recorder.failed(job_id, args.error or "failed", attempt=attempt)
    elif status == "cancelled":
        applied = recorder.cancelled(job_id, attempt=attempt)
    elif status == "meta":
        applied = recorder.meta(job_id, **meta)
    else:
        # Not a state the recorder knows: the whole record, as given.
        if attempt is not None:
            raise ConfigError(
                f"--attempt goes with the recorder's states, not {status!r}"
            )
        store.put({"job_id": job_id, "job_status": status, "response": response})
        return 0
    if not applied and status == "meta":
        # meta annotates a job: the only one it is refused for is none.
        print(f"jobstatus: job {job_id!r} not found: no meta recorded", file=sys.stderr)
        return 1
    if not applied:
        hint = "" if attempt is not None else "; a retry takes --attempt"
        print(
            f"jobstatus: job {job_id!r} is past {status!r}: not recorded"
            f" (out of order{hint})",
            file=sys.stderr,
        )
        return 1
    return 0


def _json_option(flag: str, given: str | None) -> Any:
    if given is None:
        return None
    try:
        return json.loads(given)
    except ValueError as exc:
        raise ConfigError(f"{flag} is not JSON: {exc}") from None


def _get(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    record = store.get(args.job_id)
    if record is None:
        # As GET /v1/job/{id} answers 410: retention removed it, and its
        # tombstone says how it ended and when it went.
        tomb = (
            store.tombstones([args.job_id]).get(args.job_id)
            if isinstance(store, Expiring)
            else None
        )
        if tomb is None:
            print(f"jobstatus: job {args.job_id!r} not found", file=sys.stderr)
        else:
            ended = _shown(tomb.record()["job_status"])
            print(
                f"jobstatus: job {args.job_id!r} expired: it was {ended},"
                f" removed at {_when(tomb.expired_at)} UTC",
                file=sys.stderr,
            )
        return 1
    print(json.dumps(record, indent=2))
    return 0


def _list(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    if isinstance(store, Presence) and not store.exists():
        print("jobstatus: the store is missing (no jobs directory)", file=sys.stderr)
        return 1
    since = settings.default_since if args.since is None else args.since
    statuses = dict(store.changed_since(cutoff(time.time(), since)))
    if args.json:
        print(json.dumps(statuses, indent=2))
        return 0
    written = (
        {job_id: at for job_id, at in store.jobs() if job_id in statuses}
        if isinstance(store, Enumerable)
        else {}
    )
    rows = [
        (job_id, _shown(status), _when(written.get(job_id)))
        for job_id, status in statuses.items()
    ]
    # Newest first: `jobstatus list | head` shows what just happened.
    rows.sort(key=lambda row: (row[2], row[0]), reverse=True)
    print(table(("JOB ID", "STATUS", "LAST WRITTEN (UTC)"), rows))
    return 0


def table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    widths = [
        max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)
    ]
    return "\n".join(
        "  ".join(
            cell.ljust(width) for cell, width in zip(row, widths, strict=True)
        ).rstrip()
        for row in (header, *rows)
    )


def _shown(status: Any) -> str:
    """A status on one line, as itself: JSON where it is not printable text
    (a newline or a terminal escape in a Toolkit file would split a row, or
    repaint the screen)."""
    if isinstance(status, str) and status.isprintable():
        return status
    return json.dumps(status, ensure_ascii=False)


def _when(at: float | None) -> str:
    if at is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(at, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _purge(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    policy = settings.retention
    if not policy.active and not isinstance(store, Expiring):
        # Nothing set, nothing to purge: not an error naming a setting
        # nobody set (a file store without ?expire=delete keeps no tombstone).
        print(f"retention: {policy.describe()}; the store expires no jobs")
        return 0
    expiring_store(store)  # one line naming ?expire=delete if it cannot
    purged = purge(
        store,
        policy,
        now=time.time(),
        tombstones=settings.tombstones,
        dry_run=args.dry_run,
    )
    verb = "would expire" if args.dry_run else "expired"
    print(f"retention: {policy.describe()}")
    rows = [(name, str(n)) for name, n in sorted(purged.expired.items())]
    if rows:
        print(table(("STATUS", "EXPIRED"), rows))
    print(f"{verb} {purged.total} job{'' if purged.total == 1 else 's'}")
    forgot = "would forget" if args.dry_run else "forgot"
    print(
        f"{forgot} {purged.forgotten} tombstone{'' if purged.forgotten == 1 else 's'}"
    )
    return 0


def _migrate(
    args: argparse.Namespace, settings: Settings, src: Store, dst: Store
) -> int:
    from jobstatus_backends.migrate import DestinationFailed, copy_jobs

    show = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        if done == total or done % 500 == 0:
            bar = "#" * (30 * done // total)
            print(f"\r[{bar:<30}] {done}/{total}", end="", file=sys.stderr, flush=True)

    try:
        report = copy_jobs(src, dst, progress if show else None)
    except DestinationFailed as exc:
        if show:
            print(file=sys.stderr)
        print(f"jobstatus: error: {exc}", file=sys.stderr)
        return 1
    if show:
        print(file=sys.stderr)
    for job_id, reason in report.failed:
        print(f"jobstatus: failed to copy {job_id}: {reason}", file=sys.stderr)
    print(report.summary())
    return 1 if report.failed else 0


def _ask(args: argparse.Namespace) -> int:
    """``wait`` and ``watch``: the API of a running server, through the client."""
    try:
        from .client import ClientError, JobStatusClient
        from .clientcalls import refused_setting
    except ImportError as exc:
        # Not 2: to ``wait`` that is "the time was up".
        print(f"jobstatus: error: {exc}", file=sys.stderr)
        return EXIT_UNANSWERED
    url_setting, url = _setting(args.url, "--url", "JOBSTATUS_URL", DEFAULT_URL)
    key_setting, api_key = _setting(args.api_key, "--api-key", "API_KEY", None)
    # A watch outlives server restarts; a wait gives up after the retries.
    retries = None if args.command == "watch" else 3
    # The client's warnings (a watch that cannot reach its server) as the
    # command's other lines.
    logging.basicConfig(format="jobstatus: %(message)s", level=logging.WARNING)
    # `wait` takes one id, `watch` a list of them (--job-id).
    asked = [args.job_id] if args.command == "wait" else args.job_id
    for job_id in asked:
        if not is_valid_job_id(job_id):
            # As `get` says it, checked before any request; not 2 (above).
            print(f"jobstatus: error: job_id must be {JOB_ID_RULE}", file=sys.stderr)
            return EXIT_UNANSWERED
    refused = refused_setting(url, api_key, None)
    if refused is not None:
        name, problem = refused  # said by the setting that gave it
        said = url_setting if name == "base_url" else key_setting
        print(f"jobstatus: error: {said}: {problem}", file=sys.stderr)
        return EXIT_UNANSWERED
    try:
        with JobStatusClient(url, api_key=api_key, retries=retries) as client:
            return int(args.run(args, client))
    except ClientError as exc:
        print(f"jobstatus: error: {exc}", file=sys.stderr)
        return EXIT_UNANSWERED


def _setting(given: str | None, flag: str, env: str, default: D) -> tuple[str, str | D]:
    """A client setting and where it came from: the flag, else the
    environment variable (empty is unset), else the default."""
    if given:
        return flag, given
    return env, os.environ.get(env) or default


def _wait(args: argparse.Namespace, client: JobStatusClient) -> int:
    from .client import Gone

    try:
        waited = client.wait(args.job_id, timeout=args.timeout)
    except Gone as gone:
        # Expired: it ended, and retention removed it since; its tombstone
        # says how it ended. The server was asked: not exit 3.
        ended = (gone.tombstone or {}).get("job_status")
        shown = "-" if ended is None else _shown(ended)
        print(f"{args.job_id} {shown} (expired)", flush=True)
        return 0 if ended == "done" else EXIT_FAILED
    record = waited.record
    status = None if record is None else record.get("job_status")
    print(f"{args.job_id} {'-' if status is None else _shown(status)}", flush=True)
    if not waited.met:
        return EXIT_TIMED_OUT
    return 0 if status == "done" else EXIT_FAILED


def _watch(args: argparse.Namespace, client: JobStatusClient) -> int:
    statuses = [part for value in args.status for part in value.split(",") if part]
    for change in client.watch(
        status=statuses or None,
        job_ids=args.job_id or None,
        since_seconds=args.since,
    ):
        if change.kind == "reset":
            print(
                "(the store began again: jobs shown before may be gone;"
                " its jobs follow)",
                flush=True,
            )
            continue
        data = change.data
        at = data.get("updated_at") if change.kind == "job" else data.get("expired_at")
        line = f"{_when(at)}  {change.job_id}  {_shown(change.job_status)}"
        if change.kind == "expired":
            line += "  (expired)"
        print(line, flush=True)
    return 0


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0: {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = decimal(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0: {text!r}")
    return value


def _whole(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1: {text!r}")
    return int(text)


def _amount(text: str) -> float:
    """A progress amount: a finite number >= 0, as the recorder takes it."""
    try:
        value = decimal(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a number >= 0: {text!r}")
    return int(value) if value.is_integer() else value


STORE_HELP = (
    "store URL (default: $JOBSTATUS_STORE, else file://$LOCAL_STORAGE_PATH, "
    "else sqlite:///<working dir>/jobstatus.db)"
)


class _Parser(argparse.ArgumentParser):
    """Says a usage error in one line, as a bad setting is said, where
    argparse would print the whole usage block first. Its subcommands'
    parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jobstatus", description="Serve and inspect job statuses.")
    parser.add_argument("--version", action="version", version=f"jobstatus {version}")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument("--store", metavar="URL", help=STORE_HELP)
        return sub

    serve = command("serve", "serve the job-status API over HTTP")
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: %(default)s)",
    )
    serve.add_argument(
        "--port",
        default="8080",
        help="port to listen on, 1-65535 (default: %(default)s)",
    )
    serve.add_argument(
        "--interface",
        choices=("asgi", "wsgi"),
        default="asgi",
        help="asgi: Starlette on uvicorn; wsgi: the WSGI app on waitress"
        " (default: %(default)s)",
    )
    serve.add_argument(
        "--workers",
        type=_whole,
        default=1,
        metavar="N",
        help="server processes, each with its own store (default: %(default)s)",
    )
    serve.add_argument(
        "--log-level",
        choices=LEVELS,
        default="info",
        help="log lines on stderr from this level up (default: %(default)s)",
    )
    serve.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="text: one plain line per event; json: one JSON object per line"
        " (time, level, logger, message) (default: %(default)s)",
    )
    serve.add_argument(
        "--access-log",
        action="store_true",
        help="log every request, asgi only (default: off)",
    )
    serve.set_defaults(run=_serve)

    record = command(
        "record",
        "record a job's state (queued, running, progress, done, failed,"
        " cancelled, meta: in order, as the recording API does; any other"
        " status: the whole record)",
    )
    record.add_argument("job_id")
    record.add_argument("status")
    record.add_argument(
        "--response",
        metavar="JSON",
        help="with done or a status of your own: the job's response (default: null)",
    )
    record.add_argument(
        "--error",
        metavar="TEXT",
        help="with failed: the error message (default: 'failed')",
    )
    record.add_argument(
        "--done",
        type=_amount,
        metavar="N",
        help="with progress: how much is done (no default: progress needs it)",
    )
    record.add_argument(
        "--total",
        type=_amount,
        metavar="N",
        help="with progress: out of how much (default: unknown)",
    )
    record.add_argument(
        "--message",
        metavar="TEXT",
        help="with progress: what it is doing (default: none)",
    )
    record.add_argument(
        "--meta",
        metavar="JSON",
        help="with meta: a JSON object merged into the job's meta"
        " (no default: meta needs it)",
    )
    record.add_argument(
        "--attempt",
        type=_whole,
        metavar="N",
        help="the attempt this state belongs to (default: the job's current one;"
        " a higher one starts a retry)",
    )
    record.set_defaults(run=_record)

    get = command("get", "print one job's record")
    get.add_argument("job_id")
    get.set_defaults(run=_get)

    listing = command("list", "print the status of every job changed recently")
    listing.add_argument(
        "--since",
        type=_seconds,
        metavar="SECONDS",
        help="seconds to look back (default: $JOBSTATUS_DEFAULT_SINCE, else 600)",
    )
    listing.add_argument(
        "--json",
        action="store_true",
        help="print a JSON object job_id -> status, for scripts (default: a table)",
    )
    listing.set_defaults(run=_list)

    purging = command(
        "purge",
        "apply the retention policy ($JOBSTATUS_RETENTION) once: expire old"
        " jobs, forget old tombstones",
    )
    purging.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would be removed and remove nothing (default: off)",
    )
    purging.set_defaults(run=_purge)

    migrate = commands.add_parser(
        "migrate",
        help="copy every job from one store to another",
        description="copy every job from one store to another",
    )
    migrate.add_argument("src", metavar="SRC_URL", help="the store to copy from")
    migrate.add_argument("dst", metavar="DST_URL", help="the store to copy into")
    migrate.set_defaults(run=_migrate)

    def remote(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument(
            "--url",
            help=f"the server's base URL (default: $JOBSTATUS_URL, else {DEFAULT_URL})",
        )
        sub.add_argument(
            "--api-key",
            metavar="KEY",
            help="the API key (default: $API_KEY; the variable keeps it out of ps)",
        )
        return sub

    wait = remote(
        "wait",
        "wait until a job finishes: exit 0 when done, 1 when failed or cancelled,"
        " 2 when the time is up, 3 when the server cannot be asked",
    )
    wait.add_argument("job_id")
    wait.add_argument(
        "--timeout",
        type=_positive_seconds,
        metavar="SECONDS",
        help="give up after this long (default: wait as long as it takes)",
    )
    wait.set_defaults(run=_wait)

    watch = remote("watch", "print each change of the jobs as it happens, a line each")
    watch.add_argument(
        "--status",
        action="append",
        default=[],
        help="only these statuses (repeat it, or separate by commas; default: every"
        " status)",
    )
    watch.add_argument(
        "--job-id",
        action="append",
        default=[],
        help="only this job (repeatable; default: every job)",
    )
    watch.add_argument(
        "--since",
        type=_seconds,
        metavar="SECONDS",
        help="first print the jobs written this recently (default: 600)",
    )
    watch.set_defaults(run=_watch)
    return parser


if __name__ == "__main__":
    sys.exit(main())
