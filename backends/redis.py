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

import contextlib
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
from jobstatus_core.registry import redact

from . import storedjson
from .answertexts import AnswerTexts
from .redisasync import AsyncClients, Use
from .redispipe import Address, ConnectionLost, converted
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

# KEYS: the record, updated, status, changes, counts, the counter, the epoch,
# the tombstones, buried, expired.
# ARGV: job id, record text, status text, "last written", a new epoch (used
# if the store has none), the prefix of the status sets, the mode ('put',
# 'absent': only if the job does not exist, 'at': only at version ARGV[8]),
# the expected version, the channel, the prefix of the time sets. Returns
# the job's new version, or 0 when the condition did not hold. The position
# is published on the channel inside the script: a subscriber hears of
# exactly the writes that happened. Counts and status sets are only moved
# for a job already in the change order: one of the previous layout, not yet
# indexed, was never counted. A tombstone of the id is dropped: the job is
# alive again.
WRITE_SCRIPT = """
local epoch = redis.call('GET', KEYS[7])
local id = ARGV[1]
local old_position = redis.call('ZSCORE', KEYS[4], id)
if ARGV[7] ~= 'put' then
  local exists = redis.call('EXISTS', KEYS[1]) == 1
  if ARGV[7] == 'absent' then
    if exists then return 0 end
  else
    if not exists then return 0 end
    local current = (epoch or '') .. '-' ..
      string.format('%d', tonumber(old_position or '0'))
    if current ~= ARGV[8] then return 0 end
  end
end
if not epoch then redis.call('SET', KEYS[7], ARGV[5]) end
local old = redis.call('HGET', KEYS[3], id)
if old then
  redis.call('ZREM', ARGV[10] .. redis.sha1hex(old), id)
  if old_position then
    redis.call('ZREM', ARGV[6] .. redis.sha1hex(old), id)
    if redis.call('HINCRBY', KEYS[5], old, -1) <= 0 then
      redis.call('HDEL', KEYS[5], old)
    end
  end
end
if redis.call('HDEL', KEYS[8], id) == 1 then
  redis.call('ZREM', KEYS[9], id)
  redis.call('ZREM', KEYS[10], id)
end
local position = redis.call('INCR', KEYS[6])
redis.call('SET', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], id)
redis.call('HSET', KEYS[3], id, ARGV[3])
redis.call('ZADD', KEYS[4], position, id)
redis.call('ZADD', ARGV[6] .. redis.sha1hex(ARGV[3]), position, id)
redis.call('ZADD', ARGV[10] .. redis.sha1hex(ARGV[3]), ARGV[4], id)
redis.call('HINCRBY', KEYS[5], ARGV[3], 1)
redis.call('PUBLISH', ARGV[9], position)
return (epoch or ARGV[5]) .. '-' .. string.format('%d', position)
"""

# KEYS: updated, status, changes, epoch; ARGV: the record key prefix, then
# job ids. Returns the epoch ('' before the first write), then for each id:
# its record (nil if none), status, "last written" and position.
READ_SCRIPT = """
local out = {redis.call('GET', KEYS[4]) or ''}
for i = 2, #ARGV do
  local id = ARGV[i]
  out[#out + 1] = redis.call('GET', ARGV[1] .. id)
  out[#out + 1] = redis.call('HGET', KEYS[2], id)
  out[#out + 1] = redis.call('ZSCORE', KEYS[1], id)
  out[#out + 1] = redis.call('ZSCORE', KEYS[3], id)
end
return out
"""

# KEYS: the epoch, the counter; ARGV: a new epoch, set if the store has
# none (an empty store's mark already names the life its writes will have).
# Returns epoch, head and the server's run id, which changes with every start
# of a server: a failover to a replica that had not seen the last writes
# cannot repeat a mark. Empty where INFO is refused (an ACL, a renamed
# command): the mark is then epoch and head alone.
MARK_SCRIPT = """
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
end
local info = redis.pcall('INFO', 'server')
local server = type(info) == 'string' and string.match(info, 'run_id:(%x+)') or ''
return {epoch, redis.call('GET', KEYS[2]) or '0', server}
"""

# KEYS: updated, status; ARGV: where the window starts (the start of its
# cutoff's second: RedisStore.window). Returns each job's score and its
# '"job_id":status' member, alternately, in time order; jobs without a
# status are left out. Ids and statuses are joined as they are: the caller
# checks the text (see RedisStore._members).
WINDOW_SCRIPT = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf', 'WITHSCORES')
local out = {}
for i = 1, #ids, 2 do
  local status = redis.call('HGET', KEYS[2], ids[i])
  if status then
    out[#out + 1] = ids[i + 1]
    out[#out + 1] = '"' .. ids[i] .. '":' .. status
  end
end
return out
"""

# KEYS: updated, status; ARGV: where the window starts. Each job's score, id
# and raw status, in time order: the window built outside Redis, for
# hand-edited values.
PAIRS_SCRIPT = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf', 'WITHSCORES')
local out = {}
for i = 1, #ids, 2 do
  local status = redis.call('HGET', KEYS[2], ids[i])
  if status then
    out[#out + 1] = ids[i + 1]
    out[#out + 1] = ids[i]
    out[#out + 1] = status
  end
end
return out
"""

# KEYS: updated, status; ARGV: the cutoff. Statuses and their number of jobs
# in the window, alternately.
COUNTS_SCRIPT = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')
local counts = {}
for i = 1, #ids do
  local status = redis.call('HGET', KEYS[2], ids[i])
  if status then counts[status] = (counts[status] or 0) + 1 end
end
local out = {}
for status, n in pairs(counts) do
  out[#out + 1] = status
  out[#out + 1] = n
end
return out
"""

# KEYS: the change sets to walk, merged by position (each job is in one).
# ARGV: updated, status, epoch, the record key prefix, after, limit, cutoff
# ('' for none), '1' to add records, the most entries to walk. Returns the
# epoch, 1 when the sets are exhausted, the last position walked, then for
# each row: id, status, "last written", position, and its record if asked.
PAGE_SCRIPT = """
local limit = tonumber(ARGV[6])
local budget = tonumber(ARGV[9])
local cutoff = tonumber(ARGV[7])
local batch = math.max(limit, 64)
local heads = {}
for i = 1, #KEYS do
  heads[i] = {buf = {}, at = 1, from = tonumber(ARGV[5]), done = false}
end
local function peek(i)
  local h = heads[i]
  if h.at > #h.buf then
    if h.done then return nil end
    h.buf = redis.call('ZRANGEBYSCORE', KEYS[i],
      '(' .. string.format('%d', h.from), '+inf', 'WITHSCORES', 'LIMIT', 0, batch)
    h.at = 1
    if #h.buf < 2 * batch then h.done = true end
    if #h.buf == 0 then return nil end
    h.from = tonumber(h.buf[#h.buf])
  end
  return tonumber(h.buf[h.at + 1])
end
local out = {redis.call('GET', ARGV[3]) or '', 0, ARGV[5]}
local found, walked = 0, 0
while found < limit and walked < budget do
  local best, best_at = nil, nil
  for i = 1, #KEYS do
    local at = peek(i)
    if at and (not best_at or at < best_at) then best, best_at = i, at end
  end
  if not best then out[2] = 1; break end
  local h = heads[best]
  local id = h.buf[h.at]
  h.at = h.at + 2
  walked = walked + 1
  out[3] = string.format('%d', best_at)
  local score = redis.call('ZSCORE', ARGV[1], id)
  local status = redis.call('HGET', ARGV[2], id)
  if status and score and (not cutoff or tonumber(score) >= cutoff) then
    found = found + 1
    out[#out + 1] = id
    out[#out + 1] = status
    out[#out + 1] = score
    out[#out + 1] = best_at
    if ARGV[8] == '1' then out[#out + 1] = redis.call('GET', ARGV[4] .. id) end
  end
end
return out
"""

# KEYS: changes, status, counts, the counter; ARGV: the prefix of the status
# sets, the channel, then job ids of the previous layout. Gives each a position, its
# status set and its count; a job already in the change order (indexed, or
# written since) is left as it is, so running it twice, or from two
# instances at once, counts nothing twice.
UPGRADE_SCRIPT = """
local done = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  if not redis.call('ZSCORE', KEYS[1], id) then
    local position = redis.call('INCR', KEYS[4])
    redis.call('ZADD', KEYS[1], position, id)
    local status = redis.call('HGET', KEYS[2], id)
    if status then
      redis.call('ZADD', ARGV[1] .. redis.sha1hex(status), position, id)
      redis.call('HINCRBY', KEYS[3], status, 1)
    end
    done = done + 1
  end
end
if done > 0 then redis.call('PUBLISH', ARGV[2], redis.call('GET', KEYS[4])) end
return done
"""

# KEYS: updated, status; ARGV: the prefix of the time sets, then job ids.
# Puts each job in the time set of its status (the layout before 3 had
# none); ZADD of what is there already changes nothing, so two instances
# upgrading at once, or a write meanwhile, leave every job in one set.
TIMES_SCRIPT = """
for i = 2, #ARGV do
  local id = ARGV[i]
  local status = redis.call('HGET', KEYS[2], id)
  local at = redis.call('ZSCORE', KEYS[1], id)
  if status and at then
    redis.call('ZADD', ARGV[1] .. redis.sha1hex(status), at, id)
  end
end
return #ARGV - 1
"""

# KEYS: status, changes, epoch, counts; ARGV: "before", limit, the prefix of
# the time sets, 'only' (the statuses that follow) or 'but' (every status
# with jobs, from the counts, but those that follow), then status texts.
# Reads at most ``limit`` of the oldest jobs of each status wanted, never a
# job of another status; an entry whose job has another status now (left by
# a writer of a version before the time sets) is passed over. Returns the
# epoch, then for each row, oldest first (ties by job id): id, status, "last
# written", position.
STALE_SCRIPT = """
local before = '(' .. ARGV[1]
local limit = tonumber(ARGV[2])
local wanted = {}
if ARGV[4] == 'only' then
  for i = 5, #ARGV do wanted[#wanted + 1] = ARGV[i] end
else
  local skip = {}
  for i = 5, #ARGV do skip[ARGV[i]] = true end
  for _, status in ipairs(redis.call('HKEYS', KEYS[4])) do
    if not skip[status] then wanted[#wanted + 1] = status end
  end
end
local found = {}
for _, status in ipairs(wanted) do
  local key = ARGV[3] .. redis.sha1hex(status)
  local offset, kept = 0, 0
  while kept < limit do
    local batch = redis.call('ZRANGEBYSCORE', key, '-inf', before,
      'WITHSCORES', 'LIMIT', offset, limit)
    for i = 1, #batch, 2 do
      if redis.call('HGET', KEYS[1], batch[i]) == status then
        found[#found + 1] = {batch[i], tonumber(batch[i + 1]), batch[i + 1], status}
        kept = kept + 1
      end
    end
    if #batch < 2 * limit then break end
    offset = offset + limit
  end
end
table.sort(found, function(a, b)
  return a[2] < b[2] or (a[2] == b[2] and a[1] < b[1])
end)
local out = {redis.call('GET', KEYS[3]) or ''}
for i = 1, math.min(limit, #found) do
  local row = found[i]
  out[#out + 1] = row[1]
  out[#out + 1] = row[4]
  out[#out + 1] = row[3]
  out[#out + 1] = redis.call('ZSCORE', KEYS[2], row[1]) or '0'
end
return out
"""

# KEYS: updated, status, changes, counts, the counter, the epoch, the
# tombstones, buried, expired. ARGV: the record key prefix, the prefix of
# the status sets, the prefix of the time sets, the channel, expired_at,
# then job id and version, alternately. Each job still at its version is
# removed with every trace (record, indexes, its count) and leaves a
# tombstone at the next position; one PUBLISH of the last position tells
# subscribers. Returns id, status and position of each tombstone, in order.
EXPIRE_SCRIPT = """
local epoch = redis.call('GET', KEYS[6])
if not epoch then return {} end
local out = {}
local position = nil
for i = 6, #ARGV, 2 do
  local id = ARGV[i]
  local record = ARGV[1] .. id
  local at = redis.call('ZSCORE', KEYS[3], id)
  local status = redis.call('HGET', KEYS[2], id)
  if at and status and redis.call('EXISTS', record) == 1
      and epoch .. '-' .. string.format('%d', tonumber(at)) == ARGV[i + 1] then
    local digest = redis.sha1hex(status)
    redis.call('DEL', record)
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
    redis.call('ZREM', ARGV[2] .. digest, id)
    redis.call('ZREM', ARGV[3] .. digest, id)
    if redis.call('HINCRBY', KEYS[4], status, -1) <= 0 then
      redis.call('HDEL', KEYS[4], status)
    end
    position = string.format('%d', redis.call('INCR', KEYS[5]))
    redis.call('HSET', KEYS[7], id, position .. ' ' .. ARGV[5] .. ' ' .. status)
    redis.call('ZADD', KEYS[8], position, id)
    redis.call('ZADD', KEYS[9], ARGV[5], id)
    out[#out + 1] = id
    out[#out + 1] = status
    out[#out + 1] = position
  end
end
if position then redis.call('PUBLISH', ARGV[4], position) end
return out
"""

# KEYS: buried, the tombstones; ARGV: after, limit, the most entries to
# walk, '1' to filter by the statuses that follow. Returns 1 when buried is
# exhausted (else 0), the last position walked, then id and tombstone value
# of each found, in change order.
BURIED_SCRIPT = """
local limit = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
local filter = nil
if ARGV[4] == '1' then
  filter = {}
  for i = 5, #ARGV do filter[ARGV[i]] = true end
end
local out = {0, ARGV[1]}
local found, walked = 0, 0
while found < limit and walked < budget do
  local want = math.min(math.max(limit - found, 64), budget - walked)
  local batch = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. out[2], '+inf',
    'WITHSCORES', 'LIMIT', 0, want)
  local i = 1
  while i <= #batch and found < limit do
    walked = walked + 1
    out[2] = batch[i + 1]
    local value = redis.call('HGET', KEYS[2], batch[i])
    if value then
      local status = string.match(value, '^%S+ %S+ (.*)$')
      if not filter or filter[status] then
        out[#out + 1] = batch[i]
        out[#out + 1] = value
        found = found + 1
      end
    end
    i = i + 2
  end
  if #batch < 2 * want and i > #batch then
    out[1] = 1
    break
  end
end
return out
"""

# KEYS: the tombstones, buried, expired; ARGV: before, limit. Drops the
# tombstones that expired before ``before``, oldest first; returns how many.
FORGET_SCRIPT = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[1],
  'LIMIT', 0, ARGV[2])
for _, id in ipairs(ids) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
end
return #ids
"""

# A status endpoint must answer quickly, even "unavailable": fail fast.
DEFAULT_TIMEOUT_SECONDS = 1.0

#: How long the listener waits for a message before it looks whether it
#: should stop: the bound on how long ``close`` waits for it.
LISTEN_SECONDS = 0.1
#: The listener's wait before reconnecting doubles from the first to the last.
RECONNECT_FIRST_SECONDS = 0.1
RECONNECT_LAST_SECONDS = 5.0

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
        self._timeout = timeout
        self._subscribers: list[Callable[[], None]] = []
        self._listener: _Listener | None = None
        self._subscribe_lock = threading.Lock()
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
            self._client = _connect(url, timeout, connection)
            address = Address.of(
                _connect(url, timeout, connection, aredis.Redis).connection_pool,
                timeout,
            )
            if address is not None:
                self._async = AsyncClients(address)
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
        mark on the loop"). A store without an epoch yet takes the script,
        which sets one."""
        fetch = self._fetch(
            ("mark", "served"),
            lambda pipe, share: pipe.served(
                "MGET", self._epoch, self._counter, share=share
            ),
            shared=True,
        )
        (epoch, head), server = await self._awaited(fetch)
        if epoch is not None:
            return Mark(epoch, int(head or 0), server)
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
                        status,
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
        return {
            status: n
            for status, n in found.items()
            if n > 0 and (statuses is None or status in statuses)
        }

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
        return [self._epoch, self._counter], [secrets.token_hex(8)]

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
            raise ConfigError(f"Redis unreachable: {type(exc).__name__}") from None
        except redis.RedisError as exc:
            raise ConfigError(
                f"Redis error: {str(exc).splitlines()[0][:200]}"
            ) from None

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
            rows.append(Row(job_id, status, float(updated), f"{epoch}-{at}", at))
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
                        *pairs,
                    ],
                )
            ),
        )
        return [
            Tombstone(job_id, status, float(at), int(position))
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
        with self._subscribe_lock:
            self._subscribers.append(callback)
            listener = self._listener
            # A listener of the parent process is not running in a child.
            if listener is None or not listener.is_alive():
                listener = self._listener = _Listener(
                    self._client, self._channel, self._notify
                )
                listener.start()
            else:
                listener = None
        if listener is not None:
            listener.wait_listening(self._timeout)

        def unsubscribe() -> None:
            with self._subscribe_lock:
                if callback not in self._subscribers:
                    return
                self._subscribers.remove(callback)
                stopping = None
                if not self._subscribers:
                    stopping, self._listener = self._listener, None
            if stopping is not None:
                stopping.stop()

        return unsubscribe

    def _notify(self) -> None:
        # The listener's thread: a failing subscriber must not stop the others.
        with self._subscribe_lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback()
            except Exception:
                logger.exception("a change subscriber failed")

    def close(self) -> None:
        with self._subscribe_lock:
            self._subscribers.clear()
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
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
        self._mapped(partial(_reraise, error))
        raise AssertionError("_mapped raises what _reraise raised")

    def _run(self, action: Callable[[], T]) -> T:
        if nowait.asked():
            # On the event loop only what _read fetched: a round trip here
            # would hold the loop.
            raise WouldBlock("this Redis call runs on threads")
        return self._mapped(action)

    def _mapped(self, action: Callable[[], T]) -> T:
        try:
            return action()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailable(f"Redis unreachable: {type(exc).__name__}") from exc
        except redis.RedisError as exc:
            raise StoreError(f"Redis error: {str(exc).splitlines()[0][:200]}") from exc


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
        status,
        0.0 if updated is None else float(updated),
        f"{epoch}-{at}",
        at,
        record,
    )


def _tombstone(job_id: str, value: str) -> Tombstone:
    """A tombstone from its hash value, ``<position> <expired_at> <status>``."""
    position, expired_at, status = value.split(" ", 2)
    return Tombstone(job_id, status, float(expired_at), int(position))


class _Listener:
    """One pub/sub connection and the thread reading it.

    Calls ``notify`` for each message on ``channel``, and once after every
    subscription that follows a lost connection (redis-py's own silent
    reconnect included: it subscribes again, and the confirmation is seen
    here): a change made meanwhile was never published to it, and is read
    again by whoever the call wakes.
    """

    def __init__(
        self, client: redis.Redis, channel: str, notify: Callable[[], None]
    ) -> None:
        self._client = client
        self._channel = channel
        self._notify = notify
        self._stopping = threading.Event()
        self._listening = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="jobstatus-redis-listener", daemon=True
        )
        # redis-py leaves pubsub() unannotated; the object it makes is typed.
        self._new_pubsub = cast(Callable[[], redis.client.PubSub], client.pubsub)

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def wait_listening(self, timeout: float) -> None:
        self._listening.wait(timeout)

    def stop(self) -> None:
        self._stopping.set()
        # From a subscriber (on this thread) it ends after the call returns.
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def _run(self) -> None:
        delay = RECONNECT_FIRST_SECONDS
        # Only the very first subscription follows no gap: subscribe() waits
        # for it before it returns.
        first = True
        while not self._stopping.is_set():
            pubsub = self._new_pubsub()
            try:
                pubsub.subscribe(self._channel)
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=LISTEN_SECONDS)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        # From now on every write is heard.
                        self._listening.set()
                        delay = RECONNECT_FIRST_SECONDS
                        if first:
                            first = False
                            continue
                        # Subscribed again: writes made meanwhile went unheard.
                    self._notify()
            except Exception as exc:
                logger.warning(
                    "Redis change listener: %s; reconnecting in %.1f s",
                    type(exc).__name__,
                    delay,
                )
                first = False
                self._stopping.wait(delay)
                delay = min(delay * 2, RECONNECT_LAST_SECONDS)
            finally:
                with contextlib.suppress(Exception):
                    pubsub.close()


def _connect(
    url: str,
    timeout: float,
    connection: dict[str, Any],
    kind: type[ClientT] = redis.Redis,  # type: ignore[assignment]
) -> ClientT:
    """A client of ``kind`` (redis-py's, or its asyncio twin) for ``url``."""
    try:
        return kind.from_url(
            url,
            **_DRIVER,
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


def _as_dict(flat: list[str]) -> dict[str, str]:
    """HGETALL's reply as redis-py gives it: a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _reraise(exc: BaseException) -> NoReturn:
    """Raise what a fetch on the loop raised, where ``_mapped`` maps it."""
    raise exc
