"""``redis://host:port/db``: one Redis shared by several jobstatus instances.

Keys, under a prefix (``jobstatus:`` unless ``?prefix=`` says otherwise):

- ``<prefix>job:<job_id>``: the whole record, as JSON;
- ``<prefix>updated``: a sorted set, job_id scored by "last written": the
  Toolkit window is one ``ZRANGEBYSCORE``, O(log n + matches) (the
  matches of its cutoff's whole second);
- ``<prefix>status``: a hash job_id -> job_status (JSON text), so listings
  never parse whole records;
- ``<prefix>changes``: a sorted set, job_id scored by its position (its last
  change in the change order): pages walk it;
- ``<prefix>changes:<sha1 of the status text>``: the same, one set per
  status: pages with a status filter walk only theirs;
- ``<prefix>counts``: a hash status text -> number of jobs (kept counts);
- ``<prefix>version``: the change counter: every write takes the next
  position from it, and the mark's head is its value;
- ``<prefix>epoch``: a random value the first write sets, so that the keys
  of another life of the store (after a ``FLUSHDB``, a restart without
  persistence) never pass for this one's. A job's version is
  ``<epoch>-<position>``: unique across lives.
- ``<prefix>updated:<sha1 of the status text>``: the jobs of one status
  scored by "last written": retention's ``stale`` reads the oldest of the
  statuses it wants, never the jobs of the others;
- ``<prefix>tombstones``: a hash job_id -> ``<position> <expired_at>
  <status text>``, what an expired job leaves; ``<prefix>buried``: its ids
  scored by position (the feed's ``expired`` events), and
  ``<prefix>expired``: scored by expired_at (``forget``);
- ``<prefix>layout``: ``3`` once the change sets and the time sets per
  status cover every job.

Every write (``put``, ``swap``) is one Lua script maintaining all of them,
so record and indexes never disagree, across any number of instances; a
swap compares the job's version inside it. Reads are one script each, so a
row's version is always that of its record. Keys written by the previous
layout (no change sets, no counts) are indexed the first time an instance
uses the store (``_upgrade``). Redis unreachable or timing out raises
``StoreUnavailable`` (answered 503); the connection pool reconnects by
itself once Redis is back.

Every write script also PUBLISHes the new position on the channel
``<prefix>changes`` (channels and keys are separate names in Redis), so the
store is ``Notifying``: one listener thread per store object, while anybody
subscribes, calls every subscriber for each message, and once more after
each reconnection (a change made while it was away is then read again).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import secrets
import threading
import time
from bisect import bisect_left
from collections.abc import (
    Awaitable,
    Callable,
    Hashable,
    Iterator,
    Mapping,
    Sequence,
)
from functools import partial
from typing import Any, NoReturn, TypeVar, cast
from urllib.parse import urlsplit

import redis
import redis.asyncio as aredis

from jobstatus_core import (
    ConfigError,
    Mark,
    Query,
    Record,
    Row,
    Stale,
    StoreError,
    StoreUnavailable,
    Tombstone,
    TriesInline,
    VersionedStoreBase,
    Window,
    WouldBlock,
    checked_at,
    checked_job_id,
    jsontext,
    nowait,
)
from jobstatus_core.errors import first_line
from jobstatus_core.registry import redact

from . import storedjson
from .answertexts import AnswerTexts
from .outage import Outage, Unreachable
from .redisasync import AsyncClients, Use
from .redislistener import RedisListener
from .redispipe import Address, ConnectionLost, converted
from .redisscripts import (
    BURIED_SCRIPT,
    COUNTS_SCRIPT,
    EXPIRE_SCRIPT,
    FORGET_SCRIPT,
    MARK_SCRIPT,
    PAGE_SCRIPT,
    PAIRS_SCRIPT,
    READ_SCRIPT,
    STALE_SCRIPT,
    TIMES_SCRIPT,
    UPGRADE_SCRIPT,
    WINDOW_SCRIPT,
    WRITE_SCRIPT,
)
from .subscribers import Subscribers
from .urloptions import parse_store_url

#: Rows expired per script: a script holds Redis, so a purge of 1,000 jobs
#: is cut into runs of a few milliseconds that requests slip between.
EXPIRE_CHUNK = 100

try:
    from redis.driver_info import DriverInfo
except ImportError:  # redis-py before 7 reads its version once, at import
    _DRIVER: dict[str, Any] = {}
else:
    # Made once: redis-py otherwise reads its package metadata for every new
    # connection — milliseconds per job in a worker that forks per job (RQ).
    _DRIVER = {"driver_info": DriverInfo()}

logger = logging.getLogger("jobstatus.redis")

DEFAULT_PREFIX = "jobstatus:"

#: The value of ``<prefix>layout`` once every job is in the change sets and
#: in the time set of its status.
LAYOUT = "3"

#: Entries a page script walks at most per call, so that a page filtering
#: out most of what it walks never blocks Redis for long: the caller calls
#: again from where it stopped.
PAGE_BUDGET = 10_000

#: Jobs of the previous layout indexed per script call.
UPGRADE_BATCH = 1_000
#: Walks over ``updated`` at most: writers of the previous version still
#: running add jobs without positions, and must not keep an upgrade going.
UPGRADE_PASSES = 3


# A status endpoint must answer quickly, even "unavailable": fail fast.
DEFAULT_TIMEOUT_SECONDS = 1.0

T = TypeVar("T")
ClientT = TypeVar("ClientT", redis.Redis, aredis.Redis)


class RedisStore(VersionedStoreBase, TriesInline):
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
        self._changes = prefix + "changes"
        self._status_sets = prefix + "changes:"
        self._time_sets = prefix + "updated:"
        self._tombstones = prefix + "tombstones"
        self._buried = prefix + "buried"
        self._expired = prefix + "expired"
        self._counts = prefix + "counts"
        self._counter = prefix + "version"
        self._epoch = prefix + "epoch"
        self._layout = prefix + "layout"
        self._jobs = prefix + "job:"
        # A channel, not a key: the same name as the change set is no clash.
        self._channel = prefix + "changes"
        # Calls refused at once while Redis is down (``outage``).
        self._outage = Outage(timeout)
        # Whether this instance has seen the layout complete (see _upgrade).
        self._upgraded = False
        self._upgrade_lock = threading.Lock()
        # Reads on an event loop go through the loop's pipe (redisasync),
        # to the address redis-py reads from the same URL and arguments; a
        # client given by the host, or connections the pipe does not make
        # (a credential provider's), read on threads.
        self._async: AsyncClients | None = None
        # ``read_text``'s answers by stored text (a polled job's is not
        # parsed again).
        self._answer_texts = AnswerTexts()
        if client is not None:
            self._client = client
        else:
            shared = connection.get("max_connections")
            if shared is not None and not (isinstance(shared, int) and shared >= 2):
                # As the URL's option says it (urloptions.shared_count).
                raise ConfigError(
                    "max_connections: must be a whole number >= 2 (the change"
                    " listener keeps one while anybody waits or streams)"
                )
            self._client = _connect(url, timeout, connection)
            address = Address.of(
                _connect(url, timeout, connection, aredis.Redis).connection_pool,
                timeout,
            )
            if address is not None:
                self._async = AsyncClients(address)
        self._subscribers = Subscribers(
            partial(RedisListener, self._client, self._channel), timeout
        )
        register = self._client.register_script
        self._write_script = register(WRITE_SCRIPT)
        self._read_script = register(READ_SCRIPT)
        self._mark_script = register(MARK_SCRIPT)
        self._window_script = register(WINDOW_SCRIPT)
        self._pairs_script = register(PAIRS_SCRIPT)
        self._counts_script = register(COUNTS_SCRIPT)
        self._page_script = register(PAGE_SCRIPT)
        self._upgrade_script = register(UPGRADE_SCRIPT)
        self._times_script = register(TIMES_SCRIPT)
        self._stale_script = register(STALE_SCRIPT)
        self._expire_script = register(EXPIRE_SCRIPT)
        self._buried_script = register(BURIED_SCRIPT)
        self._forget_script = register(FORGET_SCRIPT)

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
        # redis-py would take one and drop the other without a word.
        login = urlsplit(url)
        given = {
            "db": bool(db),
            "username": bool(login.username),
            "password": login.password is not None,
        }
        for name, in_url in given.items():
            if in_url and name in parsed.options:
                raise parsed.fail(f"{name} given twice: in the URL and as {name}=")
        options = dict(parsed.options)
        prefix = options.pop("prefix", DEFAULT_PREFIX)
        timeout = options.pop("timeout", DEFAULT_TIMEOUT_SECONDS)
        # The rest are redis-py's own, checked already: given as arguments.
        return cls(url.split("?", 1)[0], prefix=prefix, timeout=timeout, **options)

    @property
    def _change_keys(self) -> list[str]:
        """What a write and an expiry both touch, in the order their scripts
        take them (after the record's key, for a write)."""
        return [
            self._updated,
            self._status,
            self._changes,
            self._counts,
            self._counter,
            self._epoch,
            self._tombstones,
            self._buried,
            self._expired,
        ]

    def _key(self, job_id: str) -> str:
        return self._jobs + job_id

    def _status_set(self, status: str) -> str:
        # Named by a digest: a status text may be long, or hold anything.
        return self._status_sets + hashlib.sha1(status.encode()).hexdigest()

    # -- reading -------------------------------------------------------------

    def get(self, job_id: str) -> Record | None:
        # One GET: the record alone needs no row.
        key = self._key(job_id)
        raw = self._read(
            ("get", key),
            lambda: self._client.get(key),
            lambda pipe, share: pipe.call("GET", key, share=share),
            shared=True,
        )
        return None if raw is None else storedjson.record(job_id, cast(str, raw))

    def read(self, job_id: str) -> Row | None:
        return self.read_many([job_id]).get(job_id)

    def read_many(self, job_ids: Sequence[str]) -> dict[str, Row]:
        ids = list(dict.fromkeys(job_ids))
        reply = self._read_reply(ids)
        rows = {}
        for n, job_id in enumerate(ids):
            text, *values = reply[1 + 4 * n : 5 + 4 * n]
            if text is not None:
                record = storedjson.record(job_id, text)
                rows[job_id] = _row(reply[0], job_id, values, record)
        return rows

    def read_text(self, job_id: str) -> tuple[Row, str] | None:
        """``RecordTexts``: the row (its record left out) and the record as
        answers write it, from ``read``'s round trip; a stored text seen
        before is not parsed again (``answertexts``)."""
        return self._text_of(job_id, self._read_reply([job_id]))

    async def read_text_async(self, job_id: str) -> tuple[Row, str] | None:
        """``AsyncReads``: ``read_text``'s round trip awaited on the loop's
        pipe, shared by the requests that ask for it before it is written."""
        with nowait.attempt():
            self._upgrade()  # refuses until a thread has checked the layout
        keys, args = self._read_args([job_id])
        fetch = self._fetch(
            ("read", job_id),
            lambda pipe, share: pipe.script(READ_SCRIPT, keys, args, share),
            shared=True,
        )
        return self._text_of(job_id, await self._awaited(fetch))

    async def mark_async(self) -> Mark:
        """``AsyncReads``: ``mark``'s round trip awaited on the loop's pipe,
        shared as ``read_text_async``'s: the epoch and the counter in one
        MGET, with the run id the pipe's connection learnt when it opened —
        ``MARK_SCRIPT``'s mark without its ``INFO`` (docs/stores.md, "the
        mark on the loop"). A store without an epoch or a counter yet (new,
        flushed, or evicted) takes the script, which sets them."""
        fetch = self._fetch(
            ("mark", "served"),
            lambda pipe, share: pipe.served(
                "MGET", self._epoch, self._counter, share=share
            ),
            shared=True,
        )
        (epoch, head), server = await self._awaited(fetch)
        if epoch is not None and head is not None:
            return Mark(epoch, int(head), server)
        keys, args = self._mark_args()
        fetch = self._fetch(
            ("mark",),  # as ``mark``'s, which may share its round trip
            lambda pipe, share: pipe.script(MARK_SCRIPT, keys, args, share),
            shared=True,
        )
        return _mark(await self._awaited(fetch))

    async def _awaited(self, fetch: Callable[[], Awaitable[Any]]) -> Any:
        """The reply of a round trip on the loop; its failure as ``_read``
        raises it (``_refused``)."""
        try:
            return await fetch()
        except Exception as error:
            self._refused(error)

    def _text_of(self, job_id: str, reply: list[Any]) -> tuple[Row, str] | None:
        text, *values = reply[1:5]
        if text is None:
            return None
        row = _row(reply[0], job_id, values, None)
        return row, self._answer_texts.of(job_id, text)

    def _read_reply(self, ids: list[str]) -> list[Any]:
        """``READ_SCRIPT``'s reply for ``ids``: the epoch, then per id its
        text, status, time and position (None each for no such job)."""
        self._upgrade()
        keys, args = self._read_args(ids)
        return cast(
            list[Any],
            self._read(
                ("read", *ids),
                lambda: self._read_script(keys=keys, args=args),
                lambda pipe, share: pipe.script(READ_SCRIPT, keys, args, share),
                shared=True,
            ),
        )

    def _read_args(self, ids: list[str]) -> tuple[list[str], list[str]]:
        """``READ_SCRIPT``'s keys and arguments for ``ids``."""
        return [self._updated, self._status, self._changes, self._epoch], [
            self._jobs,
            *ids,
        ]

    def window(self, cutoff: float) -> Window:
        """Read from the start of the second ``cutoff`` falls in, with each
        job's time, and cut at ``cutoff`` here: a kept listing ages out
        (``Listings``) for every request of a turn at once, and those
        asking about the same second share one round trip."""
        second = _second(cutoff)
        keys, args = self._window_args(second)
        reply = cast(
            list[str],
            self._read(
                ("window", second),
                lambda: self._window_script(keys=keys, args=args),
                lambda pipe, share: pipe.script(WINDOW_SCRIPT, keys, args, share),
                shared=True,
            ),
        )
        first = 2 * bisect_left(reply[::2], cutoff, key=float)
        oldest = float(reply[first]) if first < len(reply) else None
        return Window(self._members(cutoff, reply[first + 1 :: 2]), oldest)

    def _window_args(self, second: float) -> tuple[list[str], list[str]]:
        """``WINDOW_SCRIPT``'s and ``PAIRS_SCRIPT``'s keys and arguments
        for a window read from ``second`` (``_second``)."""
        return [self._updated, self._status], [repr(second)]

    def _members(self, cutoff: float, members: list[str]) -> list[str]:
        """``members`` if they join into strict JSON, else the members built
        again from the raw ids and statuses, each status read by
        ``storedjson.status``: a status edited by hand into bare text lists
        as that text, an id with a quote is escaped."""
        text = jsontext.join_members(members)
        try:
            storedjson.loads(text)
        except (ValueError, RecursionError):
            # Read as the window was, and cut at the same cutoff.
            second = _second(cutoff)
            keys, args = self._window_args(second)
            flat = cast(
                list[str],
                self._read(
                    ("pairs", second),
                    lambda: self._pairs_script(keys=keys, args=args),
                    lambda pipe, share: pipe.script(PAIRS_SCRIPT, keys, args, share),
                ),
            )
            first = 3 * bisect_left(flat[::3], cutoff, key=float)
            return [
                jsontext.encode(job_id) + ":" + jsontext.encode(storedjson.status(raw))
                for job_id, raw in zip(
                    flat[first + 1 :: 3], flat[first + 2 :: 3], strict=True
                )
            ]
        if text.isascii():
            return members
        return [storedjson.ascii_only(member) for member in members]

    def page(self, query: Query) -> list[Row]:
        self._upgrade()
        if query.statuses is None:
            sets = [self._changes]
        else:
            sets = [self._status_set(status) for status in sorted(query.statuses)]
        cutoff = "" if query.cutoff is None else repr(query.cutoff)
        width = 5 if query.records else 4
        rows: list[Row] = []
        after = query.after
        while sets and len(rows) < query.limit:
            args: list[str | int] = [
                self._updated,
                self._status,
                self._epoch,
                self._jobs,
                after,
                query.limit - len(rows),
                cutoff,
                "1" if query.records else "",
                PAGE_BUDGET,
            ]
            reply = cast(
                list[Any],
                self._run(partial(self._page_script, keys=sets, args=args)),
            )
            epoch, exhausted, after = reply[0], reply[1], int(reply[2])
            found = reply[3:]
            for n in range(0, len(found), width):
                job_id, status, updated, position = found[n : n + 4]
                record = (
                    storedjson.record(job_id, found[n + 4])
                    if query.records and found[n + 4] is not None
                    else None
                )
                rows.append(
                    Row(
                        job_id,
                        _status(status),
                        float(updated),
                        f"{epoch}-{position}",
                        int(position),
                        record,
                    )
                )
            if exhausted:
                break
        return rows

    def counts(
        self, statuses: frozenset[str] | None, cutoff: float | None
    ) -> dict[str, int]:
        if cutoff is None:
            # Kept: one hash, whatever the number of jobs.
            self._upgrade()
            kept = cast(
                dict[str, str],
                self._read(
                    ("counts",),
                    lambda: self._client.hgetall(self._counts),
                    lambda pipe, share: converted(
                        pipe.call("HGETALL", self._counts, share=share), _as_dict
                    ),
                    shared=True,
                ),
            )
            found = {status: int(n) for status, n in kept.items()}
        else:
            flat = cast(
                list[Any],
                self._run(
                    lambda: self._counts_script(
                        keys=[self._updated, self._status], args=[repr(cutoff)]
                    )
                ),
            )
            found = {
                status: int(n) for status, n in zip(flat[::2], flat[1::2], strict=True)
            }
        counted: dict[str, int] = {}
        for status, n in found.items():
            # The filter matches stored texts, as a page's does.
            if n > 0 and (statuses is None or status in statuses):
                key = storedjson.status_text(status)  # bare and JSON add up
                counted[key] = counted.get(key, 0) + n
        return counted

    def mark(self) -> Mark:
        keys, args = self._mark_args()
        return _mark(
            self._read(
                ("mark",),
                lambda: self._mark_script(keys=keys, args=args),
                lambda pipe, share: pipe.script(MARK_SCRIPT, keys, args, share),
                # The token only names an epoch not made yet: one suits all.
                shared=True,
            )
        )

    def _mark_args(self) -> tuple[list[str], list[str]]:
        """``MARK_SCRIPT``'s keys and arguments: the epoch a store without
        one takes is made per call, so the round trip's key leaves it out."""
        keys = [self._epoch, self._counter, self._changes, self._buried]
        return keys, [secrets.token_hex(8)]

    def jobs(self) -> list[tuple[str, float]]:
        pairs = cast(
            list[tuple[str, float]],
            self._run(
                lambda: self._client.zrange(self._updated, 0, -1, withscores=True)
            ),
        )
        return [(job_id, float(score)) for job_id, score in pairs]

    def check(self) -> None:
        """One PING: a wrong password or address stops the start."""
        try:
            self._client.ping()
        except redis.AuthenticationError:
            raise ConfigError("Redis authentication failed (wrong password?)") from None
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # Not a setting to fix, perhaps: a retry may find it up.
            raise Unreachable(f"Redis unreachable: {_first_line(exc)}") from None
        except redis.RedisError as exc:
            raise ConfigError(f"Redis error: {_first_line(exc)}") from None

    def advice(self) -> list[str]:
        """What ``INFO`` tells of settings that would lose jobs or the change
        order (``Advising``): docs/scaling.md, "What the Redis server needs"."""
        try:
            info = self._run(lambda: self._client.info("memory"))
        except StoreError as exc:
            if not isinstance(exc.__cause__, redis.ResponseError):
                raise
            return [
                "Redis refuses INFO to this user: a restart from a snapshot older"
                " than the last writes cannot be told, and a cursor held across"
                " one may skip changes; grant +info (docs/scaling.md)"
            ]
        policy = str(info.get("maxmemory_policy", ""))
        if policy.startswith("allkeys-"):
            return [
                f"Redis maxmemory-policy is {policy}: past maxmemory it evicts"
                " job records and the change order's keys; use noeviction or a"
                " volatile-* policy (docs/scaling.md)"
            ]
        return []

    # -- writing -------------------------------------------------------------

    def put(self, record: Mapping[str, Any], *, at: float | None = None) -> None:
        self._write(record, "put", "", at)

    def swapped(
        self,
        record: Mapping[str, Any],
        *,
        expected: str | None,
        at: float | None = None,
    ) -> str | None:
        if expected is None:
            return self._write(record, "absent", "", at)
        return self._write(record, "at", expected, at)

    def _write(
        self, record: Mapping[str, Any], mode: str, expected: str, at: float | None
    ) -> str | None:
        job_id = checked_job_id(record)
        at = checked_at(at)
        data = json.dumps(record, allow_nan=False)
        # The answers' own encoding: listings join this text as it is.
        status = jsontext.encode(record["job_status"])
        stamp = time.time() if at is None else at
        self._upgrade()
        version = self._run(
            lambda: self._write_script(
                keys=[self._key(job_id), *self._change_keys],
                args=[
                    job_id,
                    data,
                    status,
                    repr(stamp),
                    secrets.token_hex(8),
                    self._status_sets,
                    mode,
                    expected,
                    self._channel,
                    self._time_sets,
                ],
            )
        )
        return version if isinstance(version, str) else None

    # -- retention (Expiring) --------------------------------------------------

    def stale(self, query: Stale) -> list[Row]:
        """One script reading the time sets of the statuses wanted: at most
        ``limit`` entries of each (plus any left by an older writer), so a
        batch costs O(statuses x limit x log n), whatever the number of jobs
        of other statuses or younger ones."""
        self._upgrade()
        if query.statuses is None:
            mode, statuses = "but", query.other_than
        else:
            mode, statuses = "only", query.statuses - query.other_than
        if query.limit <= 0 or (mode == "only" and not statuses):
            return []
        reply = cast(
            list[str],
            self._run(
                lambda: self._stale_script(
                    keys=[self._status, self._changes, self._epoch, self._counts],
                    args=[
                        repr(query.before),
                        query.limit,
                        self._time_sets,
                        mode,
                        *sorted(statuses),
                    ],
                )
            ),
        )
        epoch = reply[0]
        rows = []
        for n in range(1, len(reply), 4):
            job_id, status, updated, position = reply[n : n + 4]
            at = int(float(position))
            rows.append(
                Row(job_id, _status(status), float(updated), f"{epoch}-{at}", at)
            )
        return rows

    def expire(self, rows: Sequence[Row], *, at: float) -> list[Tombstone]:
        """One script per chunk of ``EXPIRE_CHUNK`` rows: each job's version
        is compared and the job removed inside it, so another purger or a
        writer is either before it or after it, never in between."""
        if not rows:
            return []
        self._upgrade()
        left: list[Tombstone] = []
        for start in range(0, len(rows), EXPIRE_CHUNK):
            left += self._expire_chunk(rows[start : start + EXPIRE_CHUNK], at)
        return left

    def _expire_chunk(self, rows: Sequence[Row], at: float) -> list[Tombstone]:
        pairs = [value for row in rows for value in (row.job_id, row.version)]
        reply = cast(
            list[str],
            self._run(
                lambda: self._expire_script(
                    keys=self._change_keys,
                    args=[
                        self._jobs,
                        self._status_sets,
                        self._time_sets,
                        self._channel,
                        repr(float(at)),
                        secrets.token_hex(8),
                        *pairs,
                    ],
                )
            ),
        )
        return [
            Tombstone(job_id, storedjson.status_text(status), float(at), int(position))
            for job_id, status, position in zip(
                reply[::3], reply[1::3], reply[2::3], strict=True
            )
        ]

    def tombstones(self, job_ids: Sequence[str]) -> dict[str, Tombstone]:
        ids = list(dict.fromkeys(job_ids))
        if not ids:
            return {}
        values = cast(
            list[str | None],
            self._read(
                ("tombstones", *ids),
                lambda: self._client.hmget(self._tombstones, ids),
                lambda pipe, share: pipe.call(
                    "HMGET", self._tombstones, *ids, share=share
                ),
                shared=True,
            ),
        )
        return {
            job_id: _tombstone(job_id, value)
            for job_id, value in zip(ids, values, strict=True)
            if value is not None
        }

    def buried(self, query: Query) -> list[Tombstone]:
        """Walks ``buried`` from ``after`` at most PAGE_BUDGET entries per
        script, like ``page``: a filter that skips most never holds Redis."""
        filtered = query.statuses is not None
        statuses = sorted(query.statuses or ())
        found: list[Tombstone] = []
        after = query.after
        while len(found) < query.limit:
            args: list[str | int] = [
                after,
                query.limit - len(found),
                PAGE_BUDGET,
                "1" if filtered else "",
                *statuses,
            ]
            reply = cast(
                list[Any],
                self._run(
                    partial(
                        self._buried_script,
                        keys=[self._buried, self._tombstones],
                        args=args,
                    )
                ),
            )
            exhausted, after = int(reply[0]), int(float(reply[1]))
            found.extend(
                _tombstone(job_id, value)
                for job_id, value in zip(reply[2::2], reply[3::2], strict=True)
            )
            if exhausted:
                break
        return found

    def forget(self, *, before: float, limit: int) -> int:
        if limit <= 0:
            return 0
        return cast(
            int,
            self._run(
                lambda: self._forget_script(
                    keys=[self._tombstones, self._buried, self._expired],
                    args=[repr(float(before)), limit],
                )
            ),
        )

    # -- the previous layout ---------------------------------------------------

    def _upgrade(self) -> None:
        """Index the jobs of the previous layout (no change sets, no counts),
        once per instance; a store already complete costs one GET.

        Each batch is one script that skips jobs already indexed, so two
        instances upgrading at once, or writing meanwhile, count nothing
        twice, and a batch cut short by an outage is resumed by the next
        call. Jobs written meanwhile may shift the walk by rank: the walk
        is repeated until every job of ``updated`` has a position.
        """
        if self._upgraded:
            return
        if nowait.asked():
            # Not even the lock on the loop: a thread may hold it for a
            # round trip's timeout.
            raise WouldBlock("the Redis layout is checked on a thread")
        with self._upgrade_lock:
            if self._upgraded:
                return
            self._run(self._upgrade_all)
            self._upgraded = True

    def _upgrade_all(self) -> None:
        client = self._client
        if client.get(self._layout) == LAYOUT:
            return
        for _ in range(UPGRADE_PASSES):
            if client.zcard(self._changes) >= client.zcard(self._updated):
                break
            for ids in self._job_batches():
                self._upgrade_script(
                    keys=[self._changes, self._status, self._counts, self._counter],
                    args=[self._status_sets, self._channel, *ids],
                )
        # Layout 3: every job in the time set of its status (retention).
        for ids in self._job_batches():
            self._times_script(
                keys=[self._updated, self._status], args=[self._time_sets, *ids]
            )
        client.set(self._layout, LAYOUT)

    def _job_batches(self) -> Iterator[list[str]]:
        """Every job id, ``UPGRADE_BATCH`` at a time, walking ``updated`` by rank."""
        start = 0
        while True:
            ids = cast(
                list[str],
                self._client.zrange(self._updated, start, start + UPGRADE_BATCH - 1),
            )
            if not ids:
                return
            yield ids
            start += len(ids)

    # -- notifications ---------------------------------------------------------

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` after each write through any instance sharing the
        store (and once after the listener reconnects); the first subscriber
        returns once the listener hears the channel, or after the timeout
        when Redis is down (it keeps trying)."""
        return self._subscribers.add(callback)

    def close(self) -> None:
        self._subscribers.close()
        self._client.close()
        if self._async is not None:
            self._async.close()

    def _read(
        self,
        key: Hashable,
        action: Callable[[], T],
        use: Use,
        *,
        shared: bool = False,
    ) -> T:
        """A read: ``action`` with the sync client; on an event loop
        (``nowait``), the reply of ``use`` on the loop's pipe that
        an earlier attempt of the call awaited, else ``WouldBlock`` naming
        it. Errors either way are the same ``StoreError``s.

        ``shared``: ``key`` says all the command sends, so the requests that
        ask for the same key before the pipe writes it (at the end of the
        loop's turn) share its round trip — written after each of them
        asked (``Pipe.call``)."""
        if not nowait.asked():
            return self._run(action)
        found = nowait.fetched(key)
        if found is None:
            fetch = self._fetch(key, use, shared=shared)
            raise WouldBlock("a Redis round trip", key=key, fetch=fetch)
        ok, value = found
        if ok:
            return cast(T, value)
        self._refused(value)

    def _fetch(
        self, key: Hashable, use: Use, *, shared: bool
    ) -> Callable[[], Awaitable[Any]]:
        """The round trip of ``use`` on the loop's pipe, to await (``_read``)."""
        if self._async is None:
            raise WouldBlock("a Redis client given by the host reads on threads")
        clients, share = self._async, key if shared else None
        return lambda: clients.fetch(use, share)

    def _refused(self, error: Exception) -> NoReturn:
        """A round trip on the loop failed: Redis's answer raised as the
        store's error. Anything else (a loop shutting down, say), or a
        connection lost under it: ``WouldBlock``, and a thread tries, with
        the sync client's retries."""
        if not isinstance(error, redis.RedisError) or isinstance(error, ConnectionLost):
            raise WouldBlock(f"the round trip on the loop failed: {error!r}")
        # Not counted by ``_outage``: it counts the calls made on threads,
        # which wait for each other; those on the loop wait for nobody.
        self._mapped(partial(_reraise, error))
        raise AssertionError("_mapped raises what _reraise raised")

    def _run(self, action: Callable[[], T]) -> T:
        if nowait.asked():
            # On the event loop only what _read fetched: a round trip here
            # would hold the loop.
            raise WouldBlock("this Redis call runs on threads")
        with self._outage.call():
            return self._mapped(action)

    def _mapped(self, action: Callable[[], T]) -> T:
        try:
            return action()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise Unreachable(f"Redis unreachable: {type(exc).__name__}") from exc
        except redis.ResponseError as exc:
            # Out of memory is an answer, not an outage: reads go on, writes
            # wait for room. Before Redis 7 a script's OOM arrives inside a
            # plain ERR, not as redis-py's OutOfMemoryError.
            if isinstance(exc, redis.OutOfMemoryError) or _OOM in str(exc):
                raise StoreUnavailable("Redis is out of memory (maxmemory)") from None
            raise StoreError(f"Redis error: {_first_line(exc)}") from exc
        except redis.RedisError as exc:
            raise StoreError(f"Redis error: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    """``exc`` in one line; its type where it says nothing."""
    return first_line(exc) or type(exc).__name__


#: What Redis says refusing a command past maxmemory.
_OOM = "command not allowed when used memory > 'maxmemory'"


def _second(cutoff: float) -> float:
    """Where a window read for ``cutoff`` starts: the start of its second
    (``window``); a cutoff that is not finite, itself."""
    return float(math.floor(cutoff)) if math.isfinite(cutoff) else cutoff


def _mark(reply: Any) -> Mark:
    """A mark from ``MARK_SCRIPT``'s epoch, head and server run id."""
    epoch, head, server = cast(list[str], reply)
    return Mark(epoch, int(head), server)


def _row(epoch: str, job_id: str, values: list[Any], record: Record | None) -> Row:
    """A row from ``READ_SCRIPT``'s status, time and position of a job."""
    status, updated, position = values
    at = int(float(position)) if position is not None else 0
    return Row(
        job_id,
        _status(status),
        0.0 if updated is None else float(updated),
        f"{epoch}-{at}",
        at,
        record,
    )


def _status(text: str | None) -> str | None:
    """A row's status as rows carry it: JSON text, whatever was written by
    hand (``storedjson.status_text``)."""
    return None if text is None else storedjson.status_text(text)


def _tombstone(job_id: str, value: str) -> Tombstone:
    """A tombstone from its hash value, ``<position> <expired_at> <status>``."""
    position, expired_at, status = value.split(" ", 2)
    return Tombstone(
        job_id, storedjson.status_text(status), float(expired_at), int(position)
    )


def _connect(
    url: str,
    timeout: float,
    connection: dict[str, Any],
    kind: type[ClientT] = redis.Redis,  # type: ignore[assignment]
) -> ClientT:
    """A client of ``kind`` (redis-py's, or its asyncio twin) for ``url``."""
    settings: dict[str, Any] = {
        **_DRIVER,
        **connection,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": 30,
        "decode_responses": True,
        # Bytes that are not UTF-8 (a key edited by hand) read as U+FFFD.
        "encoding_errors": "replace",
    }
    try:
        if settings.get("max_connections") is None:
            return kind.from_url(url, **settings)
        # At the limit a call waits for a connection, up to the timeout, as
        # a PostgreSQL pool's does: redis-py's own pool fails it at once,
        # which read as Redis unreachable while Redis was fine.
        blocking = (
            redis.BlockingConnectionPool
            if kind is redis.Redis
            else aredis.BlockingConnectionPool
        )
        pool = blocking.from_url(url, timeout=timeout, **settings)
        # Each kind with its own pool's kind, as the two lines above pair them.
        client = kind(connection_pool=cast(Any, pool))
        client.auto_close_connection_pool = True  # as from_url's own
        return client
    except ValueError as exc:
        raise ConfigError(f"store URL {redact(url)!r}: {exc}") from None


def _as_dict(flat: list[str]) -> dict[str, str]:
    """HGETALL's reply as redis-py gives it: a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _reraise(exc: BaseException) -> NoReturn:
    """Raise what a fetch on the loop raised, where ``_mapped`` maps it."""
    raise exc
