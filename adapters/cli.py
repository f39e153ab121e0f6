"""The ``jobstatus`` command: serve the endpoints, or read and write a store."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from collections.abc import Sequence
from typing import Any

from jobstatus_backends import store_from_url
from jobstatus_core import (
    ConfigError,
    InvalidRecord,
    Settings,
    StatusService,
    Store,
    StoreError,
)
from jobstatus_core.errors import one_line_reason
from jobstatus_core.registry import redact
from jobstatus_core.window import cutoff

EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    stores: list[Store] = []
    try:
        settings = Settings.from_environ(os.environ, cwd=os.getcwd())
        for setting, url in _store_urls(args, settings):
            try:
                stores.append(store_from_url(url))
            except ConfigError as exc:
                raise ConfigError(f"{setting}: {exc}") from None
        return int(args.run(args, settings, *stores))
    except ConfigError as exc:
        print(f"jobstatus: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (StoreError, InvalidRecord) as exc:
        print(f"jobstatus: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"jobstatus: error: {one_line_reason(exc)}", file=sys.stderr)
        return 1
    finally:
        for store in stores:
            store.close()


def _store_urls(args: argparse.Namespace, settings: Settings) -> list[tuple[str, str]]:
    """The stores a command uses, each with the setting that named it."""
    if args.command == "migrate":
        return [("SRC_URL", args.src), ("DST_URL", args.dst)]
    return [("JOBSTATUS_STORE / --store", args.store or settings.store_url)]


def _serve(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    from . import wsgi_server
    from .service import make_service

    if args.interface == "wsgi":
        wsgi_server.require_server()  # before a key is printed for nothing

    keys = settings.api_keys
    if not keys:
        keys = (secrets.token_urlsafe(24),)
        # Printed once, here, so the operator can use it; never logged after.
        print(
            f"jobstatus: no API key configured; this run's key: {keys[0]}", flush=True
        )

    def build_service(store: Store) -> StatusService:
        return make_service(
            store,
            api_keys=keys,
            build_number=settings.build_number,
            default_since=settings.default_since,
            max_body=settings.max_body,
        )

    url = args.store or settings.store_url
    print(
        f"jobstatus: serving {redact(url)} on http://{args.host}:{args.port}"
        f" ({args.interface})",
        flush=True,
    )
    if args.interface == "wsgi":
        from .wsgi import WSGIApp

        # The store opened here proved the settings; each worker opens its own.
        store.close()
        wsgi_server.run(
            lambda: store_from_url(url),
            lambda opened: WSGIApp(build_service(opened)),
            host=args.host,
            port=args.port,
        )
        return 0

    import uvicorn

    from .starlette import create_app

    uvicorn.run(
        create_app(build_service(store)),
        host=args.host,
        port=args.port,
        log_level="warning",
    )
    return 0


def _record(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    response: Any = None
    if args.response is not None:
        try:
            response = json.loads(args.response)
        except ValueError as exc:
            print(f"jobstatus: error: --response is not JSON: {exc}", file=sys.stderr)
            return EXIT_USAGE
    store.put({"job_id": args.job_id, "job_status": args.status, "response": response})
    return 0


def _get(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    record = store.get(args.job_id)
    if record is None:
        print(f"jobstatus: job {args.job_id!r} not found", file=sys.stderr)
        return 1
    print(json.dumps(record, indent=2))
    return 0


def _list(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    if not store.exists():
        print("jobstatus: the store is missing (no jobs directory)", file=sys.stderr)
        return 1
    since = settings.default_since if args.since is None else args.since
    statuses = dict(store.changed_since(cutoff(time.time(), since)))
    print(json.dumps(statuses, indent=2))
    return 0


def _migrate(
    args: argparse.Namespace, settings: Settings, src: Store, dst: Store
) -> int:
    from jobstatus_backends.migrate import copy_jobs

    show = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        if done == total or done % 500 == 0:
            bar = "#" * (30 * done // total)
            print(f"\r[{bar:<30}] {done}/{total}", end="", file=sys.stderr, flush=True)

    report = copy_jobs(src, dst, progress if show else None)
    if show:
        print(file=sys.stderr)
    for job_id, reason in report.failed:
        print(f"jobstatus: failed to copy {job_id}: {reason}", file=sys.stderr)
    print(report.summary())
    return 1 if report.failed else 0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0: {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobstatus", description="Serve and inspect job statuses."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help)
        sub.add_argument(
            "--store",
            help="store URL (default: JOBSTATUS_STORE, else LOCAL_STORAGE_PATH, "
            "else ./jobstatus.db)",
        )
        return sub

    serve = command("serve", "serve the two status endpoints over HTTP")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--interface",
        choices=("asgi", "wsgi"),
        default="asgi",
        help="asgi: Starlette on uvicorn (default); wsgi: the WSGI app on gunicorn",
    )
    serve.set_defaults(run=_serve)

    record = command("record", "write a job record")
    record.add_argument("job_id")
    record.add_argument("status")
    record.add_argument("--response", help="the job's response, as JSON")
    record.set_defaults(run=_record)

    get = command("get", "print one job's record")
    get.add_argument("job_id")
    get.set_defaults(run=_get)

    listing = command("list", "print the status of every job changed recently")
    listing.add_argument("--since", type=_seconds, help="seconds to look back")
    listing.set_defaults(run=_list)

    migrate = commands.add_parser(
        "migrate", help="copy every job from one store to another"
    )
    migrate.add_argument("src", metavar="SRC_URL")
    migrate.add_argument("dst", metavar="DST_URL")
    migrate.set_defaults(run=_migrate)
    return parser


if __name__ == "__main__":
    sys.exit(main())
