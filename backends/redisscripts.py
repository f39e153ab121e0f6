"""The Lua scripts of the Redis store (``redis.RedisStore``): each write and
each read that must see several keys at one instant is one script, so a
record and its indexes never disagree, whichever instance wrote them. The
keys they name are listed in ``redis``'s docstring."""

from __future__ import annotations

# The counter and the epoch as a mark or a change needs them. A store
# without a counter is new (its mark sets it to 0 with the epoch), or lost
# it: evicted under a maxmemory policy of allkeys-*, or written by a version
# whose mark set the epoch alone. Counting from 1 again under the same epoch
# would repeat the positions cursors hold and the versions clients hold, so
# the counter goes on from the highest position left (0 if none is) in a
# new epoch, and every cursor from before is answered 410 Cursor expired.
# SET is refused past maxmemory, as INCR is.
KEPT_ORDER = """
local function kept_order(counter, epoch_key, sets, epoch, new_epoch)
  if redis.call('EXISTS', counter) == 0 then
    local top = 0
    for _, set in ipairs(sets) do
      local last = redis.call('ZRANGE', set, -1, -1, 'WITHSCORES')
      if last[2] then top = math.max(top, tonumber(last[2])) end
    end
    redis.call('SET', counter, string.format('%d', top))
    epoch = nil
  end
  if not epoch then
    epoch = new_epoch
    redis.call('SET', epoch_key, epoch)
  end
  return epoch
end
"""

# KEYS: the record, updated, status, changes, counts, the counter, the epoch,
# the tombstones, buried, expired.
# ARGV: job id, record text, status text, "last written", a new epoch
# (``KEPT_ORDER``'s), the prefix of the status sets, the mode ('put',
# 'absent': only if the job does not exist, 'at': only at version ARGV[8]),
# the expected version, the channel, the prefix of the time sets. Returns
# the job's new version, or 0 when the condition did not hold. The position
# is published on the channel inside the script: a subscriber hears of
# exactly the writes that happened. Its first write is one Redis refuses
# past maxmemory (SET or INCR): the others would be let through after a
# first one, and a full Redis would take the write whole, or none of it.
# Counts and status sets are only moved for a job already in the change
# order: one of the previous layout, not yet indexed, was never counted. A
# tombstone of the id is dropped: the job is alive again.
WRITE_SCRIPT = (
    KEPT_ORDER
    + """
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
epoch = kept_order(KEYS[6], KEYS[7], {KEYS[4], KEYS[9]}, epoch, ARGV[5])
local position = redis.call('INCR', KEYS[6])
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
redis.call('SET', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], id)
redis.call('HSET', KEYS[3], id, ARGV[3])
redis.call('ZADD', KEYS[4], position, id)
redis.call('ZADD', ARGV[6] .. redis.sha1hex(ARGV[3]), position, id)
redis.call('ZADD', ARGV[10] .. redis.sha1hex(ARGV[3]), ARGV[4], id)
redis.call('HINCRBY', KEYS[5], ARGV[3], 1)
redis.call('PUBLISH', ARGV[9], position)
return epoch .. '-' .. string.format('%d', position)
"""
)

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

# KEYS: the epoch, the counter, changes, buried; ARGV: a new epoch, set
# with the counter if the store has none (``KEPT_ORDER``: an empty store's
# mark already names the life its writes will have).
# Returns epoch, head and the server's run id, which changes with every start
# of a server: a failover to a replica that had not seen the last writes
# cannot repeat a mark. Empty where INFO is refused (an ACL, a renamed
# command): the mark is then epoch and head alone.
MARK_SCRIPT = (
    KEPT_ORDER
    + """
local epoch = kept_order(KEYS[2], KEYS[1], {KEYS[3], KEYS[4]},
  redis.call('GET', KEYS[1]), ARGV[1])
local info = redis.pcall('INFO', 'server')
local server = type(info) == 'string' and string.match(info, 'run_id:(%x+)') or ''
return {epoch, redis.call('GET', KEYS[2]) or '0', server}
"""
)

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
# the status sets, the prefix of the time sets, the channel, expired_at, a
# new epoch (``KEPT_ORDER``'s), then job id and version, alternately. Each
# job still at its version is removed with every trace (record, indexes,
# its count) and leaves a tombstone at the next position; one PUBLISH of the
# last position tells subscribers. Returns id, status and position of each
# tombstone, in order.
EXPIRE_SCRIPT = (
    KEPT_ORDER
    + """
local epoch = redis.call('GET', KEYS[6])
if not epoch then return {} end
-- The versions were read in this epoch: in a new one none is current.
if kept_order(KEYS[5], KEYS[6], {KEYS[3], KEYS[8]}, epoch, ARGV[6]) ~= epoch then
  return {}
end
local out = {}
local position = nil
for i = 7, #ARGV, 2 do
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
)

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
