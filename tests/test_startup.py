"""A bad setting stops ``jobstatus`` at start: one line naming it, exit 2.

Every case runs the real command in a real process, before and instead of a
server that would claim to be serving.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from jobstatus_backends import store_from_url
from jobstatus_backends.filesystem import FileStore
from jobstatus_backends.urloptions import parse_store_url
from jobstatus_core import ConfigError, Settings
from jobstatus_core.registry import redact

from .helpers import ServeProcess, clean_env, free_port, wait_for


def jobstatus(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobstatus_adapters.cli", *args],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_stopped(result: subprocess.CompletedProcess[str], *names: str) -> None:
    """Exit 2, nothing claimed on stdout, one line on stderr naming ``names``."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.startswith("jobstatus: error: ")
    assert result.stderr.count("\n") == 1, result.stderr
    for name in names:
        assert name in result.stderr, (name, result.stderr)


@pytest.mark.sqlite
@pytest.mark.parametrize(
    "args, env, names",
    [
        (["--port", "70000"], {}, ["--port", "70000"]),
        (["--port", "0"], {}, ["--port"]),
        (["--port", "http"], {}, ["--port"]),
        (["--port", "\uff18\uff10\uff18\uff10"], {}, ["--port"]),
        (["--port", " 8080"], {}, ["--port"]),
        ([], {"JOBSTATUS_MAX_BODY": "1_000"}, ["JOBSTATUS_MAX_BODY", "'1_000'"]),
        ([], {"JOBSTATUS_MAX_BODY": "\uff11\uff12"}, ["JOBSTATUS_MAX_BODY"]),
        ([], {"JOBSTATUS_DEFAULT_SINCE": "\u0663"}, ["JOBSTATUS_DEFAULT_SINCE"]),
        (["--host", "no-such-host.invalid"], {}, ["--host", "cannot resolve"]),
        (["--host", "192.0.2.1"], {}, ["--host", "cannot listen"]),
        (["--store", "sqlite:jobs.db?journal=off"], {}, ["--store", "'journal'"]),
        ([], {"JOBSTATUS_STORE": "sqlite:jobs.db?x=1"}, ["JOBSTATUS_STORE", "'x'"]),
        ([], {"JOBSTATUS_STORE": "memory://?x=1"}, ["JOBSTATUS_STORE", "'x'"]),
        (
            [],
            {"JOBSTATUS_STORE": "redis://127.0.0.1:1/0?decode_responses=no"},
            ["JOBSTATUS_STORE", "unknown option 'decode_responses'"],
        ),
        (
            [],
            {"JOBSTATUS_STORE": "redis://127.0.0.1:1/0?prefix=a&prefix=b"},
            ["JOBSTATUS_STORE", "'prefix' given twice"],
        ),
        (
            [],
            {"JOBSTATUS_STORE": "redis://127.0.0.1:1/0?db=1"},
            ["JOBSTATUS_STORE", "db given twice: in the URL and as db="],
        ),
        (
            [],
            {"JOBSTATUS_STORE": "redis://:pw@127.0.0.1:1/0?password=other"},
            ["JOBSTATUS_STORE", "password given twice"],
        ),
        ([], {"API_KEY": "clé"}, ["API_KEY", "printable ASCII"]),
        ([], {"JOBSTATUS_API_KEYS": "ok,naïve"}, ["JOBSTATUS_API_KEYS", "ASCII"]),
        (
            [],
            {"LOCAL_STORAGE_PATH": "/nope"},
            ["LOCAL_STORAGE_PATH: file store: '/nope' does not exist"],
        ),
        (
            [],
            {"LOCAL_STORAGE_PATH": "/dev/null"},
            ["LOCAL_STORAGE_PATH: file store: '/dev/null' is not a directory"],
        ),
    ],
)
def test_bad_serve_setting_stops_the_start(
    tmp_path: Path, args: list[str], env: dict[str, str], names: list[str]
) -> None:
    result = jobstatus("serve", "--port", str(free_port()), *args, cwd=tmp_path, **env)
    assert_stopped(result, *names)
    if "JOBSTATUS_STORE" not in env:
        assert "JOBSTATUS_STORE" not in result.stderr


@pytest.mark.filesystem
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_stops_the_start_before_the_store_opens(
    tmp_path: Path, workers: str
) -> None:
    """Checked first: the store's index of a million files takes a minute to
    build, and what it warns of (a file it skips) is not the error."""
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "broken.json").write_text("{not json")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = jobstatus(
            "serve",
            "--port",
            str(port),
            "--workers",
            workers,
            cwd=tmp_path,
            LOCAL_STORAGE_PATH=".",
        )
    assert_stopped(result, f"--port: {port} is already in use on 127.0.0.1")


@pytest.mark.filesystem
def test_a_jobs_entry_that_cannot_be_listed_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "jobs").write_text("a file where the jobs directory should be")
    result = jobstatus(
        "serve", "--port", str(free_port()), cwd=tmp_path, LOCAL_STORAGE_PATH="."
    )
    assert_stopped(result, "LOCAL_STORAGE_PATH", "cannot be listed")


@pytest.mark.filesystem
def test_local_storage_path_is_taken_literally(tmp_path: Path) -> None:
    # '%41' must not become 'A', '#' must not end the path, '?' must not
    # start options: each would serve another directory.
    for name, decoy in (("st%41", "stA"), ("st#x", "st"), ("st?index=off", "st")):
        for directory, status in ((name, "right"), (decoy, "wrong")):
            (tmp_path / directory / "jobs").mkdir(parents=True, exist_ok=True)
            store = FileStore(tmp_path / directory, index=False)
            store.put({"job_id": "j", "job_status": status})
            store.close()
        settings = Settings.from_environ(
            {"LOCAL_STORAGE_PATH": name}, cwd=str(tmp_path)
        )
        store = store_from_url(settings.store_url)
        try:
            assert store.get("j") == {"job_id": "j", "job_status": "right"}, name
        finally:
            store.close()
        shutil.rmtree(tmp_path / name)
        shutil.rmtree(tmp_path / decoy)


@pytest.mark.core
@pytest.mark.parametrize(
    "url, hidden",
    [
        ("redis://user:pw1@h:6379/0", "pw1"),
        ("redis://:pw2@h/0?prefix=a", "pw2"),
        ("redis://h/0?password=pw3&prefix=p", "pw3"),
        ("redis://token4@h/0", "token4"),
        ("redis://:pa/ss5@h:1/0", "ss5"),
        ("rediss://h/0?ssl_keyfile=k&auth_token=t6", "t6"),
        ("sqlite:x.db?api_key=k7", "k7"),
        ("custom://h?client_secret=s8", "s8"),
    ],
)
def test_redact_hides_every_secret(url: str, hidden: str) -> None:
    assert hidden not in redact(url)
    assert "***" in redact(url)


@pytest.mark.core
def test_errors_about_a_url_never_show_its_secret() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_store_url("redis://h/0?password=hunter2&bogus=1")
    assert "hunter2" not in str(caught.value) and "'bogus'" in str(caught.value)


@pytest.mark.core
def test_every_scheme_refuses_unknown_options() -> None:
    for url in (
        "memory://?x=1",
        "sqlite:///tmp/a.db?x=1",
        "file:///tmp?x=1",
        "redis://h/0?x=1",
        "rediss://h/0?x=1",
    ):
        with pytest.raises(ConfigError, match="unknown option 'x'"):
            store_from_url(url)


@pytest.fixture(scope="module")
def redis_with_password(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not found")
    port = free_port()
    options = ["--bind", "127.0.0.1", "--save", "", "--requirepass", "right-pass"]
    process = subprocess.Popen(
        [binary, "--port", str(port), *options],
        cwd=tmp_path_factory.mktemp("redis-auth"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def accepting() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    wait_for(accepting)
    yield f"127.0.0.1:{port}/0"
    process.terminate()
    process.wait(10)


@pytest.mark.redis
@pytest.mark.parametrize(
    "url",
    [
        "redis://:wrong-pass@{}",
        "redis://{}?password=wrong-pass",
        "redis://{}",
    ],
)
def test_a_wrong_redis_password_stops_the_start(
    tmp_path: Path, redis_with_password: str, url: str
) -> None:
    store = url.format(redis_with_password)
    result = jobstatus(
        "serve", "--port", str(free_port()), cwd=tmp_path, JOBSTATUS_STORE=store
    )
    assert_stopped(result, "JOBSTATUS_STORE", "authentication failed")
    assert "wrong-pass" not in result.stderr


@pytest.mark.redis
def test_the_start_line_hides_a_redis_password(
    tmp_path: Path, redis_with_password: str
) -> None:
    store = f"redis://{redis_with_password}?password=right-pass"
    running = ServeProcess(tmp_path, clean_env(JOBSTATUS_STORE=store, API_KEY="k"))
    try:
        answer = httpx.post(
            running.url + "/v1/toolkit/jobs/status", headers={"x-api-key": "k"}
        )
        assert answer.status_code == 200, answer.text
    finally:
        out, err = running.stop()
    assert "serving redis://" in err and "password=***" in err
    assert "right-pass" not in out + err


@pytest.mark.sqlite
def test_an_empty_local_storage_path_is_said_at_start(tmp_path: Path) -> None:
    # Empty is unset (the default SQLite store), said: a Toolkit operator
    # who exported it empty would see only 404s and {}.
    running = ServeProcess(tmp_path, clean_env(API_KEY="k", LOCAL_STORAGE_PATH=" "))
    _, err = running.stop()
    assert "LOCAL_STORAGE_PATH is empty: serving the default store" in err
    assert "serving sqlite://" in err


@pytest.mark.sqlite
def test_a_non_ascii_header_is_refused_not_crashed(tmp_path: Path) -> None:
    # Keys are ASCII (a non-ASCII one is refused at start, above); a client
    # that sends UTF-8 bytes in x-api-key over real HTTP gets a 401.
    running = ServeProcess(tmp_path, clean_env(API_KEY="plain-key"))
    try:
        for raw in ("clé".encode(), b"plain-key\xff", "plain-kéy".encode()):
            answer = httpx.post(
                running.url + "/v1/toolkit/jobs/status",
                headers=[(b"x-api-key", raw)],
            )
            assert answer.status_code == 401, raw
        good = httpx.post(
            running.url + "/v1/toolkit/jobs/status", headers={"x-api-key": "plain-key"}
        )
        assert good.status_code == 200
    finally:
        running.stop()
