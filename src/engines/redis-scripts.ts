/**
 * The Redis engine's server-side steps, as Lua scripts: each runs atomically in Redis, so a
 * topic's offset, its history entry and its fan-out leave in one step and every node sees one
 * order (the order Redis ran the scripts in). Keys (prefix `p`, topic `t`):
 *
 *   p:m:t     hash   epoch, offset, limit, ttl (the latest publish's history policy)
 *   p:s:t     stream history: entry id `<offset>-0`, fields t (ms), b (0/1), o (origin),
 *                    e (except, "" for none), p (payload)
 *   p:p:t     hash   presence: clientId -> JSON [owner node id, info JSON]
 *   p:c:t     channel fan-out of messages and presence changes
 *   p:held:n  set    JSON [topic, clientId] of the members node n holds
 *   p:node:n  string node n is alive (expires unless refreshed)
 *   p:nodes   zset   node id -> when its presence expires (Redis time, ms)
 *
 * A frame on a channel is one kind byte, a JSON header, "\n", then the payload bytes:
 *   M[epoch, offset, binary, origin, except]\n<payload>      a message
 *   J[clientId, infoJson]\n                                  a join
 *   L[clientId, infoJson]\n                                  a leave
 *
 * Times: ARGV `now` in ms from the engine's clock when it has one, else Redis's own TIME, so
 * every node ages history on the same clock.
 */

const NOW = `
local function clock(given)
  if given ~= '' then return tonumber(given) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
`;

/**
 * Drops what the policy no longer allows: beyond the last `limit`, or `ttl` ms old (oldest
 * first, so expired entries are a prefix). Bounded per call; reads check ages themselves.
 */
const TRIM = `
local function trim(stream, limit, ttl, now)
  if limit >= 0 then redis.call('XTRIM', stream, 'MAXLEN', limit) end
  if ttl >= 0 then
    for _ = 1, 10 do
      local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', 100)
      if #oldest == 0 then return end
      local dropped = 0
      for _, entry in ipairs(oldest) do
        local fields = entry[2]
        local at = 0
        for i = 1, #fields, 2 do if fields[i] == 't' then at = tonumber(fields[i + 1]) end end
        if now - at >= ttl then
          redis.call('XDEL', stream, entry[1])
          dropped = dropped + 1
        else
          return
        end
      end
      if dropped < 100 then return end
    end
  end
end
`;

/** The stream's epoch, made on first use (HSETNX keeps one epoch however many race). */
const EPOCH = `
local function epochOf(meta, candidate)
  redis.call('HSETNX', meta, 'epoch', candidate)
  return redis.call('HGET', meta, 'epoch')
end
`;

/**
 * KEYS: meta, stream. ARGV: epoch candidate, limit (-1: none), ttl (-1: none), now, channel,
 * origin, except, binary (0/1), payload. Returns {epoch, offset}.
 */
export const PUBLISH = `${NOW}${TRIM}${EPOCH}
local meta, stream = KEYS[1], KEYS[2]
local epoch = epochOf(meta, ARGV[1])
local offset = redis.call('HINCRBY', meta, 'offset', 1)
local limit, ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('HSET', meta, 'limit', ARGV[2], 'ttl', ARGV[3])
if limit < 0 and ttl < 0 then
  -- Keeping older messages without this one would leave a gap in the history.
  redis.call('DEL', stream)
else
  local now = clock(ARGV[4])
  redis.call('XADD', stream, offset .. '-0', 't', now, 'b', ARGV[8], 'o', ARGV[6], 'e', ARGV[7], 'p', ARGV[9])
  trim(stream, limit, ttl, now)
end
local header = cjson.encode({epoch, offset, ARGV[8] == '1', ARGV[6], ARGV[7]})
redis.call('PUBLISH', ARGV[5], 'M' .. header .. '\\n' .. ARGV[9])
return {epoch, offset}
`;

/** KEYS: meta, stream. ARGV: epoch candidate, now. Returns {epoch, offset}. */
export const POSITION = `${NOW}${TRIM}${EPOCH}
local meta, stream = KEYS[1], KEYS[2]
local epoch = epochOf(meta, ARGV[1])
local offset = tonumber(redis.call('HGET', meta, 'offset') or '0')
local limit = tonumber(redis.call('HGET', meta, 'limit') or '-1')
local ttl = tonumber(redis.call('HGET', meta, 'ttl') or '-1')
if ttl >= 0 then trim(stream, -1, ttl, clock(ARGV[2])) end
return {epoch, offset}
`;

/**
 * KEYS: meta, stream. ARGV: epoch candidate, now, since epoch, since offset (or "kept": every
 * entry history keeps). Returns {epoch, offset, status, entries}: status "ok" (entries after
 * `since`), "epoch-changed" or "trimmed". Entries are XRANGE's [id, fields].
 */
export const RECOVER = `${NOW}${TRIM}${EPOCH}
local meta, stream = KEYS[1], KEYS[2]
local epoch = epochOf(meta, ARGV[1])
local offset = tonumber(redis.call('HGET', meta, 'offset') or '0')
local ttl = tonumber(redis.call('HGET', meta, 'ttl') or '-1')
local now = clock(ARGV[2])
if ttl >= 0 then trim(stream, -1, ttl, now) end
if ARGV[4] == 'kept' then
  -- Everything history keeps, oldest first (a node that met a new epoch mid-stream).
  local kept = redis.call('XRANGE', stream, '-', '+')
  if ttl >= 0 then
    local fresh = {}
    for _, entry in ipairs(kept) do
      local fields, young = entry[2], true
      for i = 1, #fields, 2 do
        if fields[i] == 't' and now - tonumber(fields[i + 1]) >= ttl then young = false end
      end
      if young then fresh[#fresh + 1] = entry end
    end
    kept = fresh
  end
  return {epoch, offset, 'ok', kept}
end
local since = tonumber(ARGV[4])
if ARGV[3] ~= epoch or since == nil or since < 0 or since > offset or since ~= math.floor(since) then
  return {epoch, offset, 'epoch-changed', {}}
end
if since == offset then return {epoch, offset, 'ok', {}} end
local entries = redis.call('XRANGE', stream, (since + 1) .. '-0', '+')
if #entries == 0 or entries[1][1] ~= (since + 1) .. '-0' then
  return {epoch, offset, 'trimmed', {}}
end
if ttl >= 0 then
  local fields = entries[1][2]
  for i = 1, #fields, 2 do
    if fields[i] == 't' and now - tonumber(fields[i + 1]) >= ttl then
      return {epoch, offset, 'trimmed', {}}
    end
  end
end
return {epoch, offset, 'ok', entries}
`;

/**
 * KEYS: presence, held set of the joining node. ARGV: topic, clientId, node id, info JSON,
 * channel, held-set prefix. The member now belongs to this node; its old node lets go of it.
 */
export const JOIN = `
local presence, held = KEYS[1], KEYS[2]
local topic, clientId, node, info = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local entry = cjson.encode({topic, clientId})
local previous = redis.call('HGET', presence, clientId)
if previous then
  local owner = cjson.decode(previous)[1]
  if owner ~= node then redis.call('SREM', ARGV[6] .. owner, entry) end
end
redis.call('HSET', presence, clientId, cjson.encode({node, info}))
redis.call('SADD', held, entry)
redis.call('PUBLISH', ARGV[5], 'J' .. cjson.encode({clientId, info}) .. '\\n')
return 1
`;

/**
 * KEYS: presence, held set of the leaving node. ARGV: topic, clientId, node id, channel.
 * Only the node that holds the member removes it (a late leave from its old node is a no-op).
 */
export const LEAVE = `
local presence, held = KEYS[1], KEYS[2]
local topic, clientId, node = ARGV[1], ARGV[2], ARGV[3]
local current = redis.call('HGET', presence, clientId)
if not current then return 0 end
local record = cjson.decode(current)
if record[1] ~= node then return 0 end
redis.call('HDEL', presence, clientId)
redis.call('SREM', held, cjson.encode({topic, clientId}))
redis.call('PUBLISH', ARGV[4], 'L' .. cjson.encode({clientId, record[2]}) .. '\\n')
return 1
`;

/**
 * Removes every member node ARGV[2] holds, with leave frames, and forgets the node.
 * KEYS: none (the keys follow from the held set). ARGV: prefix, node id.
 */
export const RELEASE = `
local prefix, node = ARGV[1], ARGV[2]
local held = prefix .. ':held:' .. node
local removed = 0
for _, entry in ipairs(redis.call('SMEMBERS', held)) do
  local parts = cjson.decode(entry)
  local topic, clientId = parts[1], parts[2]
  local presence = prefix .. ':p:' .. topic
  local current = redis.call('HGET', presence, clientId)
  if current then
    local record = cjson.decode(current)
    if record[1] == node then
      redis.call('HDEL', presence, clientId)
      redis.call('PUBLISH', prefix .. ':c:' .. topic, 'L' .. cjson.encode({clientId, record[2]}) .. '\\n')
      removed = removed + 1
    end
  end
end
redis.call('DEL', held, prefix .. ':node:' .. node)
redis.call('ZREM', prefix .. ':nodes', node)
return removed
`;

/**
 * Claims or refreshes a node's liveness. ARGV: prefix, node id, ttl ms, claim (1: fail if the
 * id is taken). Returns 1, or 0 when claiming an id another live node has.
 */
export const HEARTBEAT = `${NOW}
local prefix, node, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local key = prefix .. ':node:' .. node
if ARGV[4] == '1' then
  if not redis.call('SET', key, '1', 'NX', 'PX', ttl) then return 0 end
else
  redis.call('SET', key, '1', 'PX', ttl)
end
redis.call('ZADD', prefix .. ':nodes', clock('') + ttl, node)
return 1
`;

/** Node ids whose liveness expired (Redis time). ARGV: prefix, at most how many. */
export const EXPIRED_NODES = `${NOW}
return redis.call('ZRANGEBYSCORE', ARGV[1] .. ':nodes', '-inf', clock(''), 'LIMIT', 0, tonumber(ARGV[2]))
`;
