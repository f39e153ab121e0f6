"""The event loop's pipe to redis-server (backends/redispipe.py), on a real
server: what it writes together, how it matches replies, how it fails."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from jobstatus_backends.redis import RedisStore
from jobstatus_backends.redispipe import Address, Pipe

from .helpers import (
    RedisServer,
    free_port,
    read_on_the_loop,
    redis_user,
    wait_for,
)

pytestmark = pytest.mark.redis

redis = pytest.importorskip("redis")
aredis = pytest.importorskip("redis.asyncio")

T = TypeVar("T")


def address_of(url: str, timeout: float = 1.0, **connection: Any) -> Address:
    address = Address.of(aredis.ConnectionPool.from_url(url, **connection), timeout)
    assert address is not None
    return address


def on_a_pipe(address: Address, use: Callable[[Pipe], Awaitable[T]]) -> T:
    async def main() -> T:
        pipe = Pipe(address)
        try:
            return await use(pipe)
        finally:
            pipe.close()

    return asyncio.run(main())


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[Any]:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    client.client_unpause()
    client.close()


def reads_processed(raw: Any) -> int:
    return int(raw.info("stats")["total_reads_processed"])


def test_the_commands_of_a_turn_go_in_one_write(
    redis_server: RedisServer, raw: Any
) -> None:
    raw.mset({f"pipe:{n}": f"value {n}" for n in range(200)})

    async def use(pipe: Pipe) -> tuple[list[Any], int, int]:
        await pipe.call("PING")  # connected
        before = reads_processed(raw)
        replies = await asyncio.gather(
            *(pipe.call("GET", f"pipe:{n}") for n in range(200))
        )
        together = reads_processed(raw) - before
        before = reads_processed(raw)
        for n in range(20):
            await pipe.call("GET", f"pipe:{n}")
        apart = reads_processed(raw) - before
        return replies, together, apart

    replies, together, apart = on_a_pipe(address_of(redis_server.url), use)
    # Each its own reply, in the order asked.
    assert replies == [f"value {n}" for n in range(200)]
    # The INFO calls are reads of the raw client's own: one each.
    assert together <= 3, together
    assert apart >= 20, apart


def test_an_error_reply_fails_its_own_command_only(
    redis_server: RedisServer, raw: Any
) -> None:
    raw.set("pipe:text", "t")
    raw.hset("pipe:hash", "f", "v")

    async def use(pipe: Pipe) -> list[Any]:
        return await asyncio.gather(
            pipe.call("GET", "pipe:text"),
            pipe.call("GET", "pipe:hash"),  # WRONGTYPE
            pipe.call("HGETALL", "pipe:hash"),
            return_exceptions=True,
        )

    text, wrong, flat = on_a_pipe(address_of(redis_server.url), use)
    assert text == "t"
    assert isinstance(wrong, redis.ResponseError) and "WRONGTYPE" in str(wrong)
    assert flat == ["f", "v"]


def test_bytes_that_are_not_utf8_read_as_replacement_characters(
    redis_server: RedisServer, raw: Any
) -> None:
    raw.set("pipe:bytes", b"ok \xff\xfe end")
    reply = on_a_pipe(
        address_of(redis_server.url), lambda p: p.call("GET", "pipe:bytes")
    )
    assert reply == "ok \ufffd\ufffd end"


def test_a_script_the_server_lost_is_sent_whole(
    redis_server: RedisServer, raw: Any
) -> None:
    lua = "return {KEYS[1], ARGV[1]}"

    async def use(pipe: Pipe) -> list[Any]:
        first = await pipe.script(lua, ["k"], ["a"])
        raw.script_flush()
        return [first, await pipe.script(lua, ["k"], ["b"])]

    assert on_a_pipe(address_of(redis_server.url), use) == [["k", "a"], ["k", "b"]]
    # And EVAL cached it again.
    digest = hashlib.sha1(lua.encode()).hexdigest()
    assert raw.script_exists(digest) == [True]


def test_a_silent_server_times_out_and_the_next_command_reconnects(
    redis_server: RedisServer, raw: Any
) -> None:
    raw.set("pipe:late", "here")
    assert redis_server.process is not None
    pid = redis_server.process.pid

    async def use(pipe: Pipe) -> tuple[float, BaseException | None, Any]:
        await pipe.call("PING")
        # Silent until it is let go on below, however late: a CLIENT PAUSE
        # that ends by itself may end first on a busy machine, and one of
        # every command cannot be ended early (CLIENT UNPAUSE waits too).
        os.kill(pid, signal.SIGSTOP)
        try:
            began = time.monotonic()
            failure: BaseException | None = None
            try:
                # Bounded here too: a pipe that waited for the reply would
                # wait until the server is let go on, after this returns.
                await asyncio.wait_for(pipe.call("GET", "pipe:late"), 10)
            except redis.TimeoutError as exc:
                failure = exc
            waited = time.monotonic() - began
        finally:
            os.kill(pid, signal.SIGCONT)
        # A new connection: the old one's late reply is answered to no one.
        return waited, failure, await pipe.call("GET", "pipe:late")

    waited, failure, after = on_a_pipe(address_of(redis_server.url, 0.3), use)
    assert isinstance(failure, redis.TimeoutError)
    # Its timeout (0.3 s), not a reply waited for; generous on a busy machine.
    assert 0.25 <= waited < 5, waited
    assert after == "here"


def test_a_killed_connection_fails_what_it_carried_then_reconnects(
    redis_server: RedisServer, raw: Any
) -> None:
    raw.set("pipe:k", "v")

    async def use(pipe: Pipe) -> tuple[BaseException | None, Any]:
        connection = await pipe.call("CLIENT", "ID")
        pending = pipe.call("BLPOP", "pipe:never", 5)  # in flight when killed
        await asyncio.sleep(0.1)
        raw.client_kill_filter(_id=connection)
        try:
            await pending
            failure: BaseException | None = None
        except redis.ConnectionError as exc:
            failure = exc
        return failure, await pipe.call("GET", "pipe:k")

    failure, after = on_a_pipe(address_of(redis_server.url, 10), use)
    assert isinstance(failure, redis.ConnectionError)
    assert after == "v"


def test_a_cancelled_command_leaves_the_next_reply_to_its_own_command(
    redis_server: RedisServer, raw: Any
) -> None:
    raw.mset({"pipe:a": "A", "pipe:b": "B"})

    async def use(pipe: Pipe) -> Any:
        await pipe.call("PING")
        raw.client_pause(300)
        first = asyncio.ensure_future(pipe.call("GET", "pipe:a"))
        await asyncio.sleep(0.05)
        first.cancel()
        return await pipe.call("GET", "pipe:b")

    assert on_a_pipe(address_of(redis_server.url), use) == "B"


def get_calls(raw: Any) -> int:
    return int(raw.info("commandstats").get("cmdstat_get", {}).get("calls", 0))


def test_a_command_asked_again_before_it_is_written_shares_its_reply(
    redis_server: RedisServer, raw: Any
) -> None:
    """Under one ``share`` key, until the pipe writes: one GET for four
    callers, a write made meanwhile seen by all (the command leaves after
    it), and a command asked after it left is sent again."""
    raw.set("pipe:shared", "old")

    async def use(pipe: Pipe) -> tuple[list[Any], list[Any], int, int]:
        await pipe.call("PING")
        before = get_calls(raw)
        first = pipe.call("GET", "pipe:shared", share="s")
        raw.set("pipe:shared", "new")  # acknowledged before the pipe writes
        asked = [first, *(pipe.call("GET", "pipe:shared", share="s") for _ in range(3))]
        # Futures of their own: each caller's, not one shared object.
        assert len({id(future) for future in asked}) == 4
        shared = await asyncio.gather(*asked)
        once = get_calls(raw) - before
        raw.set("pipe:shared", "newer")
        before = get_calls(raw)
        apart = await asyncio.gather(
            pipe.call("GET", "pipe:shared", share="s"),
            pipe.call("GET", "pipe:shared", share="other"),
            pipe.call("GET", "pipe:shared"),
            pipe.served("GET", "pipe:shared", share="s"),
        )
        return shared, apart, once, get_calls(raw) - before

    shared, apart, once, sent = on_a_pipe(address_of(redis_server.url), use)
    assert shared == ["new"] * 4
    assert once == 1
    run_id = raw.info("server")["run_id"]
    assert apart == ["newer", "newer", "newer", ("newer", run_id)]
    assert sent == 4  # another key, no key, served under the same key: apart


def test_a_shared_commands_error_reaches_each_caller_as_its_own(
    redis_server: RedisServer, raw: Any
) -> None:
    raw.hset("pipe:a-hash", "f", "v")

    async def use(pipe: Pipe) -> list[Any]:
        await pipe.call("PING")
        asked = [pipe.call("GET", "pipe:a-hash", share="h") for _ in range(3)]
        return await asyncio.gather(*asked, return_exceptions=True)

    errors = on_a_pipe(address_of(redis_server.url), use)
    assert all(isinstance(e, redis.ResponseError) for e in errors), errors
    assert all("WRONGTYPE" in str(e) for e in errors)
    # One exception raised in three tasks would gather all their tracebacks.
    assert len({id(e) for e in errors}) == 3


def test_nothing_listening_is_a_connection_error(redis_server: RedisServer) -> None:
    address = address_of(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(redis.ConnectionError, match="Error connecting"):
        on_a_pipe(address, lambda p: p.call("PING"))


def test_a_user_and_a_database_are_sent_first(
    redis_server: RedisServer, raw: Any
) -> None:
    other = redis.Redis.from_url(redis_server.url[:-1] + "5", decode_responses=True)
    other.set("pipe:db", "in five")
    other.close()
    with redis_user(raw, "pipe-user", "pipe-secret") as user:
        url = redis_server.url.replace("//", "//" + user)[:-1] + "5"
        got = on_a_pipe(address_of(url), lambda p: p.call("GET", "pipe:db"))
        assert got == "in five"
        wrong = url.replace("pipe-secret", "wrong")
        with pytest.raises(redis.AuthenticationError):
            on_a_pipe(address_of(wrong), lambda p: p.call("GET", "pipe:db"))


def test_a_reply_comes_with_the_run_id_of_its_server(
    redis_server: RedisServer, raw: Any
) -> None:
    raw.set("pipe:who", "here")
    reply = on_a_pipe(
        address_of(redis_server.url), lambda p: p.served("GET", "pipe:who")
    )
    assert reply == ("here", raw.info("server")["run_id"])


def test_a_user_denied_info_still_reads(redis_server: RedisServer, raw: Any) -> None:
    """The handshake's INFO refused: no run id, and the connection serves."""
    raw.set("pipe:who", "here")
    with redis_user(raw, "no-info", "no-info-secret", "info") as user:
        url = redis_server.url.replace("//", "//" + user)
        reply = on_a_pipe(address_of(url), lambda p: p.served("GET", "pipe:who"))
    assert reply == ("here", "")


def test_a_credential_provider_leaves_reads_to_threads(
    redis_server: RedisServer,
) -> None:
    from redis.credentials import UsernamePasswordCredentialProvider

    pool = aredis.ConnectionPool.from_url(
        redis_server.url, credential_provider=UsernamePasswordCredentialProvider()
    )
    assert Address.of(pool, 1.0) is None


def own_redis(
    tmp_path: Path, *options: str, tls: bool = False
) -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server started with ``options`` (``tls``: on its TLS port
    only), and its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server not found")
    port = free_port()
    ports = ["--port", "0", "--tls-port", str(port)] if tls else ["--port", str(port)]
    process = subprocess.Popen(
        [binary, *ports, "--bind", "127.0.0.1", "--save", "", *options],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def accepting() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    wait_for(accepting, 10)
    return process, f"{'rediss' if tls else 'redis'}://127.0.0.1:{port}/0"


def test_error_replies_are_redis_pys_own_exceptions(tmp_path: Path) -> None:
    """As its parser makes them: a full server is a ConnectionError (the
    store's 503), as on a thread, not a ResponseError (500)."""
    process, url = own_redis(tmp_path, "--maxclients", "2")
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    holders = []
    try:
        while len(holders) < 5:  # the clients it takes, however it counts
            holder = socket.create_connection(("127.0.0.1", port))
            holders.append(holder)
            holder.sendall(b"PING\r\n")
            if holder.recv(64).startswith(b"-ERR max number of clients"):
                break
        else:
            pytest.fail("redis-server took more clients than --maxclients")
        with pytest.raises(redis.exceptions.MaxClientsReachedError):
            on_a_pipe(address_of(url), lambda p: p.call("PING"))
    finally:
        for holder in holders:
            holder.close()
        process.terminate()
        process.wait(10)


def test_a_password_for_a_server_without_one_is_let_in(
    redis_server: RedisServer, raw: Any
) -> None:
    # As redis-py's own handshake: the default user, which has none.
    raw.set("pipe:open", "yes")
    url = redis_server.url.replace("//", "//:not-needed@")
    assert on_a_pipe(address_of(url), lambda p: p.call("GET", "pipe:open")) == "yes"


def test_a_refused_handshake_fails_what_waited_as_it_was_refused(
    redis_server: RedisServer,
) -> None:
    # Not NOAUTH, nor a timeout: the database's own refusal, at once (well
    # within a timeout of 10 s, however busy the machine).
    address = address_of(redis_server.url[:-1] + "99", 10.0)
    began = time.monotonic()
    with pytest.raises(redis.ResponseError, match="DB index is out of range"):
        on_a_pipe(address, lambda p: p.call("PING"))
    assert time.monotonic() - began < 5


def test_a_host_name_that_cannot_be_encoded_fails_at_once() -> None:
    # At once: well within the timeout (10 s), however busy the machine.
    address = address_of("redis://bad..host:6379/0", 10.0)
    began = time.monotonic()
    with pytest.raises(redis.ConnectionError, match="Error connecting"):
        on_a_pipe(address, lambda p: p.call("PING"))
    assert time.monotonic() - began < 5


def test_reads_over_tls(tmp_path: Path) -> None:
    """rediss:// with its CA: the pipe connects with the TLS context
    redis-py builds from the same URL, and the store reads on the loop."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl not found (.ci/run installs it)")

    def run(command: str) -> None:
        subprocess.run(
            [openssl, *command.split()], cwd=tmp_path, check=True, capture_output=True
        )

    new_key = "req -newkey rsa:2048 -nodes -days 1"
    run(f"{new_key} -x509 -keyout ca.key -out ca.crt -subj /CN=ca")
    run(f"{new_key} -keyout server.key -out server.csr -subj /CN=server")
    (tmp_path / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run(
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial"
        " -out server.crt -days 1 -extfile san.cnf"
    )
    process, base = own_redis(
        tmp_path,
        *("--tls-cert-file", "server.crt", "--tls-key-file", "server.key"),
        *("--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "no"),
        tls=True,
    )
    url = f"{base}?ssl_ca_certs={tmp_path / 'ca.crt'}"
    store = RedisStore.from_url(url)
    try:
        store.put({"job_id": "a", "job_status": "done"})
        assert store._async is not None  # the loop reads through a pipe

        async def read() -> str | None:
            return await read_on_the_loop(store, "a")

        assert asyncio.run(read()) == '"done"'
        address = address_of(base, ssl_ca_certs=str(tmp_path / "ca.crt"))
        assert address.tls is not None
        # Without the CA the certificate is refused, as by redis-py.
        with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            on_a_pipe(address_of(base), lambda p: p.call("PING"))
    finally:
        store.close()
        process.terminate()
        process.wait(10)
