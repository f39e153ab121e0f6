"""``redis://host:port/db``: one Redis shared by several jobstatus instances.

Keys, under a prefix (``jobstatus:`` unless ``?prefix=`` says otherwise):

- ``<prefix>job:<job_id>``: the whole record, as JSON;
- ``<prefix>updated``: a sorted set, job_id scored by "last written", so a
  listing is one ``ZRANGEBYSCORE`` — O(log n + matches);
- ``<prefix>status``: a hash job_id -> job_status (JSON text), so a listing
  never parses whole records;
- ``<prefix>version``: a counter every put increments;
- ``<prefix>epoch``: a random value the first put sets, so that the keys of
  another life of the store (after a ``FLUSHDB``, a restart without
  persistence) never pass for this one's.

A listing is one Lua script: the range, the statuses, and the answer's JSON
text joined inside Redis, in one round trip. Each instance keeps its last
listings (see ``ListingCache``); the script answers "unchanged" instead of
the text while the version -- the server's run id, the epoch and the
counter, which no reset, restart or failover repeats -- has not moved and
the kept listing still covers the window.

A put writes all five in one MULTI/EXEC, so record and index never disagree.
Redis unreachable or timing out raises ``StoreUnavailable`` (answered 503);
the connection pool reconnects by itself once Redis is back.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

import redis

from jobstatus_core import (
    ConfigError,
    Record,
    StoreError,
    StoreUnavailable,
    checked_job_id,
    jsontext,
)
from jobstatus_core.registry import redact

from . import storedjson
from .listingcache import ListingCache
from .urloptions import parse_store_url

DEFAULT_PREFIX = "jobstatus:"

# KEYS: the sorted set, the status hash, the version counter, the epoch;
# ARGV: the cutoff, and the version at which the caller keeps a listing exact
# for this cutoff ('' if it keeps none). Returns {version} when that listing
# is still the answer, else {version, the listing's JSON text, its oldest
# score or nil}; the version is '' while the store has no epoch (nothing put
# since it was emptied), and then nothing is kept. The run id changes with
# every start of a server, so a restart or a failover to a replica that had
# not seen the last puts cannot repeat a version. Job ids and statuses are
# joined as they are: the caller checks the text (see _checked).
LISTING_SCRIPT = """
local epoch = redis.call('GET', KEYS[4])
local version = ''
if epoch then
  local server = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
  version = server .. ':' .. epoch .. ':' .. (redis.call('GET', KEYS[3]) or '0')
  if version == ARGV[2] then return {version} end
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf', 'WITHSCORES')
local parts = {}
local oldest = false
for i = 1, #ids, 2 do
  local status = redis.call('HGET', KEYS[2], ids[i])
  if status then
    parts[#parts + 1] = '"' .. ids[i] .. '":' .. status
    if not oldest then oldest = ids[i + 1] end
  end
end
return {version, '{' .. table.concat(parts, ',') .. '}', oldest}
"""

# KEYS: the sorted set, the status hash; ARGV: the cutoff. Returns job ids
# and their raw statuses, alternately, for a listing built outside Redis.
PAIRS_SCRIPT = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')
local pairs = {}
for i = 1, #ids do
  local status = redis.call('HGET', KEYS[2], ids[i])
  if status then
    pairs[#pairs + 1] = ids[i]
    pairs[#pairs + 1] = status
  end
end
return pairs
"""

# A status endpoint must answer quickly, even "unavailable": fail fast.
DEFAULT_TIMEOUT_SECONDS = 1.0

T = TypeVar("T")


class RedisStore:
    #: redis-py's pool notices the new pid and reconnects in a forked child.
    survives_fork = True

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        client: redis.Redis | None = None,
        **connection: Any,
    ) -> None:
        """Give ``client`` to use a connection made elsewhere (Sentinel's
        ``master_for(...)``, say); ``url``, ``timeout`` and ``connection``
        (redis-py's own arguments) are then unused."""
        self.prefix = prefix
        self._updated = prefix + "updated"
        self._status = prefix + "status"
        self._version = prefix + "version"
        self._epoch = prefix + "epoch"
        self._listings = ListingCache()
        self._listings_lock = threading.Lock()
        if client is not None:
            self._client = client
        else:
            self._client = _connect(url, timeout, connection)
        self._listing = self._client.register_script(LISTING_SCRIPT)
        self._pairs = self._client.register_script(PAIRS_SCRIPT)

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        """``redis://[[user]:password@]host:port/db[?prefix=app:][&timeout=S]``.

        The options are those ``urloptions.OPTIONS`` declares (``rediss://``,
        TLS, adds the certificate ones); any other is refused.
        """
        parsed = parse_store_url(url)
        db = parsed.path.strip("/")
        if db and not db.isdigit():
            raise parsed.fail("the database must be a number")
        options = dict(parsed.options)
        prefix = options.pop("prefix", DEFAULT_PREFIX)
        timeout = options.pop("timeout", DEFAULT_TIMEOUT_SECONDS)
        # The rest are redis-py's own, checked already: given as arguments.
        return cls(url.split("?", 1)[0], prefix=prefix, timeout=timeout, **options)

    def _key(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def get(self, job_id: str) -> Record | None:
        raw = self._run(lambda: self._client.get(self._key(job_id)))
        return None if raw is None else storedjson.record(job_id, cast(str, raw))

    def changed_since(self, cutoff: float) -> list[tuple[str, Any]]:
        return list(json.loads(self.changed_since_json(cutoff)).items())

    def changed_since_json(self, cutoff: float) -> str:
        # One round trip: Redis walks the sorted set and joins the stored
        # status texts itself, as jsontext.join_members would -- or, when a
        # kept listing is still exact, answers only that it is.
        with self._listings_lock:
            known = self._listings.version
            kept = self._listings.get(known, cutoff)
        reply = self._run(
            lambda: self._listing(
                keys=[self._updated, self._status, self._version, self._epoch],
                args=[repr(cutoff), "" if kept is None else str(known)],
            )
        )
        if kept is not None and len(reply) == 1:
            return kept
        version, text, oldest = reply
        text = self._checked(cutoff, text)
        if version:
            with self._listings_lock:
                self._listings.put(
                    version, cutoff, None if oldest is None else float(oldest), text
                )
        return text

    def _checked(self, cutoff: float, text: str) -> str:
        """The joined listing ``text`` if it is strict JSON, else the listing
        rebuilt from the raw statuses, each read by ``storedjson.status``:
        a status edited by hand into bare text lists as that text."""
        try:
            storedjson.loads(text)
        except (ValueError, RecursionError):
            flat = cast(
                list[str],
                self._run(
                    lambda: self._pairs(
                        keys=[self._updated, self._status], args=[repr(cutoff)]
                    )
                ),
            )
            statuses = zip(flat[::2], map(storedjson.status, flat[1::2]), strict=True)
            return jsontext.encode(dict(statuses))
        return storedjson.ascii_only(text)

    def jobs(self) -> list[tuple[str, float]]:
        pairs = cast(
            list[tuple[str, float]],
            self._run(
                lambda: self._client.zrange(self._updated, 0, -1, withscores=True)
            ),
        )
        return [(job_id, float(score)) for job_id, score in pairs]

    def exists(self) -> bool:
        return True

    def check(self) -> None:
        """One PING: a wrong password or address stops the start."""
        try:
            self._client.ping()
        except redis.AuthenticationError:
            raise ConfigError("Redis authentication failed (wrong password?)") from None
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise ConfigError(f"Redis unreachable: {type(exc).__name__}") from None
        except redis.RedisError as exc:
            raise ConfigError(
                f"Redis error: {str(exc).splitlines()[0][:200]}"
            ) from None

    def put(self, record: Mapping[str, Any], *, at: float | None = None) -> None:
        job_id = checked_job_id(record)
        data = json.dumps(record, allow_nan=False)
        # The answers' own encoding: listings join this text as it is.
        status = jsontext.encode(record["job_status"])
        stamp = time.time() if at is None else at
        epoch = secrets.token_hex(8)

        def write() -> None:
            with self._client.pipeline(transaction=True) as tx:
                tx.set(self._key(job_id), data)
                tx.zadd(self._updated, {job_id: stamp})
                tx.hset(self._status, job_id, status)
                tx.incr(self._version)
                tx.set(self._epoch, epoch, nx=True)
                tx.execute()

        self._run(write)

    def close(self) -> None:
        self._client.close()

    def _run(self, action: Callable[[], T]) -> T:
        try:
            return action()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailable(f"Redis unreachable: {type(exc).__name__}") from exc
        except redis.RedisError as exc:
            raise StoreError(f"Redis error: {str(exc).splitlines()[0][:200]}") from exc


def _connect(url: str, timeout: float, connection: dict[str, Any]) -> redis.Redis:
    try:
        return redis.Redis.from_url(
            url,
            **connection,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=30,
            decode_responses=True,
            # Bytes that are not UTF-8 (a key edited by hand) read as U+FFFD.
            encoding_errors="replace",
        )
    except ValueError as exc:
        raise ConfigError(f"store URL {redact(url)!r}: {exc}") from None
